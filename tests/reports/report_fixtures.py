"""Small precomputed result folders, laid out as the sitekit commands write them."""

from __future__ import annotations

import json
from math import erf, exp, pi, sqrt

import numpy as np
import pandas as pd

EARL1 = {  # sphere_mm: (A50 min, A50 max, MAX min, MAX max), the EARL1 bands
    37: (0.76, 0.89, 0.95, 1.16), 28: (0.72, 0.85, 0.91, 1.13), 22: (0.63, 0.78, 0.83, 1.09),
    17: (0.57, 0.73, 0.73, 1.01), 13: (0.44, 0.60, 0.59, 0.85), 10: (0.27, 0.43, 0.34, 0.57),
}
SUBJECT_IDS = ["SUBJ-0007", "SUBJ-0013"]


def rc_max(diameter_mm: float, fwhm_mm: float) -> float:
    """Analytic centre recovery of a uniform sphere blurred by a Gaussian of ``fwhm_mm``."""
    r, s = diameter_mm / 2, fwhm_mm / 2.3548
    return erf(r / (sqrt(2) * s)) - sqrt(2 / pi) * (r / s) * exp(-(r**2) / (2 * s**2))


def write_earl(d, *, fwhm_by_site=None):
    """check.csv / calibration.json / curves.csv; site_B (5 mm) fails EARL1, site_C (8.3 mm) passes."""
    d.mkdir(parents=True, exist_ok=True)
    fwhm_by_site = fwhm_by_site or {"site_B": 5.0, "site_C": 8.3}
    rows, curves, cal = [], [], {}
    for site, fwhm in fwhm_by_site.items():
        for sphere, (a_lo, a_hi, m_lo, m_hi) in EARL1.items():
            rmax = rc_max(sphere, fwhm)
            compliant = fwhm >= 7.5  # near the band centre (as after the harmonising filter)
            for metric, rc, lo, hi in (
                ("rc_max", (m_lo + m_hi) / 2 if compliant else rmax, m_lo, m_hi),
                ("rc_a50", (a_lo + a_hi) / 2 if compliant else 0.8 * rmax, a_lo, a_hi),
            ):
                margin = min(rc - lo, hi - rc)
                rows.append(dict(site=site, standard="EARL1", sphere_mm=sphere, metric=metric, rc=rc,
                                 lower=lo, upper=hi, passed=margin >= 0, margin=margin))
            for f in np.arange(0, 10.5, 1.0):
                eff = sqrt(fwhm**2 + f**2)
                rc = rc_max(sphere, eff)
                curves.append(dict(site=site, standard="EARL1", fwhm_mm=f, sphere_mm=sphere,
                                   metric="rc_max", rc=rc, lower=m_lo, upper=m_hi,
                                   in_band=m_lo <= rc <= m_hi, verified=True))
        chosen = sqrt(max(8.3**2 - fwhm**2, 0.0))
        cal[site] = {"standard": "EARL1", "chosen_fwhm_mm": chosen, "smallest_fwhm_mm": chosen - 1,
                     "centre_fwhm_mm": chosen, "note": None}
    pd.DataFrame(rows).to_csv(d / "check.csv", index=False)
    from matplotlib.image import imsave

    for site in fwhm_by_site:  # the sphere-localisation preview `earl check` writes
        imsave(d / f"spheres_{site}.png", np.random.default_rng(0).random((40, 50)), cmap="gray")
    pd.DataFrame(curves).to_csv(d / "curves.csv", index=False)
    (d / "calibration.json").write_text(json.dumps(
        {"format": "sitekit-earl-calibration", "version": 1, "standard": "EARL1", "sites": cal}))
    return d


def write_stability(d, *, perturbation="noise", seed=0):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    feats = [f"original_{c}_F{i}" for c in ("firstorder", "glcm", "shape") for i in range(6)]
    icc = np.clip(rng.beta(5, 1, size=len(feats)), 0, 1)
    st = pd.DataFrame({"feature": feats, "icc": icc, "ci_low": icc - 0.05, "ci_high": np.minimum(icc + 0.05, 1),
                       "robust": icc >= 0.9})
    st.to_csv(d / "stability.csv", index=False)
    (d / "robust_features.txt").write_text("\n".join(st.loc[st["robust"], "feature"]) + "\n")
    (d / "summary.json").write_text(json.dumps({"perturbation": perturbation, "n": 3, "threshold": 0.9}))
    return d


