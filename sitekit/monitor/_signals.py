"""What is monitored: signals, their in-control reference, and the batch-effect test.

* :class:`Signal` -- one column of the study table and what kind of quantity it is
  (a radiomic feature, a reference-region uptake such as liver SUVmean, a model output,
  a performance measure once labels arrive, a phantom QC value).  The kind decides what
  an alarm suggests.
* :func:`robust_reference` -- the site's own in-control location and scale (median and
  normalised MAD, so that a few outlying reference studies do not set the limits).
* :func:`batch_effect_test` -- harmonisation staleness: a site's ComBat location/scale
  re-estimated on a window of new studies against the fitted model.
* :func:`phantom_history` -- EARL results of ``sitekit earl`` over time as a QC table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats
from sklearn.utils.validation import check_is_fitted

from sitekit._validation import check_option
from sitekit.exceptions import UnknownSiteError, ValidationError
from sitekit.harmonize._design import covariate_matrix

__all__ = [
    "Signal",
    "SIGNAL_KINDS",
    "SUGGESTIONS",
    "robust_reference",
    "batch_effect_test",
    "phantom_history",
]

#: Kinds of signal and the action an alarm on one suggests.
SUGGESTIONS: dict[str, str] = {
    "feature": "check the acquisition/reconstruction protocol; re-run EARL phantom QC; if the "
               "scanner changed, adapt ComBat (ComBat.adapt)",
    "reference_region": "recalibrate: run the calibration QC (cylinder, dose calibrator "
                        "cross-calibration)",
    "model_output": "re-validate the model on recent studies of this site",
    "performance": "re-validate the model: labelled studies show a performance change",
    "phantom_rc": "re-run EARL accreditation (sitekit earl check) and review the reconstruction",
    "phantom_calibration": "recalibrate the scanner (calibration QC outside its usual range)",
    "harmonization": "the site's batch effect changed: adapt ComBat on the new window "
                     "(ComBat.adapt under a new site label) and re-validate the model",
}
SIGNAL_KINDS = tuple(k for k in SUGGESTIONS if k != "harmonization")
TRANSFORMS = (None, "log", "logit")
_KIND_BY_PREFIX = (("rc_", "phantom_rc"), ("calibration_ratio", "phantom_calibration"))

MAD_TO_SD = 1.4826
HUBER_C = 1.345


@dataclass(frozen=True)
class Signal:
    """One monitored column and what kind of quantity it is.

    Parameters
    ----------
    column : str
        Column of the study table.
    kind : {"feature", "reference_region", "model_output", "performance", "phantom_rc", \
"phantom_calibration"}, default="feature"
        Decides the suggestion attached to an alarm.
    transform : {None, "log", "logit"}, default=None
        Applied before charting, so that skewed in-control values (volumes, texture
        features: ``"log"``; scores and fractions in (0, 1): ``"logit"``) become roughly
        normal, as the threshold calibration assumes.

    Examples
    --------
    >>> from sitekit.monitor import Signal
    >>> Signal("liver_suvmean", kind="reference_region").kind
    'reference_region'
    """

    column: str
    kind: str = "feature"
    transform: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise ValidationError(f"A signal needs a column name. Got {self.column!r} instead.")
        check_option(self.kind, SIGNAL_KINDS, name="kind", owner="Signal")
        check_option(self.transform, TRANSFORMS, name="transform", owner="Signal")

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The transformed values (NaN stays NaN); out-of-domain values are an error."""
        x = np.asarray(values, dtype=float)
        if self.transform is None:
            return x
        obs = x[np.isfinite(x)]
        if self.transform == "log":
            if (obs <= 0).any():
                raise ValidationError(f"Signal {self.column!r} has values <= 0; its 'log' "
                                      "transform needs positive values.")
            return np.log(x)
        if ((obs <= 0) | (obs >= 1)).any():
            raise ValidationError(f"Signal {self.column!r} has values outside (0, 1); its "
                                  "'logit' transform needs values strictly between 0 and 1.")
        return special.logit(x)

    @classmethod
    def coerce(cls, value) -> Signal:
        """A :class:`Signal` from itself, a column name, ``"column:kind"`` or
        ``"column:kind:transform"``."""
        if isinstance(value, Signal):
            return value
        if isinstance(value, str):
            if ":" in value:
                col, *rest = value.split(":")
                return cls(col, *rest)
            for prefix, kind in _KIND_BY_PREFIX:
                if value.startswith(prefix):
                    return cls(value, kind)
            return cls(value)
        raise ValidationError(
            f"A signal must be a column name or a Signal. Got {value!r} instead."
        )


