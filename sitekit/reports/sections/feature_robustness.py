"""The feature-robustness section: ICC distribution and heatmap, robust features per class."""

from __future__ import annotations

import pandas as pd

from sitekit.reports import figures as F
from sitekit.reports.html import Section, Verdict
from sitekit.reports.sections._common import keyword_build

__all__ = ["ID", "TITLE", "build", "stability_section", "describe_perturbation"]

#: The section id (HTML anchor, JSON key) and title.
ID = "feature_robustness"
TITLE = "Feature robustness under image perturbations"


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
    sec = Section(ID, TITLE,
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


build = keyword_build(stability_section, "``stability``, ``threshold``, ``robust``, ``summary``")
