#!/usr/bin/env Rscript
# Golden outputs of the reference CovBat R code (Chen et al. 2022) for sitekit's CovBat tests.
#
# Usage (from the repository root):
#   Rscript tools/make_covbat_golden.R <dir> [<commit>]
#
#   <dir>     the R/R folder of a checkout of github.com/andy1764/CovBat_Harmonization
#             (it holds covbat.R, combat.R and utils.R). Their code is *not* part of
#             sitekit: this driver only source()s it from wherever you put it, e.g.
#               git clone https://github.com/andy1764/CovBat_Harmonization /tmp/covbat
#               Rscript tools/make_covbat_golden.R /tmp/covbat/R/R "$(git -C /tmp/covbat rev-parse HEAD)"
#   <commit>  optional: the commit of that checkout, recorded in versions.txt.
#
# Needs R with the matrixStats package (Debian: r-cran-matrixstats, pulled in by r-bioc-sva).
#
# Inputs:  tests/harmonize/golden/covbat/data_<name>.csv  (columns: site, [age, sex], f01..fNN)
#          made here once with set.seed() if missing, then committed: three sites whose
#          features share a factor structure with site-specific loadings, so the sites differ
#          in covariance and not only in location/scale.
# Outputs: tests/harmonize/golden/covbat/<case>_<stop>.csv   covbat()$dat.covbat, samples x
#                                                             features
#          tests/harmonize/golden/covbat/cases.csv           one row per case and stop rule:
#                                                             arguments and the chosen npc
#          tests/harmonize/golden/covbat/versions.txt        R, matrixStats, reference commit
#
# <stop> is "default" (the reference as shipped: its ComBat step stops its parametric EB
# when max(|d gamma| / gamma_old, |d delta| / delta_old) < 1e-4 with the *signed* gamma) or
# "tight" (the same code with that tolerance, the `conv` argument of its it.sol(), set to
# 1e-12, so that the comparison tests the maths and not where two loops stop).
suppressPackageStartupMessages(library(matrixStats))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: Rscript tools/make_covbat_golden.R <CovBat_Harmonization/R/R> [commit]")
ref_dir <- args[[1]]
ref_commit <- if (length(args) >= 2) args[[2]] else "unknown"
for (f in c("utils.R", "combat.R", "covbat.R")) {
  path <- file.path(ref_dir, f)
  if (!file.exists(path)) stop("missing ", path, ": pass the R/R folder of CovBat_Harmonization")
  source(path)
}
stopifnot(exists("covbat"), exists("it.sol"))
shipped_it_sol <- it.sol
tight_it_sol <- shipped_it_sol
formals(tight_it_sol)$conv <- 1e-12

out_dir <- file.path("tests", "harmonize", "golden", "covbat")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

make_data <- function(name, sizes, n_feat, seed, covariates = FALSE) {
  path <- file.path(out_dir, paste0("data_", name, ".csv"))
  if (file.exists(path)) return(invisible(path))
  set.seed(seed)
  sites <- LETTERS[seq_along(sizes)]
  site <- rep(sites, sizes)
  idx <- match(site, sites)
  n <- length(site)
  n_fac <- 3
  mu <- runif(n_feat, 10, 100)
  sd <- runif(n_feat, 0.5, 5)
  shared <- matrix(rnorm(n_feat * n_fac, 0, 0.8), n_feat, n_fac)
  Y <- matrix(0, n, n_feat)
  df <- data.frame(site = site, stringsAsFactors = FALSE)
  cov_effect <- matrix(0, n, n_feat)
  if (covariates) {
    df$age <- round(runif(n, 20, 80), 1)
    df$sex <- ifelse(runif(n) < 0.3 + 0.15 * idx, "M", "F")
    cov_effect <- outer(df$age - 50, rnorm(n_feat, 0, 0.03)) +
      outer(df$sex == "M", rnorm(n_feat, 0, 0.8))
  }
  for (i in seq_along(sizes)) {
    rows <- which(idx == i)
    # site-specific loadings: the covariance differs between sites
    load <- shared + matrix(rnorm(n_feat * n_fac, 0, 0.6), n_feat, n_fac)
    fac <- matrix(rnorm(length(rows) * n_fac), length(rows), n_fac)
    noise <- matrix(rnorm(length(rows) * n_feat), length(rows), n_feat)
    loc <- rnorm(n_feat, rnorm(1, 0, 0.8), 0.4)
    scl <- sqrt(1 / rgamma(n_feat, shape = 8, rate = 7))
    eps <- fac %*% t(load) + noise
    Y[rows, ] <- sweep(sweep(eps, 2, scl, "*"), 2, loc, "+")
  }
  Y <- sweep(sweep(Y + cov_effect, 2, sd, "*"), 2, mu, "+")
  colnames(Y) <- sprintf("f%02d", seq_len(n_feat))
  df <- cbind(df, as.data.frame(Y))
  write.csv(df, path, row.names = FALSE)
  invisible(path)
}

