#!/usr/bin/env Rscript
# Golden outputs of R's sva::ComBat for sitekit's ComBat tests.
#
# Usage (from the repository root):  Rscript tools/make_sva_golden.R
#
# Inputs:  tests/harmonize/golden/data_<name>.csv   (columns: site, covariates, f01..fNN)
#          They are made here once with set.seed() if missing, and then committed.
# Outputs: tests/harmonize/golden/<case>_sva.csv        sva::ComBat exactly as shipped
#          tests/harmonize/golden/<case>_sva_tight.csv  the same with the parametric EB
#                                                         iterated to conv = 1e-12
#          tests/harmonize/golden/nan_sva_meansq.csv    NaN case with the pooled variance
#                                                         as mean of squared residuals
#          tests/harmonize/golden/versions.txt          R and sva versions
#
# Why the two variants:
#  * sva stops its parametric iteration at a relative change of 1e-4 (signed test), so its
#    result is ~1e-5 from the fixed point; "tight" iterates to 1e-12 so that an exact
#    comparison (<= 1e-8 x feature SD) tests the maths, not where two loops stop.
#  * With any NaN in the data, sva switches the pooled variance from
#    mean(residual^2) (denominator N) to rowVars(residual) (denominator N_obs - 1): one
#    missing cell rescales every feature.  sitekit keeps the complete-data definition on the
#    observed cells; "meansq" is sva with that one line changed.
suppressPackageStartupMessages(library(sva))

out_dir <- file.path("tests", "harmonize", "golden")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

make_data <- function(name, sizes, n_feat, seed, covariates = FALSE, nan_frac = 0) {
  path <- file.path(out_dir, paste0("data_", name, ".csv"))
  if (file.exists(path)) return(invisible(path))
  set.seed(seed)
  sites <- LETTERS[seq_along(sizes)]
  site <- rep(sites, sizes)
  n <- length(site)
  mu <- runif(n_feat, 0, 100)
  sd <- runif(n_feat, 0.5, 5)
  loc_mean <- rnorm(length(sizes), 0, 1)
  gam <- sapply(seq_len(n_feat), function(g) rnorm(length(sizes), loc_mean, 0.4))
  del <- sapply(seq_len(n_feat), function(g) 1 / rgamma(length(sizes), shape = 8, rate = 7))
  idx <- match(site, sites)
  df <- data.frame(site = site, stringsAsFactors = FALSE)
  cov_effect <- matrix(0, n, n_feat)
  if (covariates) {
    df$age <- round(runif(n, 20, 80), 1)
    # sex and grade are unbalanced across sites but not confounded with them
    df$sex <- ifelse(runif(n) < 0.3 + 0.1 * idx, "M", "F")
    df$grade <- sample(c("g1", "g2", "g3"), n, replace = TRUE)
    b_age <- rnorm(n_feat, 0, 0.05)
    b_sex <- rnorm(n_feat, 0, 1)
    b_g2 <- rnorm(n_feat, 0, 0.7)
    b_g3 <- rnorm(n_feat, 0, 0.7)
    cov_effect <- outer(df$age - 50, b_age) + outer(df$sex == "M", b_sex) +
      outer(df$grade == "g2", b_g2) + outer(df$grade == "g3", b_g3)
  }
  Y <- matrix(0, n, n_feat)
  for (g in seq_len(n_feat)) {
    eps <- rnorm(n)
    Y[, g] <- mu[g] + sd[g] * (cov_effect[, g] + gam[idx, g] + sqrt(del[idx, g]) * eps)
  }
  if (nan_frac > 0) {
    miss <- matrix(runif(n * n_feat) < nan_frac, n, n_feat)
    Y[miss] <- NA
  }
  colnames(Y) <- sprintf("f%02d", seq_len(n_feat))
  df <- cbind(df, as.data.frame(Y))
  write.csv(df, path, row.names = FALSE, na = "")
  invisible(path)
}

make_data("balanced", c(25, 30, 35), 40, seed = 1)
make_data("small", c(12, 15, 18), 25, seed = 2)
make_data("covariates", c(30, 25, 35), 30, seed = 3, covariates = TRUE)
make_data("unbalanced", c(4, 50, 9, 20), 30, seed = 4)
make_data("nan", c(25, 30, 35), 40, seed = 5, nan_frac = 0.03)

read_data <- function(name) {
  df <- read.csv(file.path(out_dir, paste0("data_", name, ".csv")), stringsAsFactors = FALSE)
  feats <- grep("^f[0-9]+$", names(df), value = TRUE)
  list(df = df, dat = t(as.matrix(df[, feats])), feats = feats)
}

# sva's parametric iteration with a tighter stopping rule (only the default of `conv`).
tight_it_sol <- sva:::it.sol
formals(tight_it_sol)$conv <- 1e-12
orig_it_sol <- sva:::it.sol

# sva::ComBat with the NA-path pooled variance as mean of squared residuals.
meansq_combat <- function() {
  src <- deparse(body(sva::ComBat), width.cutoff = 500L)
  hits <- grep("var.pooled <- rowVars(", src, fixed = TRUE)
  stopifnot(length(hits) == 2)
  src <- gsub("var.pooled <- rowVars(", "var.pooled <- .row_mean_sq(", src, fixed = TRUE)
  f <- sva::ComBat
  body(f) <- parse(text = src)[[1]]
  env <- new.env(parent = asNamespace("sva"))
  env$.row_mean_sq <- function(x, na.rm = TRUE) rowMeans(x^2, na.rm = na.rm)
  environment(f) <- env
  f
}

run_case <- function(case, data, fun = sva::ComBat, tight = FALSE, suffix = "sva", ...) {
  d <- read_data(data)
  assignInNamespace("it.sol", if (tight) tight_it_sol else orig_it_sol, "sva")
  on.exit(assignInNamespace("it.sol", orig_it_sol, "sva"))
  res <- suppressMessages(fun(dat = d$dat, batch = d$df$site, ...))
  out <- as.data.frame(t(res))
  names(out) <- d$feats
  write.csv(out, file.path(out_dir, paste0(case, "_", suffix, ".csv")), row.names = FALSE, na = "")
}

both <- function(case, data, ...) {
  run_case(case, data, suffix = "sva", ...)
  run_case(case, data, tight = TRUE, suffix = "sva_tight", ...)
}

both("parametric", "balanced")
run_case("nonparametric", "small", par.prior = FALSE)
both("mean_only", "balanced", mean.only = TRUE)
both("ref_site", "balanced", ref.batch = "B")
cov_df <- read_data("covariates")$df
both("covariates", "covariates", mod = model.matrix(~ age + sex + grade, data = cov_df))
both("unbalanced", "unbalanced")
both("nan", "nan")
run_case("nan", "nan", fun = meansq_combat(), tight = TRUE, suffix = "sva_meansq")

writeLines(c(R.version.string, paste("sva", as.character(packageVersion("sva")))),
           file.path(out_dir, "versions.txt"))
