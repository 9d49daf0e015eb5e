"""The harmonisation section: site effects, site predictability and the biology kept, before and
after, with the empirical-Bayes priors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from sitekit.reports import figures as F
from sitekit.reports.html import Section, Verdict
from sitekit.reports.sections._common import ALPHA, keyword_build
from sitekit.robustness.sites import covariate_effects, site_effects, site_predictability

__all__ = ["ID", "TITLE", "build", "harmonization_section", "covariate_associations",
           "MAX_PREDICTABILITY_FEATURES", "BIOLOGY_LOSS"]

#: The section id (HTML anchor, JSON key) and title.
ID = "harmonization"
TITLE = "Harmonisation"
#: Above this many features, site predictability runs on principal components.
MAX_PREDICTABILITY_FEATURES = 200
#: Share of a covariate's associated features whose loss turns the verdict into a warning.
BIOLOGY_LOSS = 0.25


def _pca_frames(before: pd.DataFrame, after: pd.DataFrame, sites: np.ndarray):
    """The first two principal components of the standardised features before, and the same
    projection of the features after (empty cells at the feature mean)."""
    b = before.to_numpy(dtype=float)
    a = after.to_numpy(dtype=float)
    mu = np.nanmean(b, axis=0)
    sd = np.nanstd(b, axis=0)
    sd[~np.isfinite(sd) | (sd == 0)] = 1.0
    zb = np.where(np.isfinite(b), (b - mu) / sd, 0.0)
    za = np.where(np.isfinite(a), (a - mu) / sd, 0.0)
    pca = PCA(n_components=2).fit(zb)
    out = []
    for z in (zb, za):
        pcs = pca.transform(z)
        out.append(pd.DataFrame({"pc1": pcs[:, 0], "pc2": pcs[:, 1], "site": sites}))
    return out[0], out[1], pca.explained_variance_ratio_


def covariate_associations(before: pd.DataFrame, after: pd.DataFrame,
                           covariates: pd.DataFrame) -> pd.DataFrame:
    """How many features are associated with each covariate, before and after harmonisation.

    Counts the features with ``q < 0.05`` in :func:`sitekit.robustness.covariate_effects`
    (Spearman for numeric covariates, Kruskal-Wallis for categories, Benjamini-Hochberg FDR)
    of each table.

    Parameters
    ----------
    before, after : DataFrame of shape (n_samples, n_features)
    covariates : DataFrame of shape (n_samples, n_covariates)

    Returns
    -------
    DataFrame
        ``covariate, test, n_before, n_after, median_effect_before, median_effect_after``
        (effect: ``|rho|`` or epsilon squared).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untestable features are NaN, counted as not associated
        eff_b = covariate_effects(before, covariates)
        eff_a = covariate_effects(after, covariates)
    rows = []
    for name in covariates.columns:
        b = eff_b[eff_b["covariate"] == str(name)]
        a = eff_a[eff_a["covariate"] == str(name)]
        rows.append({"covariate": str(name), "test": b["test"].iloc[0] if len(b) else "",
                     "n_before": int((b["q_value"] < ALPHA).sum()),
                     "n_after": int((a["q_value"] < ALPHA).sum()),
                     "median_effect_before": float(np.nanmedian(b["effect"])) if b["effect"].notna().any() else np.nan,
                     "median_effect_after": float(np.nanmedian(a["effect"])) if a["effect"].notna().any() else np.nan})
    return pd.DataFrame(rows, columns=["covariate", "test", "n_before", "n_after",
                                       "median_effect_before", "median_effect_after"])


def _biology_lost(kept: pd.DataFrame | None) -> list[str]:
    """Covariates that lost more than :data:`BIOLOGY_LOSS` of their associated features (and at
    least two of them) through harmonisation."""
    if kept is None or not len(kept):
        return []
    lost = kept[(kept["n_before"] - kept["n_after"] >= 2)
                & (kept["n_after"] < (1.0 - BIOLOGY_LOSS) * kept["n_before"])]
    return [f"{r.covariate} {r.n_before} -> {r.n_after}" for r in lost.itertuples()]


