"""Stress tests of a fitted model on tabular features, in the style of ``permutation_importance``.

Three kinds of perturbation, each swept over severities:

* :class:`FeatureNoise` -- additive Gaussian noise in standardised units: ``level`` times the
  per-feature SD of X (``unit="sd"``) or the within-subject SD from a test-retest/perturbation
  stability study (``unit="within"``, needs ``stability=``).
* :class:`CalibrationShift` -- a multiplicative calibration error of the scanner (e.g. SUV
  calibration off by +-5-10 %): intensity features that scale linearly with the image values
  (mean, median, percentiles, RMS, SUVmax ...) are multiplied by ``factor``, energies and
  variances by ``factor**2``; shape and texture features are untouched.
* :class:`SiteShift` -- the site-shift attack: every case is mapped onto another site's
  per-feature location and scale (``(x - mu_s) / sd_s * sd_t + mu_t``), for every target
  site ``t``; the worst target site is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.utils.validation import check_is_fitted

from sitekit._typing import RandomState
from sitekit._validation import check_number, check_option, check_random_state
from sitekit.exceptions import ValidationError
from sitekit.robustness._common import (
    as_frame,
    as_sites,
    as_target,
    model_input,
    within_subject_sd,
)
from sitekit.robustness.metrics import default_scoring, get_scorer, greater_is_better

__all__ = [
    "FeatureNoise",
    "CalibrationShift",
    "SiteShift",
    "StressResult",
    "stress_test",
    "parse_perturbations",
    "INTENSITY_LINEAR",
    "INTENSITY_SQUARED",
]

#: pyradiomics first-order features (and SUV summaries) that scale linearly with intensity.
INTENSITY_LINEAR = (
    r"(?i)(firstorder_(Mean|Median|Minimum|Maximum|10Percentile|90Percentile|RootMeanSquared|"
    r"MeanAbsoluteDeviation|RobustMeanAbsoluteDeviation|InterquartileRange|Range)$"
    r"|(^|_)suv_?(max|mean|peak|min)$|(^|_)tlg$)"
)
#: pyradiomics first-order features that scale with the square of intensity.
INTENSITY_SQUARED = r"(?i)firstorder_(Energy|TotalEnergy|Variance)$"


@dataclass(frozen=True)
class FeatureNoise:
    """Additive Gaussian noise of ``level`` x per-feature scale, for each level.

    Parameters
    ----------
    levels : sequence of float, default=(0.1, 0.25, 0.5, 1.0)
        Noise SDs in standardised units.
    unit : {"sd", "within"}, default="sd"
        ``"sd"``: per-feature SD of X; ``"within"``: within-subject SD from ``stability``.
    """

    levels: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    unit: str = "sd"
    name: str = field(default="noise", init=False)


@dataclass(frozen=True)
class CalibrationShift:
    """Multiplicative calibration error of intensity features, for each factor.

    Parameters
    ----------
    factors : sequence of float, default=(0.9, 0.95, 1.05, 1.1)
    columns : str, default=None
        Regex (``re.search``) of columns scaled by ``factor``; default
        :data:`INTENSITY_LINEAR` (pyradiomics first-order intensity names, SUVmax ...).
    squared : str, default=None
        Regex of columns scaled by ``factor**2``; default :data:`INTENSITY_SQUARED`.
    """

    factors: tuple[float, ...] = (0.9, 0.95, 1.05, 1.1)
    columns: str | None = None
    squared: str | None = None
    name: str = field(default="calibration", init=False)


@dataclass(frozen=True)
class SiteShift:
    """Map every case onto each other site's per-feature location and scale.

    Parameters
    ----------
    robust : bool, default=False
        Use median and IQR/1.349 instead of mean and SD.
    """

    robust: bool = False
    name: str = field(default="site_shift", init=False)


_KINDS = {"noise": FeatureNoise, "calibration": CalibrationShift, "site_shift": SiteShift}


def parse_perturbations(spec) -> list:
    """Turn a perturbation spec into perturbation objects.

    Accepts one object or a list of: perturbation objects, kind names (``"noise"``,
    ``"calibration"``, ``"site_shift"``, default settings) or mappings with ``kind`` and the
    dataclass fields (as in a TOML suite: ``{kind = "noise", levels = [0.1, 0.5]}``).
    """
    if isinstance(spec, FeatureNoise | CalibrationShift | SiteShift | str | Mapping):
        spec = [spec]
    out = []
    for item in spec:
        if isinstance(item, FeatureNoise | CalibrationShift | SiteShift):
            out.append(item)
            continue
        if isinstance(item, str):
            check_option(item, tuple(_KINDS), name="perturbations", owner="stress_test")
            out.append(_KINDS[item]())
            continue
        if not isinstance(item, Mapping) or "kind" not in item:
            raise ValidationError(
                f"A perturbation must be an object, a kind name or a mapping with 'kind'. Got {item!r}."
            )
        params = dict(item)
        kind = check_option(params.pop("kind"), tuple(_KINDS), name="kind", owner="perturbation")
        cls = _KINDS[kind]
        allowed = {f for f in cls.__dataclass_fields__ if f != "name"}
        unknown = set(params) - allowed
        if unknown:
            raise ValidationError(
                f"Unknown setting(s) {sorted(unknown)} for perturbation '{kind}'; "
                f"allowed: {sorted(allowed)}."
            )
        for key in ("levels", "factors"):
            if key in params:
                params[key] = tuple(float(v) for v in params[key])
        out.append(cls(**params))
    return out


@dataclass
class StressResult:
    """Result of :func:`stress_test`.

    Attributes
    ----------
    summary : DataFrame
        One row per (perturbation, severity, target_site): ``perturbation``, ``severity``,
        ``target_site`` (site-shift rows), ``n_repeats``, ``score_mean``, ``score_std``,
        ``ci_low``, ``ci_high`` (t interval of the mean over repeats; the value itself for
        deterministic perturbations), ``baseline``, ``score_drop`` (how much worse than the
        baseline: baseline - mean for scores, mean - baseline for losses such as ``brier``),
        ``worst`` (the worst target site of the site-shift attack).
    scores : DataFrame
        Per repeat: ``perturbation``, ``severity``, ``target_site``, ``repeat``, ``score``.
    baseline : float
        Score on the unperturbed X.
    scoring : str
    """

    summary: pd.DataFrame
    scores: pd.DataFrame
    baseline: float
    scoring: str

    def drop_at(self, perturbation: str, severity: float | None = None) -> float:
        """Score drop of ``perturbation`` at ``severity`` (site shift: the worst target)."""
        rows = self.summary[self.summary["perturbation"] == perturbation]
        if severity is not None:
            rows = rows[np.isclose(rows["severity"].astype(float), float(severity))]
        if rows.empty:
            raise ValidationError(
                f"The stress test has no '{perturbation}' rows at severity {severity}; "
                f"available: {sorted(set(zip(self.summary['perturbation'], self.summary['severity'], strict=True)))}."
            )
        return float(rows["score_drop"].max())


def _columns(regex: str, columns: Iterable) -> list:
    try:
        pat = re.compile(regex)
    except re.error as exc:
        raise ValidationError(f"The column pattern {regex!r} is not a valid regex: {exc}.") from exc
    return [c for c in columns if pat.search(str(c))]


def _site_stats(Xf: pd.DataFrame, s: np.ndarray, robust: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    g = Xf.groupby(s, sort=False)
    if robust:
        loc = g.median()
        scale = (g.quantile(0.75) - g.quantile(0.25)) / 1.349
    else:
        loc = g.mean()
        scale = g.std(ddof=1)
    scale = scale.where(scale > 0, np.nan)
    return loc, scale


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    mean = float(np.mean(values))
    if values.size < 2:
        return mean, float("nan"), mean, mean
    sd = float(np.std(values, ddof=1))
    half = stats.t.ppf(0.5 + confidence / 2, values.size - 1) * sd / np.sqrt(values.size)
    return mean, sd, mean - half, mean + half


def stress_test(
    estimator,
    X,
    y,
    *,
    perturbations,
    sites=None,
    scoring: str | Callable | None = None,
    n_repeats: int = 5,
    confidence: float = 0.95,
    stability=None,
    random_state: RandomState = None,
) -> StressResult:
    """Score a fitted model under feature perturbations of increasing severity.

    Parameters
    ----------
    estimator : fitted estimator
    X : DataFrame or array-like of shape (n_samples, n_features)
        Evaluation data (held out from training).
    y : array-like of shape (n_samples,)
    perturbations : perturbation, str, mapping or list of those
        See :func:`parse_perturbations`.
    sites : array-like of shape (n_samples,), default=None
        Needed by :class:`SiteShift`.
    scoring : str or callable, default=None
        A scikit-learn scorer name, a metric of :mod:`sitekit.robustness.metrics` (``brier``,
        ``ece`` ...) or ``scorer(estimator, X, y)``; default
        :func:`~sitekit.robustness.metrics.default_scoring`.
    n_repeats : int, default=5
        Noise draws per level (deterministic perturbations run once).
    confidence : float, default=0.95
        Coverage of the t interval of the mean score over repeats.
    stability : DataFrame, Series or mapping, default=None
        Within-subject scale per feature for ``FeatureNoise(unit="within")``: a Series /
        mapping of within-subject SDs by feature, a table with ``feature`` and ``within_sd``,
        or a stability table with ``feature`` and ``icc`` (then
        ``within_sd = SD(X) * sqrt(1 - ICC)``).
    random_state : None, int or numpy Generator, default=None

    Returns
    -------
    StressResult
        ``.summary`` (tidy, one row per severity), ``.scores`` (per repeat), ``.baseline``.
    """
    check_is_fitted(estimator)
    Xf = as_frame(X)
    n = Xf.shape[0]
    yv = as_target(y, n)
    n_repeats = check_number(n_repeats, name="n_repeats", owner="stress_test", low=1,
                             integer=True)
    check_number(confidence, name="confidence", owner="stress_test", low=0, high=1,
                 low_inclusive=False)
    rng = check_random_state(random_state)
    perts = parse_perturbations(perturbations)
    if not perts:
        raise ValidationError("stress_test needs at least one perturbation.")
    if scoring is None:
        scoring = default_scoring(estimator)
    scorer = get_scorer(scoring, owner="stress_test")
    scoring_name = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "custom")
    raw_scorer = scorer

    def scorer(est, Xp, yy):
        return raw_scorer(est, model_input(est, Xp), yy)

    baseline = float(scorer(estimator, Xf, yv))
    sd = Xf.std(ddof=1).to_numpy(dtype=float)
    records = []

    def record(name, severity, target, rep, score):
        records.append({"perturbation": name, "severity": severity, "target_site": target,
                        "repeat": rep, "score": float(score)})

    for pert in perts:
        if isinstance(pert, FeatureNoise):
            check_option(pert.unit, ("sd", "within"), name="unit", owner="FeatureNoise")
            if pert.unit == "within":
                if stability is None:
                    raise ValidationError(
                        "FeatureNoise(unit='within') needs stability= (within-subject SD or a "
                        "stability table with 'feature' and 'icc')."
                    )
                scale = within_subject_sd(stability, Xf)
            else:
                scale = sd
            for level in pert.levels:
                check_number(level, name="levels", owner="FeatureNoise", low=0)
                for rep in range(n_repeats):
                    noise = rng.standard_normal(Xf.shape) * (level * scale)
                    record("noise", float(level), None, rep, scorer(estimator, Xf + noise, yv))
        elif isinstance(pert, CalibrationShift):
            lin = _columns(pert.columns or INTENSITY_LINEAR, Xf.columns)
            sq = [c for c in _columns(pert.squared or INTENSITY_SQUARED, Xf.columns) if c not in lin]
            if not lin and not sq:
                raise ValidationError(
                    "CalibrationShift found no intensity feature: no column matches "
                    f"{pert.columns or INTENSITY_LINEAR!r}; set 'columns' to a regex of the "
                    "intensity features."
                )
            for factor in pert.factors:
                check_number(factor, name="factors", owner="CalibrationShift", low=0,
                             low_inclusive=False)
                Xp = Xf.copy()
                Xp[lin] = Xp[lin] * factor
                Xp[sq] = Xp[sq] * factor**2
                record("calibration", float(factor), None, 0, scorer(estimator, Xp, yv))
        else:
            if sites is None:
                raise ValidationError("The site-shift attack needs sites= (one label per row).")
            s = as_sites(sites, n)
            loc, scale = _site_stats(Xf, s, pert.robust)
            levels = list(pd.unique(s))
            if len(levels) < 2:
                raise ValidationError(f"The site-shift attack needs at least two sites; got {levels}.")
            for target in levels:
                Xp = Xf.copy()
                for source in levels:
                    if source == target:
                        continue
                    rows = s == source
                    z = (Xf.loc[rows] - loc.loc[source]) / scale.loc[source]
                    Xp.loc[rows] = (z.fillna(0.0) * scale.loc[target].fillna(0.0)
                                    + loc.loc[target]).to_numpy()
                record("site_shift", float("nan"), target, 0, scorer(estimator, Xp, yv))
    scores = pd.DataFrame(records, columns=["perturbation", "severity", "target_site", "repeat",
                                            "score"])
    sign = 1.0 if greater_is_better(scoring) else -1.0  # a drop is positive when worse
    rows = []
    for (name, sev, target), grp in scores.groupby(
            ["perturbation", "severity", "target_site"], sort=False, dropna=False):
        mean, sdv, lo, hi = _t_interval(grp["score"].to_numpy(), confidence)
        rows.append({"perturbation": name, "severity": sev, "target_site": target,
                     "n_repeats": len(grp), "score_mean": mean, "score_std": sdv,
                     "ci_low": lo, "ci_high": hi, "baseline": baseline,
                     "score_drop": sign * (baseline - mean)})
    summary = pd.DataFrame(rows)
    summary["worst"] = False
    shift = summary["perturbation"] == "site_shift"
    if shift.any():
        summary.loc[summary.loc[shift, "score_mean"].idxmin(), "worst"] = True
    return StressResult(summary=summary, scores=scores, baseline=baseline,
                        scoring=str(scoring_name))