make_data("plain", c(40, 55, 35), 20, seed = 11)
make_data("covariates", c(45, 38, 50), 16, seed = 12, covariates = TRUE)

read_data <- function(name) {
  df <- read.csv(file.path(out_dir, paste0("data_", name, ".csv")), stringsAsFactors = FALSE)
  feats <- grep("^f[0-9]+$", names(df), value = TRUE)
  list(df = df, dat = t(as.matrix(df[, feats])), feats = feats)
}

cases <- list()
run_case <- function(case, data, percent.var = 0.95, n.pc = NULL, std.var = TRUE,
                     covariates = FALSE) {
  d <- read_data(data)
  mod <- if (covariates) model.matrix(~ age + sex, data = d$df) else NULL
  for (stop_rule in c("default", "tight")) {
    it.sol <<- if (stop_rule == "tight") tight_it_sol else shipped_it_sol
    res <- covbat(d$dat, d$df$site, mod = mod, percent.var = percent.var, n.pc = n.pc,
                  std.var = std.var)
    out <- as.data.frame(t(res$dat.covbat))
    names(out) <- d$feats
    write.csv(out, file.path(out_dir, paste0(case, "_", stop_rule, ".csv")), row.names = FALSE)
    cases[[length(cases) + 1]] <<- data.frame(
      case = case, stop = stop_rule, data = data, covariates = covariates,
      percent_var = percent.var, n_pc = if (is.null(n.pc)) NA else n.pc,
      std_var = std.var, npc = res$npc, stringsAsFactors = FALSE
    )
  }
  it.sol <<- shipped_it_sol
}

# the reference defaults (percent.var = 0.95, std.var = TRUE), other variance fractions,
# fixed PC counts, the unscaled PCA (std.var = FALSE), with and without covariates.
# (n.pc = 1 cannot be run: the reference's score ComBat fails on a single score row with
# "non-conformable arguments".)
run_case("defaults", "plain")
run_case("var50", "plain", percent.var = 0.5)
run_case("var80", "plain", percent.var = 0.8)
run_case("npc2", "plain", n.pc = 2)
run_case("npc4", "plain", n.pc = 4)
run_case("npc12", "plain", n.pc = 12)
run_case("unscaled", "plain", std.var = FALSE)
run_case("cov_defaults", "covariates", covariates = TRUE)
run_case("cov_var70", "covariates", percent.var = 0.7, covariates = TRUE)
run_case("cov_npc3", "covariates", n.pc = 3, covariates = TRUE)
run_case("cov_unscaled", "covariates", std.var = FALSE, covariates = TRUE)

write.csv(do.call(rbind, cases), file.path(out_dir, "cases.csv"), row.names = FALSE, na = "")
writeLines(c(R.version.string,
             paste("matrixStats", as.character(packageVersion("matrixStats"))),
             paste("CovBat_Harmonization", ref_commit)),
           file.path(out_dir, "versions.txt"))