def harmonization_section(before: pd.DataFrame, after: pd.DataFrame, sites, *,
                          covariates: pd.DataFrame | list | None = None,
                          priors: pd.DataFrame | None = None, gamma_hat=None, delta_hat=None,
                          params: dict | None = None, n_permutations: int = 0,
                          random_state: int = 0, n_boxplots: int = 3) -> Section:
    """The harmonisation section: site effects, site predictability and biology kept, before/after.

    Empty cells are allowed (ComBat handles them): every per-feature test leaves them out.  The
    verdict is PASS when fewer features carry a site effect after harmonisation, the site is no
    longer predictable and no covariate lost more than :data:`BIOLOGY_LOSS` of its associated
    features; otherwise WARN, naming the cause.

    Parameters
    ----------
    before, after : DataFrame of shape (n_samples, n_features)
        Numeric features before and after harmonisation (same rows, same columns).
    sites : array-like of shape (n_samples,)
    covariates : DataFrame or list of str, default=None
        The covariates kept by the harmoniser: a DataFrame (same rows) also gives the
        "biology kept" table; a list only names them.
    priors : DataFrame, default=None
        ComBat's ``priors_`` (one row per site: ``site, gamma_bar, tau2, ...``).
    gamma_hat : array-like of shape (n_sites, n_features), default=None
        ComBat's ``gamma_hat_`` (rows in the order of ``priors``); with ``priors`` it gives
        the empirical-Bayes prior plots.
    delta_hat : array-like of shape (n_sites, n_features), default=None
        ComBat's ``delta_hat_``; with ``a_prior``/``b_prior`` in ``priors`` it gives the
        scale-prior plots.
    params : dict, default=None
        The harmoniser's parameters (shown).
    n_permutations : int, default=0
        Permutations of the site-predictability p-value (0: AUC only, fast).
    random_state : int, default=0
        Seeds the site-predictability folds and the principal components.
    n_boxplots : int, default=3
        Per-site boxplots of this many of the most site-affected features.

    Returns
    -------
    Section
        ``results``: ``n_features``, ``sites``, ``covariates``, ``params``, ``site_effects``
        (share before/after), ``site_predictability``, ``most_affected``,
        ``covariate_associations``, ``priors``, ``summary``.
    """
    sites = np.asarray(sites).astype(str)
    sec = Section(ID, TITLE,
                  intro="Feature distributions per site before and after ComBat: a good "
                        "harmonisation removes the site signal and keeps the biology.")
    cols = [c for c in before.columns if c in after.columns]
    before = before[cols].astype(float)
    after = after[cols].astype(float)
    levels, counts = np.unique(sites, return_counts=True)
    info = pd.DataFrame({"site": levels, "n_samples": counts})
    sec.add_text("Sites and covariates", "heading")
    sec.add_table(info, "Samples per site.")
    cov_names = [] if covariates is None else [
        str(c) for c in (covariates.columns if isinstance(covariates, pd.DataFrame) else covariates)]
    sec.add_text(f"{len(cols)} features harmonised; covariates kept: "
                 f"{', '.join(cov_names) if cov_names else 'none'}.")
    if params:
        sec.add_table(pd.DataFrame({"parameter": list(params), "value": [str(v) for v in params.values()]}),
                      "Harmoniser parameters.")
    results: dict = {"n_features": len(cols), "sites": info, "covariates": cov_names,
                     "params": params or {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eff_b = site_effects(before, sites)
        eff_a = site_effects(after, sites)
    share_b = float(np.mean(eff_b["q_value"] < ALPHA))
    share_a = float(np.mean(eff_a["q_value"] < ALPHA))
    share = pd.DataFrame({"stage": ["before", "after"], "share": [share_b, share_a],
                          "n_significant": [int((eff_b["q_value"] < ALPHA).sum()),
                                            int((eff_a["q_value"] < ALPHA).sum())],
                          "n_features": [len(cols), len(cols)]})
    results["site_effects"] = share
    sec.add_text("Site effects", "heading")
    sec.add_figure(F.plot_site_effect_share(share),
                   "Share of features whose distribution differs between sites (Kruskal-Wallis, "
                   f"Benjamini-Hochberg q < {ALPHA:g}); lower after harmonisation is better.")
    pred = []
    stages = [("before", before), ("after", after)]
    if len(cols) > MAX_PREDICTABILITY_FEATURES:
        # many features: predict the site from the leading principal components (same
        # projection before and after), which keeps the check fast and well-posed
        k = min(50, len(before) - 1)
        mu, sd = before.mean(), before.std().replace(0, 1).fillna(1)
        pca = PCA(n_components=k, random_state=random_state).fit(((before - mu) / sd).fillna(0))
        stages = [(st, pd.DataFrame(pca.transform(((X - mu) / sd).fillna(0)))) for st, X in stages]
        sec.add_text(f"Site predictability uses the first {k} principal components of the "
                     f"{len(cols)} standardised features.", "note")
    for stage, X in stages:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = site_predictability(X.fillna(X.mean()), sites, cv=min(5, int(counts.min())),
                                        n_permutations=n_permutations, random_state=random_state)
            pred.append({"stage": stage, "auc": r.auc, "p_value": r.p_value, "leakage": r.leakage})
        except Exception as exc:  # noqa: BLE001 - shown in the report, never fatal
            sec.add_text(f"Site predictability ({stage}) not computed: {exc}", "warning")
    pred_df = pd.DataFrame(pred)
    if len(pred_df) == 2:
        results["site_predictability"] = pred_df
        sec.add_figure(F.plot_site_predictability(pred_df),
                       "How well a classifier predicts the site from the features (cross-validated "
                       "AUC): 0.5 is chance, at or above the dashed line the features leak the site.")
    pb, pa, evr = _pca_frames(before, after, sites)
    sec.add_figure(F.plot_pca_sites(pb, title="before"),
                   f"First two principal components (of the standardised features before, "
                   f"{100 * evr.sum():.0f} % of variance) coloured by site: separate clouds mean a site effect.",
                   format="png")
    sec.add_figure(F.plot_pca_sites(pa, title="after"),
                   "The same projection after harmonisation: the site clouds should overlap.",
                   format="png")
    top = eff_b.dropna(subset=["epsilon_squared"]).sort_values("epsilon_squared", ascending=False)
    for feat in top["feature"].head(n_boxplots):
        long = pd.concat([
            pd.DataFrame({"site": sites, "value": before[feat].to_numpy(), "stage": "before"}),
            pd.DataFrame({"site": sites, "value": after[feat].to_numpy(), "stage": "after"}),
        ])
        sec.add_figure(F.plot_site_boxplots(long, feature=str(feat)),
                       f"{feat}, one of the most site-affected features: per-site boxes before and "
                       "after; after harmonisation the boxes should line up.")
    results["most_affected"] = top[["feature", "epsilon_squared", "q_value"]].head(10)
    kept = None
    if isinstance(covariates, pd.DataFrame) and covariates.shape[1] and len(covariates) == len(before):
        kept = covariate_associations(before, after, covariates)
        sec.add_text("Biology kept", "heading")
        sec.add_table(kept, "Features associated with each covariate (Spearman for numbers, "
                            f"Kruskal-Wallis for categories; Benjamini-Hochberg q < {ALPHA:g}) before "
                            "and after: ComBat should keep these associations, so the counts should "
                            "stay close.")
        results["covariate_associations"] = kept
    if priors is not None and gamma_hat is not None and len(priors):
        sec.add_text("Empirical-Bayes priors", "heading")
        priors = pd.DataFrame(priors)
        gh = np.asarray(pd.DataFrame(gamma_hat).to_numpy(), dtype=float)
        dh = (None if delta_hat is None
              else np.asarray(pd.DataFrame(delta_hat).to_numpy(), dtype=float))
        for i, row in priors.reset_index(drop=True).iterrows():
            if i >= gh.shape[0] or "tau2" not in row or "gamma_bar" not in row:
                break
            if row["tau2"] is None or not np.isfinite(float(row["tau2"])):
                continue
            ax = F.plot_eb_prior(pd.DataFrame({"gamma_hat": gh[i]}), gamma_bar=float(row["gamma_bar"]),
                                 tau2=float(row["tau2"]), title=f"site {row['site']}: location")
            sec.add_figure(ax, f"Site {row['site']}: per-feature site shifts (bars) and the fitted "
                               "normal prior (line); a good fit supports the EB shrinkage.")
            a, b = row.get("a_prior"), row.get("b_prior")
            if dh is not None and a is not None and b is not None and np.isfinite(float(a)) \
                    and np.isfinite(float(b)) and float(a) > 0 and float(b) > 0 \
                    and not bool(row.get("mean_only", False)):
                ax = F.plot_eb_prior_scale(pd.DataFrame({"delta_hat": dh[i]}), a_prior=float(a),
                                           b_prior=float(b), title=f"site {row['site']}: scale")
                sec.add_figure(ax, f"Site {row['site']}: per-feature site variances (bars) and the "
                                   "fitted inverse-gamma prior (line).")
        results["priors"] = priors
    line = (f"site effect in {100 * share_b:.0f} % of features before, {100 * share_a:.0f} % after")
    if kept is not None and len(kept):
        line += "; covariate associations " + ", ".join(
            f"{r.covariate} {r.n_before} -> {r.n_after}" for r in kept.itertuples())
    if len(pred_df) == 2:
        line += (f"; site predictability AUC {pred_df['auc'].iloc[0]:.2f} -> "
                 f"{pred_df['auc'].iloc[1]:.2f}")
    lost = _biology_lost(kept)
    if lost:
        line += ("; WARNING: harmonisation removed much of the biology of "
                 + ", ".join(lost) + " (associated features); check that the covariates were "
                 "passed to the harmoniser and whether they are confounded with site")
        sec.add_text("Harmonisation removed a large part of the features' association with "
                     + ", ".join(lost) + ". ComBat keeps the covariates it is given; a loss like "
                     "this means the covariate was not passed to it or is confounded with site.",
                     "warning")
    ok = (share_a <= share_b and not lost
          and (len(pred_df) < 2 or not bool(pred_df["leakage"].iloc[1])))
    sec.verdicts.append(Verdict("Harmonisation effect", "PASS" if ok else "WARN", line))
    results["summary"] = line
    sec.results = results
    return sec


build = keyword_build(harmonization_section, "``before``, ``after``, ``sites`` ...")
