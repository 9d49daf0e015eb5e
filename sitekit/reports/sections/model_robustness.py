"""The model-robustness section: the suite's checks, leave-one-site-out, calibration per site,
stress curves and adversarial distances."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sitekit.reports import figures as F
from sitekit.reports.html import Section, Verdict
from sitekit.reports.sections._common import drop_ids, keyword_build

__all__ = ["ID", "TITLE", "build", "suite_section"]

#: The section id (HTML anchor, JSON key) and title.
ID = "model_robustness"
TITLE = "Model robustness suite"


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
                  title: str = TITLE, section_id: str = ID,
                  show_ids: bool = False) -> Section:
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
        Per-site reliability table: ``site, mean_predicted, observed`` (+ ``n``, ``ci_low``,
        ``ci_high``), as :func:`sitekit.robustness.calibration_curve_by_site` returns.
    scoring : str, default=None
        The metric the stress scores are in (y label).
    noise_unit : {"sd", "within"}, default="sd"
        Unit of the noise severities: per-feature SDs or within-subject SDs (from a
        stability table).
    title : str, default="Model robustness suite"
    section_id : str, default="model_robustness"
        Several suites in one report get their own ids.
    show_ids : bool, default=False
        Show subject identifiers.

    Returns
    -------
    Section
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
                       "observed share of positives in equal-count bins, shaded: its 95 % "
                       "interval; a site whose band misses the dotted diagonal needs "
                       "recalibration.")
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
                               "confidence interval over repeats; dashed: unperturbed; the y axis "
                               "spans at least 0.1); a steep fall means fragility to that shift.")
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


build = keyword_build(suite_section, "``checks``, ``loso``, ``stress`` ...")
