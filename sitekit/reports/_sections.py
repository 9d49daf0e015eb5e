"""Section builders: results data (tidy tables) -> :class:`Section` with figures and verdicts.

Each builder takes the plain results of one part of sitekit (as read by
:mod:`sitekit.reports._results`), computes the few summary statistics a reader needs
(using the analysis functions of :mod:`sitekit.robustness`), draws the figures with
:mod:`sitekit.reports.figures` and returns a :class:`~sitekit.reports.html.Section`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from sitekit.reports import figures as F
from sitekit.reports.html import FigureBlock, Section, Verdict

__all__ = [
    "ID_COLUMNS",
    "drop_ids",
    "earl_section",
    "harmonization_section",
    "extraction_section",
    "stability_section",
    "suite_section",
    "describe_perturbation",
]

#: Columns that identify subjects (or point at their files); hidden unless ``show_ids``.
ID_COLUMNS = frozenset({
    "subject_id", "subject", "case_id", "case", "patient_id", "patient", "id", "image", "mask",
    "image_path", "mask_path", "image_hash", "mask_hash", "scan_id", "row_id", "sample_id", "row",
})

ALPHA = 0.05
#: Above this many features, site predictability runs on principal components.
MAX_PREDICTABILITY_FEATURES = 200


def drop_ids(df: pd.DataFrame, show_ids: bool) -> pd.DataFrame:
    """``df`` without subject-identifying columns unless ``show_ids``."""
    if show_ids or df is None:
        return df
    keep = [c for c in df.columns if str(c).lower() not in ID_COLUMNS]
    return df.loc[:, keep]


def _fmt(v, digits=2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if not np.isfinite(f) else f"{f:.{digits}f}"


# --------------------------------------------------------------------------------- EARL
def earl_section(check: pd.DataFrame | None, *, calibration: dict | None = None,
                 curves: pd.DataFrame | None = None, measurements: pd.DataFrame | None = None,
                 previews: dict[str, bytes] | None = None, notes: list[str] | None = None) -> Section:
    """The EARL section: RC curves with bands, pass/fail per site, calibration curves.

    Parameters
    ----------
    check : DataFrame or None
        ``site, standard, sphere_mm, metric, rc, lower, upper, passed, margin``.
    calibration : dict, default=None
        ``{site: {"standard", "chosen_fwhm_mm", "smallest_fwhm_mm", "centre_fwhm_mm", "note"}}``.
    curves : DataFrame, default=None
        RC against FWHM: ``site, fwhm_mm, sphere_mm, metric, rc``.
    measurements : DataFrame, default=None
        Per-sphere measurements; shown as a table.
    previews : dict of str to bytes, default=None
        ``{label: PNG bytes}`` of the sphere-localisation previews (``spheres_<site>.png``).
    notes : list of str, default=None
        Plain notes (e.g. "no Gaussian filter reaches EARL2 RCmax").
    """
    sec = Section("earl", "EARL phantom accreditation",
                  intro="Recovery coefficients (RC) of the NEMA/IEC phantom spheres against the "
                        "EARL bands; a site passes a standard when every sphere and metric is in band.")
    results: dict = {}
    if check is not None and len(check):
        chk = check.copy()
        if "site" not in chk.columns:
            chk["site"] = "scan"
        if "standard" not in chk.columns:
            chk["standard"] = "EARL"
        chk["passed"] = chk["passed"].astype(bool)
        if "verified" not in chk.columns:
            chk["verified"] = True
        chk["verified"] = chk["verified"].astype(bool)
        # limits marked unverified (EARL2 PEAK) are shown but do not decide the verdict
        chk["_counts"] = chk["verified"]
        chk["_fail"] = ~chk["passed"] & chk["verified"]
        chk["_fail_unverified"] = ~chk["passed"] & ~chk["verified"]
        chk["_margin"] = chk["margin"].where(chk["verified"]) if "margin" in chk.columns else np.nan
        keys = ["run", "site", "standard"] if "run" in chk.columns else ["site", "standard"]
        per_site = (
            chk.groupby(keys, sort=True)
            .agg(n_checks=("_counts", "sum"), n_failed=("_fail", "sum"),
                 n_unverified_failed=("_fail_unverified", "sum"), worst_margin=("_margin", "min"))
            .reset_index()
        )
        per_site["passed"] = per_site["n_failed"] == 0
        chk = chk.drop(columns=["_counts", "_fail", "_fail_unverified", "_margin"])
        per_site["verdict"] = np.where(per_site["passed"], "PASS", "FAIL")
        for _, r in per_site.iterrows():
            detail = (f"{r['n_failed']} of {r['n_checks']} sphere/metric checks out of band"
                      if not r["passed"] else f"all {r['n_checks']} sphere/metric checks in band")
            if "margin" in chk.columns:
                detail += f"; worst margin {_fmt(r['worst_margin'], 3)}"
            if r["n_unverified_failed"]:
                detail += (f"; {r['n_unverified_failed']} more outside limits marked unverified "
                           "(not counted)")
            run = f" ({r['run']})" if "run" in r else ""
            sec.verdicts.append(Verdict(f"EARL {r['standard']} site {r['site']}{run}",
                                        "PASS" if r["passed"] else "FAIL", detail))
        sec.add_text("Pass/fail per site", "heading")
        sec.add_table(per_site[[*keys, "verdict", "n_failed", "n_checks", "n_unverified_failed",
                                *(["worst_margin"] if "margin" in chk.columns else [])]],
                      "One row per site and standard; the margin is the distance to the nearest "
                      "band limit (negative = outside); limits marked unverified (EARL2 PEAK) "
                      "are reported but do not decide the verdict.")
        failed = chk[~chk["passed"]]
        if len(failed):
            cols = [c for c in ["run", "site", "standard", "sphere_mm", "metric", "rc", "lower",
                                "upper", "margin", "verified"] if c in failed.columns]
            sec.add_table(failed[cols], "Checks out of band.", max_rows=40)
        results["per_site"] = per_site
        results["check"] = chk
        sec.add_text("Recovery against sphere size", "heading")
        fig_keys = (["run"] if "run" in chk.columns else []) + ["standard", "metric"]
        for key, g in chk.groupby(fig_keys, sort=True):
            name = " ".join(str(k) for k in key)
            ax = F.plot_rc_curve(g.drop(columns=["run"], errors="ignore"), title=name)
            sec.add_figure(ax, f"{name}: RC per sphere and site (lines) against the shaded "
                               "acceptance band; red crosses are spheres out of band.")
    if previews:
        import base64

        sec.add_text("Sphere localisation", "heading")
        for label, png in previews.items():
            sec.blocks.append(FigureBlock(
                "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                f"{label}: the sphere plane with the spheres found outlined in green; each "
                "sphere should sit inside its outline.", f"sphere localisation {label}"))
    if measurements is not None and len(measurements):
        results["measurements"] = measurements
    if calibration:
        sec.add_text("Harmonising post-filter (calibration)", "heading")
        rows = []
        for site, entry in sorted(calibration.items()):
            rows.append({
                "site": site,
                "standard": entry.get("standard", ""),
                "chosen_fwhm_mm": entry.get("chosen_fwhm_mm"),
                "smallest_fwhm_mm": entry.get("smallest_fwhm_mm"),
                "centre_fwhm_mm": entry.get("centre_fwhm_mm"),
                "note": entry.get("note") or "",
            })
            if entry.get("chosen_fwhm_mm") is None:
                sec.verdicts.append(Verdict(f"EARL calibration site {site}", "WARN",
                                            entry.get("note") or "no Gaussian filter reaches the standard"))
        cal = pd.DataFrame(rows)
        sec.add_table(cal, "Gaussian post-filter per site: the chosen FWHM (mm) is applied to "
                           "the site's patient images; empty when no filter reaches the standard.")
        results["calibration"] = cal
    if curves is not None and len(curves):
        cv = curves.copy()
        if "site" not in cv.columns:
            cv["site"] = "scan"
        for site, g in cv.groupby("site", sort=True):
            metrics = list(pd.unique(g["metric"])) if "metric" in g.columns else [None]
            metric = "rc_a50" if "rc_a50" in metrics else ("A50" if "A50" in metrics else metrics[0])
            sub = g if metric is None else g[g["metric"] == metric]
            if "standard" in sub.columns:
                sub = sub[sub["standard"] == sub["standard"].iloc[0]]
            chosen = (calibration or {}).get(site, {}).get("chosen_fwhm_mm")
            compliant = None
            if "in_band" in g.columns:
                std_rows = g if "standard" not in g.columns else g[g["standard"] == sub["standard"].iloc[0]]
                if "verified" in std_rows.columns:
                    std_rows = std_rows[std_rows["verified"].astype(bool)]
                ok = std_rows.groupby("fwhm_mm")["in_band"].apply(lambda v: bool(v.astype(bool).all()))
                if ok.any():
                    compliant = (float(ok[ok].index.min()), float(ok[ok].index.max()))
            ax = F.plot_rc_vs_fwhm(sub, chosen_fwhm=chosen, compliant=compliant,
                                   title=f"{site}" + (f" {metric}" if metric else ""))
            sec.add_figure(ax, f"{site}: {metric or 'RC'} of each sphere as the post-filter FWHM "
                               "grows; dashed: the chosen filter"
                               + ("; shaded: filters with every sphere and metric in band."
                                  if compliant else "."))
        results["curves_sites"] = sorted(cv["site"].astype(str).unique())
    for n in notes or []:
        sec.add_text(n, "note")
    sec.results = results
    return sec


# ------------------------------------------------------------------------ harmonisation
def _pca_frames(before: pd.DataFrame, after: pd.DataFrame, sites: np.ndarray):
    from sklearn.decomposition import PCA

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

    Numeric covariates with more than 5 distinct values: Spearman correlation per feature
    (vectorised over features); others: Kruskal-Wallis across the levels
    (:func:`sitekit.robustness.site_effects` with the covariate as the grouping).  Both with
    Benjamini-Hochberg FDR over the features.

    Returns
    -------
    DataFrame
        ``covariate, test, n_before, n_after, median_effect_before, median_effect_after``
        (effect: ``|rho|`` or epsilon squared).
    """
    from scipy import stats

    from sitekit.robustness.sites import site_effects

    rows = []
    for c in covariates.columns:
        v = covariates[c]
        numeric = pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v)
        counts, effects = [], []
        for X in (before, after):
            if numeric and v.nunique() > 5:
                test = "Spearman"
                a = X.to_numpy(dtype=float)
                a = np.where(np.isfinite(a), a, np.nanmean(a, axis=0))
                ra = stats.rankdata(a, axis=0)
                rv = stats.rankdata(v.to_numpy(dtype=float))
                ra = (ra - ra.mean(0)) / np.where(ra.std(0) > 0, ra.std(0), 1)
                rv = (rv - rv.mean()) / (rv.std() or 1)
                rho = np.clip(ra.T @ rv / len(rv), -1, 1)
                n = len(rv)
                t = rho * np.sqrt((n - 2) / np.maximum(1 - rho**2, 1e-12))
                p = 2 * stats.t.sf(np.abs(t), n - 2)
                q = stats.false_discovery_control(p, method="bh")
                eff = np.abs(rho)
            else:
                test = "Kruskal-Wallis"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    e = site_effects(X, v.astype(str).to_numpy())
                q, eff = e["q_value"].to_numpy(), e["epsilon_squared"].to_numpy()
            counts.append(int(np.sum(q < ALPHA)))
            effects.append(float(np.nanmedian(eff)))
        rows.append({"covariate": str(c), "test": test, "n_before": counts[0], "n_after": counts[1],
                     "median_effect_before": effects[0], "median_effect_after": effects[1]})
    return pd.DataFrame(rows)