def robust_reference(values) -> tuple[float, float, int]:
    """Robust location (Huber M-estimate), scale (normalised MAD) and number of values.

    The location is Huber's M-estimate (tuning constant 1.345, the MAD as scale): 95 %
    as efficient as the mean for normal data, so a short reference period moves it less
    than the median (asymptotic variance ``1.05/n`` against ``1.57/n``), while a few
    outlying reference studies still cannot drag it.

    Parameters
    ----------
    values : array-like of shape (n_samples,)
        Reference values of one site and signal; NaN are ignored.

    Returns
    -------
    location : float
    scale : float
        ``1.4826 * median(|x - median|)`` (the SD for normal data).
    n : int

    Examples
    --------
    >>> from sitekit.monitor import robust_reference
    >>> loc, scale, n = robust_reference([1.0, 2.0, 3.0, 4.0, 100.0])
    >>> round(loc, 2), round(scale, 4), n
    (3.0, 1.4826, 5)
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), 0
    med = float(np.median(x))
    scale = float(MAD_TO_SD * np.median(np.abs(x - med)))
    loc = med
    if scale > 0:
        for _ in range(50):
            r = (x - loc) / scale
            w = np.minimum(1.0, HUBER_C / np.maximum(np.abs(r), 1e-12))
            new = float(np.sum(w * x) / np.sum(w))
            if abs(new - loc) <= 1e-10 * scale:
                loc = new
                break
            loc = new
    return loc, scale, int(x.size)


def batch_effect_test(model, X, *, site, covariates=None, model_site=None) -> dict:
    """Has a site's batch effect changed?  Its ComBat location/scale on new studies.

    The new studies are standardised with the frozen model (grand mean, covariate effects,
    pooled variance): ``Z = (y - alpha - C beta) / sigma``.  Per feature, their mean is
    compared with the site's fitted location ``gamma_hat`` (a z test with variance
    ``delta_hat (1/n_new + 1/n_fit)``) and their variance with ``delta_hat`` (a z test of
    ``log(var / delta_hat)`` with variance ``2/(n-1) + kappa/n`` for both samples, ``kappa``
    the window's excess kurtosis, so heavy-tailed features are not mistaken for a change).  The smallest of the ``2 x n_features``
    two-sided p-values, times their number (Bonferroni, valid under any correlation between
    features), is the p-value of "this site's batch effect changed".

    Parameters
    ----------
    model : sitekit.harmonize.ComBat
        A fitted ComBat model (without ``smooth`` terms) that knows ``model_site``.
    X : DataFrame of shape (n_samples, n_features)
        New studies of one site with the model's feature columns.
    site : str
        The site being tested (for messages).
    covariates : DataFrame, default=None
        The model's covariate columns for these studies (required if it has covariates).
    model_site : str, default=None
        The site label in the model (``site`` by default; after ``ComBat.adapt`` under a new
        label, that label).

    Returns
    -------
    dict
        ``p_value`` (Bonferroni-adjusted, capped at 1), ``statistic`` (``-log10 p_value``),
        ``n``, ``feature`` and ``test`` (``"location"``/``"scale"``) of the smallest p-value,
        ``location_shift`` (mean of ``Z - gamma_hat`` over features) and ``scale_ratio``
        (median of ``var(Z) / delta_hat``).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sitekit.harmonize import ComBat
    >>> from sitekit.monitor import batch_effect_test
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["f1", "f2", "f3"])
    >>> model = ComBat().fit(X, sites=np.repeat(["a", "b"], 40))
    >>> new = pd.DataFrame(rng.normal(1.5, 1.0, size=(30, 3)), columns=["f1", "f2", "f3"])
    >>> batch_effect_test(model, new, site="a")["p_value"] < 1e-3
    True
    """
    arrays = harmonizer_arrays(model)
    sites = list(arrays["sites"])
    label = site if model_site is None else model_site
    if label not in sites:
        raise UnknownSiteError(
            f"Site {label!r} is not in the ComBat model (its sites: {sites}); fit or adapt the "
            "model with that site first."
        )
    i = sites.index(label)
    Y = _feature_block(X, arrays["features"])
    C = _covariates(arrays, covariates, len(Y))
    return _window_test(Y, C, arrays, i)


def harmonizer_arrays(model) -> dict:
    """The parts of a fitted ComBat model the staleness test needs, as plain arrays."""

    check_is_fitted(model, "gamma_star_")
    if getattr(model, "smooth_", None):
        raise ValidationError(
            "The monitor's batch-effect test does not support ComBat-GAM models (smooth=...); "
            "monitor a ComBat fitted without smooth terms."
        )
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValidationError(
            "The ComBat model was fitted without feature names; fit it on a DataFrame so the "
            "monitor can find its features in the study table."
        )
    return {
        "sites": [str(s) for s in model.sites_],
        "features": [str(f) for f in names],
        "grand_mean": np.asarray(model.grand_mean_, float),
        "var_pooled": np.asarray(model.var_pooled_, float),
        "beta": np.asarray(model.beta_, float),
        "gamma_hat": np.asarray(model.gamma_hat_, float),
        "delta_hat": np.asarray(model.delta_hat_, float),
        "n_fit": np.asarray(model.n_per_site_, float),
        "covariate_encoding": model.covariate_encoding_,
    }


def _feature_block(X, features: list[str]) -> np.ndarray:
    missing = [f for f in features if f not in X.columns]
    if missing:
        raise ValidationError(
            f"The ComBat model's feature column(s) {missing[:10]} are not in the study table; "
            "monitor the same features the model was fitted on."
        )
    return X[features].to_numpy(dtype=float)


def _covariates(arrays: dict, covariates, n: int) -> np.ndarray:

    enc = arrays["covariate_encoding"]
    if not enc.get("columns"):
        return np.zeros((n, 0))
    if covariates is None:
        cols = [c["name"] for c in enc["columns"]]
        raise ValidationError(
            f"The ComBat model has covariates {cols}; the study table must contain them."
        )
    return covariate_matrix(covariates, enc, n_samples=n)


def _window_test(Y: np.ndarray, C: np.ndarray, arrays: dict, i: int) -> dict:
    gm, vp = arrays["grand_mean"], arrays["var_pooled"]
    ok_feat = np.isfinite(gm) & (np.nan_to_num(vp) > 0)
    mean = np.nan_to_num(gm) + (C @ arrays["beta"] if C.shape[1] else 0.0)
    Z = (Y - mean) / np.sqrt(np.where(ok_feat, vp, 1.0))
    g_hat, d_hat, n_fit = arrays["gamma_hat"][i], arrays["delta_hat"][i], arrays["n_fit"][i]
    obs = np.isfinite(Z)
    n = obs.sum(axis=0).astype(float)
    use = ok_feat & np.isfinite(g_hat) & np.isfinite(d_hat) & (d_hat > 0) & (n >= 3) & (n_fit >= 3)
    if not use.any():
        return {"p_value": 1.0, "statistic": 0.0, "n": int(n.max(initial=0)), "feature": "",
                "test": "", "location_shift": float("nan"), "scale_ratio": float("nan")}
    Zu = np.where(obs, Z, np.nan)[:, use]
    m = np.nanmean(Zu, axis=0)
    v = np.nanvar(Zu, axis=0, ddof=1)
    nu, nf, g, d = n[use], n_fit[use], g_hat[use], d_hat[use]
    t = (m - g) / np.sqrt(d * (1.0 / nu + 1.0 / nf))
    p_loc = 2.0 * special.ndtr(-np.abs(t))
    ratio = v / d
    # log variance ratio with a kurtosis correction (Box 1953): var(log s^2) ~ 2/(n-1) + kappa/n,
    # kappa the excess kurtosis (estimated on the window, >= 0), so skewed, heavy-tailed
    # features do not look like scale changes
    kappa = np.clip(np.nan_to_num(stats.kurtosis(Zu, axis=0, nan_policy="omit", bias=False)),
                    0.0, None)
    se = np.sqrt(2.0 / (nu - 1) + kappa / nu + 2.0 / (nf - 1) + kappa / nf)
    p_scale = 2.0 * special.ndtr(-np.abs(np.log(np.maximum(ratio, 1e-300)) / se))
    p_all = np.concatenate([p_loc, p_scale])
    j = int(np.argmin(p_all))
    p = float(min(1.0, p_all[j] * p_all.size))
    names = np.asarray(arrays["features"], dtype=object)[use]
    return {
        "p_value": p,
        "statistic": float(-np.log10(max(p, 1e-300))),
        "n": int(nu.max()),
        "feature": str(names[j % names.size]),
        "test": "location" if j < names.size else "scale",
        "location_shift": float(np.mean(m - g)),
        "scale_ratio": float(np.median(ratio)),
    }


def phantom_history(checks: pd.DataFrame, calibration: pd.DataFrame | None = None, *,
                    time_col: str = "time") -> pd.DataFrame:
    """EARL phantom results over time as one QC row per site and scan date.

    Parameters
    ----------
    checks : DataFrame
        Stacked results of :func:`sitekit.harmonize.earl.check` (``site, sphere_mm, metric,
        rc``) with a ``time_col`` column saying when each phantom was scanned.
    calibration : DataFrame, default=None
        Stacked :func:`sitekit.harmonize.earl.calibration_qc` rows (``site, ratio``) with
        ``time_col``.
    time_col : str, default="time"

    Returns
    -------
    DataFrame
        ``site``, ``time_col``, then one column ``rc_<metric>_<sphere>mm`` per metric and
        sphere (metric lower-case), and ``calibration_ratio`` when ``calibration`` is given;
        sorted by site and time.  Feed it to a :class:`SiteMonitor` with ``chart="westgard"``
        (or a CUSUM); such columns get the phantom signal kinds automatically.

    Examples
    --------
    >>> import pandas as pd
    >>> from sitekit.monitor import phantom_history
    >>> chk = pd.DataFrame({"site": ["a", "a"], "time": [1, 2], "sphere_mm": [37, 37],
    ...                     "metric": ["A50", "A50"], "rc": [0.82, 0.80]})
    >>> list(phantom_history(chk).columns)
    ['site', 'time', 'rc_a50_37mm']
    """
    need = ["site", time_col, "sphere_mm", "metric", "rc"]
    missing = [c for c in need if c not in checks.columns]
    if missing:
        raise ValidationError(
            f"The EARL results need the column(s) {missing} (stack 'sitekit earl check' "
            f"results and add the scan date as '{time_col}')."
        )
    df = checks.copy()
    df["_col"] = ("rc_" + df["metric"].astype(str).str.lower() + "_"
                  + df["sphere_mm"].map(lambda v: f"{float(v):g}") + "mm")
    wide = df.pivot_table(index=["site", time_col], columns="_col", values="rc", aggfunc="mean")
    wide.columns.name = None
    wide = wide.reset_index()
    if calibration is not None:
        miss = [c for c in ["site", time_col, "ratio"] if c not in calibration.columns]
        if miss:
            raise ValidationError(f"The calibration QC results need the column(s) {miss}.")
        cal = (calibration.groupby(["site", time_col], as_index=False)["ratio"].mean()
               .rename(columns={"ratio": "calibration_ratio"}))
        wide = wide.merge(cal, on=["site", time_col], how="outer")
    return wide.sort_values(["site", time_col], kind="stable").reset_index(drop=True)