def write_suite(d, *, passed=True, harmonize="combat"):
    """The files of `sitekit robustness run` (results.json, checks/loso/stress/... CSVs)."""
    d.mkdir(parents=True, exist_ok=True)
    checks = [
        {"name": "worst_site_auc", "value": 0.71, "op": "min", "threshold": 0.6, "passed": True,
         "description": "leave-one-site-out ROC AUC of the worst site", "details": {"site": "site_B"}},
        {"name": "site_predictability", "value": 0.55, "op": "max", "threshold": 0.625, "passed": True,
         "description": "site AUC after harmonisation", "details": {}},
        {"name": "median_adversarial_distance", "value": 0.8 if passed else 0.1, "op": "min",
         "threshold": 0.25, "passed": passed, "description": "median L2 flip distance", "details": {}},
    ]
    res = {"schema": "sitekit.robustness.suite/1", "checks": checks,
           "failed": [] if passed else ["median_adversarial_distance"],
           "verdict": "pass" if passed else "fail", "model": {"harmonize": harmonize},
           "summary": {"scoring": "roc_auc"}}
    (d / "results.json").write_text(json.dumps(res))
    rows = []
    for i, site in enumerate(["site_A", "site_B", "site_C", "(pooled)"]):
        v = 0.65 + 0.05 * i
        for metric in ("roc_auc", "brier"):
            rows.append(dict(site=site, n=60, metric=metric, value=v, ci_low=v - 0.1, ci_high=v + 0.08,
                             worst=i == 0))
    pd.DataFrame(rows).to_csv(d / "loso.csv", index=False)
    st = []
    for pert, sevs in (("noise", (0.1, 0.25, 0.5, 1.0)), ("calibration", (0.9, 0.95, 1.05, 1.1))):
        for sev in sevs:
            s = 0.8 - 0.1 * abs(sev - (0 if pert == "noise" else 1))
            st.append(dict(perturbation=pert, severity=sev, target_site=None, n_repeats=5, score_mean=s,
                           score_std=0.01, ci_low=s - 0.03, ci_high=s + 0.03, baseline=0.8,
                           score_drop=0.8 - s, worst=False))
    for site in ("site_A", "site_B"):
        st.append(dict(perturbation="site_shift", severity=None, target_site=site, n_repeats=1,
                       score_mean=0.77, score_std=0.0, ci_low=None, ci_high=None, baseline=0.8,
                       score_drop=0.03, worst=site == "site_B"))
    pd.DataFrame(st).to_csv(d / "stress.csv", index=False)
    pd.DataFrame({"auc": [0.99, 0.45], "p_value": [0.05, 1.0], "leakage": [True, False],
                  "space": ["raw", "harmonized"]}).to_csv(d / "site_predictability.csv", index=False)
    pd.DataFrame({"site": ["site_A"] * 3 + ["site_B"] * 3, "bin": [0, 5, 9] * 2,
                  "mean_predicted": [0.05, 0.55, 0.92] * 2, "observed": [0.1, 0.5, 0.8, 0.0, 0.7, 1.0],
                  "n": 5}).to_csv(d / "calibration_curve.csv", index=False)
    rng = np.random.default_rng(1)
    pd.DataFrame({"row": np.arange(40), "subject_id": [f"SUBJ-{i:04d}" for i in range(40)],
                  "distance": rng.gamma(2.0, 0.4, size=40), "flipped": True, "norm": "l2",
                  "method": "exact", "site": "site_A"}).to_csv(d / "adversarial.csv", index=False)
    return d


def write_extract(d):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"subject_id": ["SUBJ-0001", "SUBJ-0002", "SUBJ-0003"], "site": ["site_A", "site_A", "site_B"],
                       "sitekit_version": "0.1", "pyradiomics_version": "3.1.4", "params_hash": "abc123",
                       "original_firstorder_Mean": rng.normal(size=3), "original_glcm_Contrast": rng.normal(size=3)})
    df.to_parquet(d / "features.parquet", index=False)
    pd.DataFrame({"subject_id": SUBJECT_IDS, "stage": ["check", "extract"],
                  "reason": ["empty mask", "geometry mismatch"]}).to_csv(d / "errors.csv", index=False)
    return d


def write_harmonize(d, *, empty_cells: int = 0):
    """`sitekit harmonize run` on a 12-feature table (harmonized.csv, model.npz, diagnostics.json);
    ``empty_cells`` cells of each of the first four features are left empty."""
    from sitekit.cli import main
    from sitekit.datasets import make_feature_table

    d.mkdir(parents=True, exist_ok=True)
    df = make_feature_table(random_state=0)
    feats = [c for c in df.columns if c.startswith("original_")][:12]
    table = df[["subject_id", "site", "age", "sex", *feats]].copy()
    rng = np.random.default_rng(5)
    for c in feats[:4] if empty_cells else []:
        table.loc[rng.choice(len(table), empty_cells, replace=False), c] = np.nan
    table.to_csv(d.parent / "features_input.csv", index=False)
    code = main(["harmonize", "run", str(d.parent / "features_input.csv"), "--site-col", "site",
                 "--covariates", "age,sex", "--out", str(d / "harmonized.csv")])
    assert code == 0
    return d