def harmonization_section(before: pd.DataFrame, after: pd.DataFrame, sites, *,
                          covariates: pd.DataFrame | list | None = None,
                          priors: pd.DataFrame | None = None, gamma_hat=None, delta_hat=None,
                          params: dict | None = None, n_permutations: int = 0,
                          random_state: int = 0, n_boxplots: int = 3) -> Section:
    """The harmonisation section: site effects and site predictability before/after.

    Parameters
    ----------
    before, after : DataFrame of shape (n_samples, n_features)
        Numeric features before and after harmonisation (same rows, same columns).
    sites : array-like of shape (n_samples,)
    covariates : DataFrame or list of str, default=None
        The covariates kept by the harmoniser (only their names are shown).
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
    """
    from sitekit.robustness.sites import site_effects, site_predictability

    sites = np.asarray(sites).astype(str)
    sec = Section("harmonisation", "Harmonisation",
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
        from sklearn.decomposition import PCA

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
    ok = share_a <= share_b and (len(pred_df) < 2 or not bool(pred_df["leakage"].iloc[1]))
    sec.verdicts.append(Verdict("Harmonisation effect", "PASS" if ok else "WARN", line))
    results["summary"] = line
    sec.results = results
    return sec


# ------------------------------------------------------------------------- extraction
def extraction_section(features: pd.DataFrame | None, errors: pd.DataFrame | None, *,
                       show_ids: bool = False) -> Section:
    """The extraction section: cases per site, feature count, per-case errors.

    Parameters
    ----------
    features : DataFrame
        One row per case (``site``, provenance and feature columns).
    errors : DataFrame
        ``subject_id, stage, reason`` (ids hidden unless ``show_ids``).
    """
    sec = Section("extraction", "Feature extraction",
                  intro="Radiomics features extracted with pyradiomics, one row per case.")
    results: dict = {}
    if features is not None:
        prov_cols = [c for c in features.columns if str(c).startswith(("sitekit_", "pyradiomics_",
                                                                         "params_", "provenance"))]
        feat_cols = [c for c in features.columns if str(c).startswith(("original_", "wavelet", "log-",
                                                                         "square", "exponential",
                                                                         "gradient", "lbp"))]
        per_site = (features.groupby("site").size().rename("n_cases").reset_index()
                    if "site" in features.columns else pd.DataFrame())
        if len(per_site) and "earl_fwhm_mm" in features.columns:
            fw = features.groupby("site")["earl_fwhm_mm"].first().reset_index()
            per_site = per_site.merge(fw, on="site", how="left")
        sec.add_text(f"{len(features)} cases extracted, {len(feat_cols)} features per case.")
        if len(per_site):
            sec.add_table(per_site, "Cases extracted per site.")
        prov = {}
        for c in prov_cols:
            if str(c).lower() in ID_COLUMNS or c.endswith("_hash") and "param" not in c:
                continue
            vals = pd.unique(features[c].astype(str))
            prov[c] = ", ".join(vals[:3]) + (" ..." if len(vals) > 3 else "")
        if prov:
            sec.add_table(pd.DataFrame({"column": list(prov), "value": list(prov.values())}),
                          "Provenance recorded with every row.")
        results.update({"n_cases": len(features), "n_features": len(feat_cols),
                        "per_site": per_site, "provenance": prov})
    if errors is not None and len(errors):
        shown = drop_ids(errors, show_ids)
        sec.add_table(shown, f"{len(errors)} case(s) could not be extracted.")
        sec.verdicts.append(Verdict("Extraction", "WARN", f"{len(errors)} case(s) failed; see the errors table"))
        results["errors"] = shown
    else:
        results["errors"] = []
    sec.results = results
    return sec


# ------------------------------------------------------------------- feature stability
def describe_perturbation(p) -> str:
    """A short text for a perturbation configuration (as in ``summary.json``)."""
    if p is None:
        return ""
    if isinstance(p, str):
        return p
    if isinstance(p, dict):
        name = p.get("name", "")
        params = p.get("params") or {}
        if name == "Compose" and isinstance(params.get("transforms"), list):
            return " + ".join(describe_perturbation(t) for t in params["transforms"])
        shown = [f"{k}={v}" for k, v in params.items()
                 if v is not None and k not in ("random_state", "seed")
                 and not isinstance(v, dict)]
        return f"{name}({', '.join(shown)})" if shown else str(name)
    return str(p)


def _feature_class(name: str) -> str:
    parts = str(name).split("_")
    return parts[1] if len(parts) >= 3 else "other"


def stability_section(stability: pd.DataFrame, *, threshold: float = 0.9,
                      robust: list[str] | None = None, summary: dict | None = None) -> Section:
    """The feature-robustness section: ICC distribution, heatmap, robust counts.

    Parameters
    ----------
    stability : DataFrame
        One row per feature (and perturbation): ``feature, icc`` and optionally
        ``perturbation, ci_low, ci_high, robust``.
    threshold : float, default=0.9
    robust : list of str, default=None
        The robust feature list (else from the ``robust`` column or ``icc >= threshold``).
    summary : dict, default=None
        ``{run name: summary.json content}`` of each run; shown as a table.
    """
    sec = Section("feature_robustness", "Feature robustness under image perturbations",
                  intro="Each case was perturbed several times and re-extracted; the ICC says how "
                        f"much of a feature's variance is between cases (robust at ICC >= {threshold:g}).")
    st = stability.copy()
    if "perturbation" not in st.columns:
        st["perturbation"] = "chain"
    if "robust" not in st.columns:
        st["robust"] = st["icc"] >= threshold
    st["robust"] = st["robust"].astype(bool)
    per_pert = (st.groupby("perturbation", sort=True)
                .agg(n_total=("feature", "nunique"), n_robust=("robust", "sum"),
                     median_icc=("icc", "median")).reset_index())
    per_pert["n_robust"] = per_pert["n_robust"].astype(int)
    sec.add_table(per_pert, "Robust features per perturbation (ICC at or above the threshold).")
    sec.add_figure(F.plot_icc_distribution(st, threshold=threshold),
                   "Distribution of the per-feature ICC over all perturbations; features right of "
                   "the dashed line are robust.")
    if st["perturbation"].nunique() >= 1 and st["feature"].nunique() > 1:
        sec.add_figure(F.plot_icc_heatmap(st),
                       "ICC of the least stable features (rows) under each perturbation (columns): "
                       "dark cells are features that perturbation destroys.", format="png")
    st["group"] = st["feature"].map(_feature_class)
    by_class = (st.groupby(["perturbation", "group"]).agg(n_total=("feature", "nunique"),
                                                          n_robust=("robust", "sum")).reset_index())
    if st["perturbation"].nunique() > 1:
        # robust under every perturbation
        all_rob = st.groupby("feature").agg(robust=("robust", "all"), group=("group", "first"))
        counts = all_rob.groupby("group").agg(n_total=("robust", "size"), n_robust=("robust", "sum")).reset_index()
        caption = ("Features per class (grey) and those robust under every perturbation (green).")
    else:
        counts = by_class[["group", "n_total", "n_robust"]]
        caption = "Features per class (grey) and the robust ones (green)."
    sec.add_figure(F.plot_robust_counts(counts), caption)
    n_rob = len(robust) if robust is not None else int(st.groupby("feature")["robust"].all().sum())
    n_feat = st["feature"].nunique()
    sec.verdicts.append(Verdict("Feature robustness", "INFO",
                                f"{n_rob} of {n_feat} features robust (ICC >= {threshold:g})"))
    runs = pd.DataFrame()
    if summary:
        rows = []
        for run, sm in summary.items():
            rows.append({"run": run, "perturbation": describe_perturbation(sm.get("perturbation")),
                         **{k: sm.get(k) for k in ("n", "n_cases", "form", "threshold", "failures",
                                                   "n_robust", "n_features")}})
        runs = pd.DataFrame(rows)
        sec.add_table(runs, "Runs: the perturbation (parameter ranges drawn per copy), copies per "
                            "case (n), cases, ICC form and threshold.")
    sec.results = {"runs": runs, "params": {
                       str(r["run"]): f"{r['perturbation']}; n={r['n']}; {r['form']}"
                       for r in runs.to_dict(orient="records")},
                   "per_perturbation": per_pert, "n_robust": n_rob, "n_features": n_feat,
                   "robust_features": robust if robust is not None else
                   sorted(st.groupby("feature")["robust"].all().loc[lambda s: s].index.tolist())}
    return sec


# ------------------------------------------------------------------------ model suite
def _stress_frame(stress: pd.DataFrame) -> pd.DataFrame:
    st = stress.copy()
    if "score" not in st.columns and "score_mean" in st.columns:
        st["score"] = st["score_mean"]
    return st


def suite_section(checks: pd.DataFrame | None, *, verdict: str | None = None,
                  loso: pd.DataFrame | None = None, stress: pd.DataFrame | None = None,
                  adversarial: pd.DataFrame | None = None,
                  site_predictability: pd.DataFrame | None = None,
                  calibration_curve: pd.DataFrame | None = None,
                  scoring: str | None = None, noise_unit: str = "sd",
                  title: str = "Model robustness suite",
                  section_id: str = "model_robustness", show_ids: bool = False) -> Section:
    """The model-robustness section: the suite's checks and verdict, LOSO, stress, adversarial.

    Parameters
    ----------
    checks : DataFrame
        ``name, value, op, threshold, passed`` (+ ``description``).
    verdict : str, default=None
        ``"pass"``/``"fail"`` (else from the checks).
    loso : DataFrame, default=None
        Per-site metrics: ``site, metric, value, ci_low, ci_high`` and optionally ``model``
        (several models, e.g. with and without harmonisation, side by side).
    stress : DataFrame, default=None
        ``perturbation, severity, score`` or ``score_mean`` (+ ``ci_low, ci_high``,
        ``target_site``, ``score_drop``).
    adversarial : DataFrame, default=None
        ``distance`` (+ ``norm``) per case.
    site_predictability : DataFrame, default=None
        ``auc`` per ``space`` (``raw``/``harmonized``).
    calibration_curve : DataFrame, default=None
        Per-site reliability table: ``site, mean_predicted, observed`` (``n``).
    scoring : str, default=None
        The metric the stress scores are in (y label).
    noise_unit : {"sd", "within"}, default="sd"
        Unit of the noise severities: per-feature SDs or within-subject SDs (from a
        stability table).
    """
    sec = Section(section_id, title,
                  intro="How the model holds up at sites it was not trained on, under noise and "
                        "calibration shifts, and against the smallest decision-flipping changes.")
    results: dict = {}
    if checks is not None and len(checks):
        chk = drop_ids(checks, show_ids)
        chk = chk[[c for c in chk.columns if c != "details"]]
        if verdict is None and "passed" in chk.columns:
            verdict = "pass" if chk["passed"].astype(bool).all() else "fail"
        sec.add_text("Checks", "heading")
        sec.add_table(chk, "The suite's checks against their thresholds (op: min = value must be at "
                           "least the threshold, max = at most).")
        results["checks"] = chk
        name_col = next((c for c in ("name", "check", "id") if c in chk.columns), chk.columns[0])
        if "passed" in chk.columns:
            failed = chk[~chk["passed"].astype(bool)]
            detail = (f"{len(failed)} of {len(chk)} checks failed: "
                      + ", ".join(failed[name_col].astype(str)) if len(failed)
                      else f"all {len(chk)} checks passed")
        else:
            detail = ""
        if verdict is not None:
            st = "PASS" if str(verdict).lower() in {"pass", "passed", "true", "ok"} else "FAIL"
            sec.verdicts.append(Verdict(title, st, detail))
    results["verdict"] = verdict
    if loso is not None and len(loso):
        lo = loso.copy()
        sec.add_text("Leave-one-site-out", "heading")
        metric_col = "metric" if "metric" in lo.columns else None
        metrics = list(pd.unique(lo[metric_col])) if metric_col else [None]
        preferred = [m for m in ("roc_auc", "auc", "balanced_accuracy", "r2") if m in metrics]
        for m in (preferred[:1] or metrics[:1]):
            sub = lo if m is None else lo[lo[metric_col] == m]
            sites_only = sub[sub["site"].astype(str) != "(pooled)"]
            ref = 0.5 if m in ("roc_auc", "auc") else None
            models = "model" in sub.columns and sub["model"].nunique() > 1
            sec.add_figure(F.plot_site_forest(sites_only, reference=ref, title=str(m) if m else None),
                           f"{m or 'metric'} at each held-out site with its bootstrap confidence "
                           "interval" + (", per model" if models else "") + "; a site far left of "
                           "the others is where the model does not transfer."
                           + (" Dotted line: chance." if ref else ""))
        cols = [c for c in ("model", "site", "n", "metric", "value", "ci_low", "ci_high", "worst")
                if c in lo.columns]
        main = lo[lo[metric_col].isin(preferred[:2])] if metric_col and preferred else lo
        sec.add_table(main[cols] if cols else main, "Per-site metrics (all metrics in the JSON).",
                      max_rows=40)
        results["loso"] = lo
    if calibration_curve is not None and len(calibration_curve):
        sec.add_figure(F.plot_calibration_by_site(calibration_curve),
                       "Calibration at each held-out site: predicted probability against the "
                       "observed share of positives per bin; points on the dotted diagonal are "
                       "well calibrated, a site far from it needs recalibration.")
    if site_predictability is not None and len(site_predictability) and "auc" in site_predictability:
        sp = site_predictability.rename(columns={"space": "stage"})
        if "stage" in sp.columns:
            sec.add_figure(F.plot_site_predictability(sp),
                           "Site predictability of the model's input features, raw and harmonised "
                           "(cross-validated AUC; 0.5 = no site signal, dashed = leakage warning).")
            results["site_predictability"] = sp
    if stress is not None and len(stress):
        st = _stress_frame(stress)
        sec.add_text("Stress tests", "heading")
        if "target_site" in st.columns:
            shift = st[st["perturbation"].astype(str) == "site_shift"]
            curves = st[st["perturbation"].astype(str) != "site_shift"]
        else:
            shift, curves = st.iloc[0:0], st
        if scoring and "metric" not in curves.columns:
            curves = curves.assign(metric=scoring)
        for name, g in curves.groupby("perturbation", sort=True):
            unit = {"noise": ("noise SD (within-subject SDs)" if noise_unit == "within"
                              else "noise SD (per-feature SDs)"),
                    "calibration": "calibration factor"}.get(str(name), "severity")
            ax = F.plot_stress_curves(g)
            ax.set_xlabel(unit)
            sec.add_figure(ax, f"{name}: model score as the perturbation grows (x: {unit}; shaded: "
                               "confidence interval over repeats); a steep fall means fragility "
                               "to that shift.")
        if len(shift):
            cols = [c for c in ("target_site", "score", "ci_low", "ci_high", "score_drop", "worst")
                    if c in shift.columns]
            sec.add_table(shift[cols], "Site-shift attack: the test cases mapped onto each site's "
                                       "feature distribution; the worst target is flagged.")
        results["stress"] = st
    if adversarial is not None and len(adversarial):
        adv = drop_ids(adversarial, show_ids)
        sec.add_text("Adversarial distances", "heading")
        sec.add_figure(F.plot_adversarial_distances(adv[[c for c in ("distance", "norm") if c in adv]]),
                       "Smallest change (standardised units) that flips each test case's decision; "
                       "dashed: median. Mass near zero means decisions flip under tiny changes.")
        d = adv["distance"].astype(float)
        d = d[np.isfinite(d)]
        results["adversarial"] = {"n": int(len(adv)), "n_flipped": int(len(d)),
                                  "median": float(np.median(d)) if len(d) else None}
    sec.results = results
    return sec
