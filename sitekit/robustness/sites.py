"""Generalisation across sites: leave-one-site-out validation, site leakage, site effects.

* :func:`leave_one_site_out` trains on all sites but one and tests on the held-out site, for
  every site in turn, with the harmoniser fitted on the training sites only (ComBat fitted on
  all data leaks the test site into training).  Per-site metrics carry bootstrap confidence
  intervals and the worst site is named.
* :func:`site_predictability` asks how well the site can be predicted from the features
  (cross-validated one-vs-rest AUC with a permutation p-value): ~0.5 means no site signal,
  >= 0.625 is a warning (DOMAIN.md section 3).
* :func:`site_effects` tests every feature for a site effect (Kruskal-Wallis) with
  Benjamini-Hochberg false-discovery-rate control; run it before and after harmonisation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone, is_classifier
from sklearn.metrics import roc_auc_score

from sitekit._typing import RandomState
from sitekit._validation import check_number, check_option, check_random_state
from sitekit.exceptions import DataWarning, ValidationError
from sitekit.robustness._common import (
    as_frame,
    as_sites,
    as_target,
    check_positive_int,
    positive_score,
    seed_from,
)

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "POOLED",
    "SitePredictability",
    "leave_one_site_out",
    "loso_predictions",
    "site_predictability",
    "site_effects",
    "calibration_slope_intercept",
    "expected_calibration_error",
    "calibration_curve_by_site",
]

#: Label of the row that pools the held-out predictions of every site.
POOLED = "(pooled)"

#: Site-predictability AUC from which leakage is flagged (DOMAIN.md section 3).
LEAKAGE_AUC = 0.625

_EPS = 1e-12


# ----------------------------------------------------------------------------- metrics
def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC AUC by the Mann-Whitney rank formula (ties get half credit)."""
    pos = y == 1
    n1 = int(pos.sum())
    n0 = y.shape[0] - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = stats.rankdata(score)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def calibration_slope_intercept(y_true, y_prob, *, max_iter: int = 50) -> tuple[float, float]:
    """Calibration slope and intercept by logistic recalibration.

    The slope ``b`` comes from the fit ``logit P(y=1) = a + b * logit(p)``; the intercept
    (calibration-in-the-large) from ``logit P(y=1) = a + logit(p)`` with the slope fixed at
    1 (an offset), as recommended by Van Calster et al. (2016).  Perfect calibration gives
    slope 1 and intercept 0; a slope below 1 means over-confident predictions.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 outcomes.
    y_prob : array-like of shape (n_samples,)
        Predicted probabilities of class 1 (clipped to ``[1e-6, 1 - 1e-6]``).
    max_iter : int, default=50
        Newton iterations.

    Returns
    -------
    (slope, intercept) : tuple of float
        NaN when only one class is present or the fit does not converge (separation).
    """
    y = np.asarray(y_true, dtype=float)
    x = _logit(np.asarray(y_prob, dtype=float))
    if y.size == 0 or y.min() == y.max():
        return float("nan"), float("nan")
    # slope: Newton-Raphson on (a, b)
    design = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    slope = float("nan")
    for _ in range(max_iter):
        mu = _sigmoid(design @ beta)
        w = mu * (1 - mu)
        hess = design.T @ (design * w[:, None])
        grad = design.T @ (y - mu)
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if not np.all(np.isfinite(beta)) or np.abs(beta).max() > 1e6:
            break
        if np.abs(step).max() < 1e-10:
            slope = float(beta[1])
            break
    # intercept with offset logit(p)
    a = 0.0
    intercept = float("nan")
    for _ in range(max_iter):
        mu = _sigmoid(a + x)
        w = float(np.sum(mu * (1 - mu)))
        if w <= 0:
            break
        step = float(np.sum(y - mu)) / w
        a += step
        if not np.isfinite(a) or abs(a) > 1e6:
            break
        if abs(step) < 1e-10:
            intercept = a
            break
    return slope, intercept


def expected_calibration_error(y_true, y_prob, *, n_bins: int = 10) -> float:
    """Expected calibration error with ``n_bins`` equal-width probability bins.

    ``ECE = sum_b (n_b / n) |mean(y in b) - mean(p in b)|``.
    """
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(y_prob, dtype=float)
    if y.size == 0:
        return float("nan")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    return float(np.sum(np.abs(sum_y - sum_p)) / y.size)


def _m_auc(y, pred, score):
    if score.ndim == 2:
        if len(np.unique(y)) < score.shape[1]:
            return float("nan")
        return float(roc_auc_score(y, score, multi_class="ovr", labels=np.arange(score.shape[1])))
    return _auc(y, score)


def _m_bacc(y, pred, score):
    # mean recall over the classes present in y (scikit-learn's balanced_accuracy_score)
    present = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in present]))


def _m_brier(y, pred, score):
    if score.ndim == 2:
        onehot = np.eye(score.shape[1])[y]
        return float(np.mean(np.sum((score - onehot) ** 2, axis=1)))
    return float(np.mean((score - y) ** 2))


def _m_slope(y, pred, score):
    return calibration_slope_intercept(y, score)[0]


def _m_intercept(y, pred, score):
    return calibration_slope_intercept(y, score)[1]


def _m_ece(y, pred, score):
    return expected_calibration_error(y, score)


def _m_r2(y, pred, score):
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot


def _m_mae(y, pred, score):
    return float(np.mean(np.abs(y - pred)))


def _m_rmse(y, pred, score):
    return float(np.sqrt(np.mean((y - pred) ** 2)))


# name -> (function(y, pred, score), how to find the worst site, binary only)
_METRICS: dict[str, tuple[Callable, str, bool]] = {
    "roc_auc": (_m_auc, "min", False),
    "balanced_accuracy": (_m_bacc, "min", False),
    "brier": (_m_brier, "max", False),
    "calibration_slope": (_m_slope, "from_one", True),
    "calibration_intercept": (_m_intercept, "from_zero", True),
    "ece": (_m_ece, "max", True),
    "r2": (_m_r2, "min", False),
    "mae": (_m_mae, "max", False),
    "rmse": (_m_rmse, "max", False),
}

#: Default metrics for classifiers (binary; multiclass keeps the first three).
CLASSIFICATION_METRICS = (
    "roc_auc",
    "balanced_accuracy",
    "brier",
    "calibration_slope",
    "calibration_intercept",
    "ece",
)
#: Default metrics for regressors.
REGRESSION_METRICS = ("r2", "mae", "rmse")


def _compute(metrics: list[str], y, pred, score) -> list[float]:
    """All requested metrics of one sample (the calibration fit is done once)."""
    cal = None
    out = []
    for name in metrics:
        if name in ("calibration_slope", "calibration_intercept"):
            if cal is None:
                cal = calibration_slope_intercept(y, score)
            out.append(cal[0] if name == "calibration_slope" else cal[1])
        else:
            out.append(_METRICS[name][0](y, pred, score))
    return out


def _calibration_batch(Y: np.ndarray, P: np.ndarray, max_iter: int = 50):
    """Row-wise :func:`calibration_slope_intercept` for (B, m) outcome/probability arrays."""
    x = _logit(P)
    B = Y.shape[0]
    one_class = (Y.min(axis=1) == Y.max(axis=1))
    a = np.zeros(B)
    b = np.zeros(B)
    done = np.zeros(B, dtype=bool)
    failed = one_class.copy()
    for _ in range(max_iter):
        act = ~(done | failed)
        if not act.any():
            break
        mu = _sigmoid(a[act, None] + b[act, None] * x[act])
        w = mu * (1 - mu)
        r = Y[act] - mu
        xa = x[act]
        h00, h01, h11 = w.sum(1), (w * xa).sum(1), (w * xa * xa).sum(1)
        g0, g1 = r.sum(1), (r * xa).sum(1)
        det = h00 * h11 - h01 * h01
        with np.errstate(all="ignore"):
            s0 = (h11 * g0 - h01 * g1) / det
            s1 = (h00 * g1 - h01 * g0) / det
        idx = np.flatnonzero(act)
        a[idx] += s0
        b[idx] += s1
        bad = ~np.isfinite(a[idx]) | ~np.isfinite(b[idx]) | (np.maximum(np.abs(a[idx]),
                                                                          np.abs(b[idx])) > 1e6)
        failed[idx[bad]] = True
        done[idx[~bad & (np.maximum(np.abs(s0), np.abs(s1)) < 1e-10)]] = True
    slope = np.where(done & ~failed, b, np.nan)
    c = np.zeros(B)
    done_c = np.zeros(B, dtype=bool)
    failed_c = one_class.copy()
    for _ in range(max_iter):
        act = ~(done_c | failed_c)
        if not act.any():
            break
        mu = _sigmoid(c[act, None] + x[act])
        w = (mu * (1 - mu)).sum(1)
        with np.errstate(all="ignore"):
            step = (Y[act] - mu).sum(1) / w
        idx = np.flatnonzero(act)
        c[idx] += step
        bad = ~np.isfinite(c[idx]) | (np.abs(c[idx]) > 1e6)
        failed_c[idx[bad]] = True
        done_c[idx[~bad & (np.abs(step) < 1e-10)]] = True
    intercept = np.where(done_c & ~failed_c, c, np.nan)
    return slope, intercept


def _compute_batch(metrics: list[str], Y, PRED, S) -> np.ndarray:
    """Metrics of B resamples at once: (B, m) arrays -> (B, n_metrics); binary or regression."""
    B, m = Y.shape
    out = np.full((B, len(metrics)), np.nan)
    cal = None
    for j, name in enumerate(metrics):
        if name == "roc_auc":
            pos = Y == 1
            n1 = pos.sum(1)
            n0 = m - n1
            ranks = stats.rankdata(S, axis=1)
            with np.errstate(all="ignore"):
                auc = ((ranks * pos).sum(1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
            out[:, j] = np.where((n1 > 0) & (n0 > 0), auc, np.nan)
        elif name == "balanced_accuracy":
            recalls = []
            present = []
            for c in (0, 1):
                is_c = Y == c
                n_c = is_c.sum(1)
                with np.errstate(all="ignore"):
                    recalls.append(np.where(n_c > 0, (is_c & (PRED == c)).sum(1) / n_c, 0.0))
                present.append(n_c > 0)
            out[:, j] = (recalls[0] + recalls[1]) / (present[0].astype(int) + present[1])
        elif name == "brier":
            out[:, j] = np.mean((S - Y) ** 2, axis=1)
        elif name in ("calibration_slope", "calibration_intercept"):
            if cal is None:
                cal = _calibration_batch(Y.astype(float), S)
            out[:, j] = cal[0] if name == "calibration_slope" else cal[1]
        elif name == "ece":
            n_bins = 10
            idx = np.minimum((S * n_bins).astype(int), n_bins - 1) + n_bins * np.arange(B)[:, None]
            sum_y = np.bincount(idx.ravel(), weights=Y.ravel().astype(float), minlength=B * n_bins)
            sum_p = np.bincount(idx.ravel(), weights=S.ravel(), minlength=B * n_bins)
            out[:, j] = np.abs(sum_y - sum_p).reshape(B, n_bins).sum(1) / m
        elif name == "r2":
            ss_tot = ((Y - Y.mean(1, keepdims=True)) ** 2).sum(1)
            with np.errstate(all="ignore"):
                out[:, j] = np.where(ss_tot > 0, 1.0 - ((Y - PRED) ** 2).sum(1) / ss_tot, np.nan)
        elif name == "mae":
            out[:, j] = np.abs(Y - PRED).mean(1)
        elif name == "rmse":
            out[:, j] = np.sqrt(((Y - PRED) ** 2).mean(1))
    return out


def _badness(metric: str, values: pd.Series) -> pd.Series:
    rule = _METRICS[metric][1]
    if rule == "min":
        return -values
    if rule == "max":
        return values
    if rule == "from_one":
        return (values - 1.0).abs()
    return values.abs()


# ------------------------------------------------------------------ leave-one-site-out
def _fit_harmonizer(h, X, sites, covariates):
    kw = {"sites": sites}
    if covariates is not None:
        kw["covariates"] = covariates
    h.fit(X, **kw)
    return h


def _transform(h, X, sites, covariates):
    kw = {"sites": sites}
    if covariates is not None:
        kw["covariates"] = covariates
    out = h.transform(X, **kw)
    if not isinstance(out, pd.DataFrame):
        out = pd.DataFrame(np.asarray(out, dtype=float), index=X.index, columns=X.columns)
    return out


def _standardize_onto(X_new: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Map each feature of ``X_new`` onto the mean/SD of ``reference`` (the fallback)."""
    mu, sd = X_new.mean(), X_new.std(ddof=1)
    sd = sd.where(sd > 0, 1.0).fillna(1.0)
    ref_mu, ref_sd = reference.mean(), reference.std(ddof=1).fillna(0.0)
    return (X_new - mu) / sd * ref_sd + ref_mu


def _harmonize_held_out(h, X_tr_h, X_te, s_te, cov_te, unseen_site):
    use_adapt = unseen_site == "adapt" or (unseen_site == "auto" and hasattr(h, "adapt"))
    if use_adapt:
        if not hasattr(h, "adapt"):
            raise ValidationError(
                f"unseen_site='adapt' needs a harmoniser with an 'adapt' method; "
                f"{type(h).__name__} has none. Use unseen_site='standardize' instead."
            )
        kw = {"sites": s_te}
        if cov_te is not None:
            kw["covariates"] = cov_te
        adapted = h.adapt(X_te, **kw)
        adapted = h if adapted is None else adapted
        return _transform(adapted, X_te, s_te, cov_te)
    if unseen_site == "error":
        raise ValidationError(
            f"The held-out site '{s_te[0]}' is unseen by the harmoniser {type(h).__name__} "
            "fitted on the other sites, and it has no 'adapt' method. Pass "
            "unseen_site='standardize' to map the held-out site onto the training pool's "
            "per-feature mean and SD instead."
        )
    return _standardize_onto(X_te, X_tr_h)


def loso_predictions(
    estimator,
    X,
    y,
    *,
    sites,
    harmonizer=None,
    covariates=None,
    unseen_site: str = "auto",
) -> pd.DataFrame:
    """Held-out predictions of leave-one-site-out cross-validation.

    Parameters
    ----------
    estimator : scikit-learn estimator
        Cloned and fitted once per held-out site.
    X : DataFrame or array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    sites : array-like of shape (n_samples,)
        Site label of every row; each site is held out once.
    harmonizer : transformer with ``fit(X, *, sites, covariates=None)`` and
        ``transform(X, *, sites, covariates=None)``, default=None
        Cloned and fitted on the training sites of each fold only.
    covariates : DataFrame of shape (n_samples, n_covariates), default=None
        Passed to the harmoniser (never to the estimator).
    unseen_site : {"auto", "adapt", "standardize", "error"}, default="auto"
        How the harmoniser meets the held-out site, which it has not seen:
        ``"adapt"`` calls ``harmonizer.adapt(X_test, sites=..., covariates=...)`` (unsupervised,
        no labels) and transforms with the adapted model; ``"standardize"`` maps every feature
        of the held-out site onto the mean and SD of the harmonised training pool (a location/
        scale alignment without empirical Bayes and without covariates); ``"error"`` raises;
        ``"auto"`` adapts when the harmoniser has ``adapt`` and standardises otherwise.

    Returns
    -------
    DataFrame
        Index of X; columns ``site``, ``y_true``, ``y_pred`` and, for classifiers, ``y_score``
        (probability of ``classes_[1]`` for binary problems; the decision function when the
        estimator has no ``predict_proba``) or ``proba_<class>`` columns.
    """
    Xf = as_frame(X)
    n = Xf.shape[0]
    s = as_sites(sites, n)
    yv = as_target(y, n)
    check_option(unseen_site, ("auto", "adapt", "standardize", "error"), name="unseen_site",
                 owner="leave_one_site_out")
    cov = None
    if covariates is not None:
        cov = covariates if isinstance(covariates, pd.DataFrame) else pd.DataFrame(covariates)
        if cov.shape[0] != n:
            raise ValidationError(
                f"'covariates' must have one row per row of X ({n}). Got {cov.shape[0]} rows."
            )
        cov = cov.set_axis(Xf.index, axis=0)
    levels = list(pd.unique(s))
    if len(levels) < 2:
        raise ValidationError(
            f"leave_one_site_out needs at least two sites; 'sites' has only {levels}."
        )
    classifier = is_classifier(estimator)
    classes = np.unique(yv) if classifier else None
    out = pd.DataFrame({"site": s, "y_true": yv}, index=Xf.index)
    pred = np.empty(n, dtype=yv.dtype if classifier else float)
    scores = None
    for site in levels:
        test = s == site
        train = ~test
        X_tr, X_te = Xf.loc[train], Xf.loc[test]
        if harmonizer is not None:
            cov_tr = cov.loc[train] if cov is not None else None
            cov_te = cov.loc[test] if cov is not None else None
            h = _fit_harmonizer(clone(harmonizer), X_tr, s[train], cov_tr)
            X_tr = _transform(h, X_tr, s[train], cov_tr)
            X_te = _harmonize_held_out(h, X_tr, X_te, s[test], cov_te, unseen_site)
        model = clone(estimator).fit(X_tr, yv[train])
        pred[test] = model.predict(X_te)
        if classifier:
            fold_classes = np.asarray(model.classes_)
            if len(fold_classes) != len(classes):
                raise ValidationError(
                    f"The training sites without '{site}' lack outcome class(es) "
                    f"{sorted(set(classes) - set(fold_classes))}; every class must occur "
                    "outside each held-out site."
                )
            sc = positive_score(model, X_te)
            if scores is None:
                scores = np.zeros((n,) + sc.shape[1:])
            scores[test] = sc
    out["y_pred"] = pred
    if classifier:
        if scores.ndim == 1:
            out["y_score"] = scores
        else:
            for j, c in enumerate(classes):
                out[f"proba_{c}"] = scores[:, j]
    out.attrs["classes"] = None if classes is None else [c.item() if hasattr(c, "item") else c
                                                         for c in classes]
    out.attrs["has_proba"] = bool(classifier and hasattr(estimator, "predict_proba"))
    return out


def _metric_arrays(preds: pd.DataFrame, classes):
    if classes is None:
        y = preds["y_true"].to_numpy(dtype=float)
        return y, preds["y_pred"].to_numpy(dtype=float), preds["y_pred"].to_numpy(dtype=float)
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[v] for v in preds["y_true"]], dtype=int)
    pred = np.array([lookup[v] for v in preds["y_pred"]], dtype=int)
    if "y_score" in preds:
        score = preds["y_score"].to_numpy(dtype=float)
    else:
        score = preds[[f"proba_{c}" for c in classes]].to_numpy(dtype=float)
    return y, pred, score


def _check_scoring(scoring, classifier: bool, n_classes: int, has_proba: bool = True) -> list[str]:
    if classifier and not has_proba:
        # decision values are no probabilities: only rank and label metrics apply
        usable = ("roc_auc", "balanced_accuracy") if n_classes == 2 else ("balanced_accuracy",)
    elif classifier:
        usable = CLASSIFICATION_METRICS if n_classes == 2 else CLASSIFICATION_METRICS[:3]
    else:
        usable = REGRESSION_METRICS
    if scoring is None:
        return list(usable)
    names = [scoring] if isinstance(scoring, str) else list(scoring)
    allowed = CLASSIFICATION_METRICS if classifier else REGRESSION_METRICS
    for name in names:
        check_option(name, allowed, name="scoring", owner="leave_one_site_out")
        if name not in usable:
            why = ("the estimator has no predict_proba" if classifier and not has_proba
                   else f"the outcome has {n_classes} classes")
            raise ValidationError(
                f"The metric '{name}' cannot be computed here: {why}. Use one of {list(usable)}."
            )
    return names


def leave_one_site_out(
    estimator,
    X,
    y,
    *,
    sites,
    harmonizer=None,
    covariates=None,
    scoring: str | Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    unseen_site: str = "auto",
    random_state: RandomState = None,
    return_predictions: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Leave-one-site-out validation with per-site metrics, bootstrap CIs and the worst site.

    For every site: clone the harmoniser and fit it on the other sites only, transform
    them, fit a clone of ``estimator`` on the result, bring the held-out site into the
    harmonised space (see ``unseen_site``) and predict it.  Metrics are computed per
    held-out site and on the pooled held-out predictions.

    Parameters
    ----------
    estimator : scikit-learn classifier or regressor
    X : DataFrame or array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    sites : array-like of shape (n_samples,)
    harmonizer : transformer taking ``sites=`` (and ``covariates=``), default=None
        E.g. :class:`sitekit.harmonize.ComBat`; fitted on the training folds only.
    covariates : DataFrame, default=None
        Biological covariates for the harmoniser.
    scoring : str or list of str, default=None
        Metric names.  Classifiers: ``roc_auc``, ``balanced_accuracy``, ``brier``,
        ``calibration_slope``, ``calibration_intercept``, ``ece`` (all by default; the last
        three need a binary outcome; estimators without ``predict_proba`` get ``roc_auc`` and
        ``balanced_accuracy`` only).  Regressors: ``r2``, ``mae``, ``rmse``.
    n_bootstrap : int, default=1000
        Bootstrap resamples of each site's held-out cases for the percentile CIs; 0 skips
        the CIs (NaN).
    confidence : float, default=0.95
        Coverage of the intervals.
    unseen_site : {"auto", "adapt", "standardize", "error"}, default="auto"
        See :func:`loso_predictions`.
    random_state : None, int or numpy Generator, default=None
        Seeds the bootstrap.
    return_predictions : bool, default=False
        Also return the held-out predictions (:func:`loso_predictions`).

    Returns
    -------
    DataFrame, or (DataFrame, DataFrame) with ``return_predictions``
        One row per (site, metric), sites in order of first appearance then ``"(pooled)"``:
        ``site``, ``n``, ``metric``, ``value``, ``ci_low``, ``ci_high``, ``worst`` (True on
        the worst site of each metric: lowest AUC/balanced accuracy/R2, highest
        Brier/ECE/MAE/RMSE, slope farthest from 1, intercept farthest from 0).
        ``attrs["worst_site"]`` maps each metric to its worst site (None when undefined).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(120, 3)); y = (X[:, 0] > 0).astype(int)
    >>> sites = np.repeat(["a", "b", "c"], 40)
    >>> res = leave_one_site_out(LogisticRegression(), X, y, sites=sites, n_bootstrap=50,
    ...                          random_state=0)
    >>> sorted(res["site"].unique())
    ['(pooled)', 'a', 'b', 'c']
    """
    n_bootstrap = check_positive_int(n_bootstrap, name="n_bootstrap", owner="leave_one_site_out",
                                     low=0)
    check_number(confidence, name="confidence", owner="leave_one_site_out", low=0, high=1,
                 low_inclusive=False)
    rng = check_random_state(random_state)
    preds = loso_predictions(estimator, X, y, sites=sites, harmonizer=harmonizer,
                             covariates=covariates, unseen_site=unseen_site)
    classes = preds.attrs["classes"]
    classifier = classes is not None
    metrics = _check_scoring(scoring, classifier, 0 if classes is None else len(classes),
                             preds.attrs["has_proba"])
    y_all, pred_all, score_all = _metric_arrays(preds, classes)
    alpha = (1.0 - confidence) / 2.0
    rows = []
    groups = [(site, preds["site"].to_numpy() == site) for site in pd.unique(preds["site"])]
    groups.append((POOLED, np.ones(len(preds), dtype=bool)))
    for site, mask in groups:
        yy, pp, ss = y_all[mask], pred_all[mask], score_all[mask]
        m = yy.shape[0]
        if classifier and len(np.unique(yy)) < 2 and site != POOLED:
            warnings.warn(
                f"Site '{site}' has only one outcome class among its {m} cases; ROC AUC and "
                "calibration cannot be computed there (NaN).",
                DataWarning,
                stacklevel=2,
            )
        boot_idx = rng.integers(0, m, size=(n_bootstrap, m)) if n_bootstrap else None
        with np.errstate(all="ignore"):
            values = _compute(metrics, yy, pp, ss)
            if n_bootstrap and ss.ndim == 1:
                # vectorised over resamples, in chunks to bound memory
                chunk = max(1, 2_000_000 // max(m, 1))
                boots = np.vstack([
                    _compute_batch(metrics, yy[i], pp[i], ss[i])
                    for i in np.array_split(boot_idx, range(chunk, n_bootstrap, chunk))
                ])
            elif n_bootstrap:
                boots = np.array([_compute(metrics, yy[i], pp[i], ss[i]) for i in boot_idx])
        for j, name in enumerate(metrics):
            lo = hi = float("nan")
            if n_bootstrap:
                b = boots[:, j][np.isfinite(boots[:, j])]
                if b.size:
                    lo, hi = np.quantile(b, [alpha, 1.0 - alpha])
            rows.append({"site": site, "n": m, "metric": name, "value": values[j],
                         "ci_low": float(lo), "ci_high": float(hi)})
    table = pd.DataFrame(rows, columns=["site", "n", "metric", "value", "ci_low", "ci_high"])
    table["worst"] = False
    worst: dict[str, str | None] = {}
    for name in metrics:
        sel = (table["metric"] == name) & (table["site"] != POOLED) & table["value"].notna()
        if not sel.any():
            worst[name] = None
            continue
        bad = _badness(name, table.loc[sel, "value"])
        idx = bad.idxmax()
        table.loc[idx, "worst"] = True
        worst[name] = str(table.loc[idx, "site"])
    table.attrs["worst_site"] = worst
    return (table, preds) if return_predictions else table


def calibration_curve_by_site(predictions: pd.DataFrame, *, n_bins: int = 10) -> pd.DataFrame:
    """Reliability-diagram data per held-out site (and pooled) from :func:`loso_predictions`.

    Parameters
    ----------
    predictions : DataFrame
        Held-out predictions with ``site``, ``y_true`` and ``y_score`` (binary, probabilities).
    n_bins : int, default=10
        Equal-width probability bins (the bins of :func:`expected_calibration_error`).

    Returns
    -------
    DataFrame
        One row per non-empty (site, bin): ``site``, ``bin``, ``bin_low``, ``bin_high``, ``n``,
        ``mean_predicted``, ``observed`` (share of positives).
    """
    n_bins = check_positive_int(n_bins, name="n_bins", owner="calibration_curve_by_site")
    missing = [c for c in ("site", "y_true", "y_score") if c not in predictions.columns]
    if missing:
        raise ValidationError(
            f"calibration_curve_by_site needs the columns {missing} of loso_predictions() for a "
            "binary classifier with predict_proba."
        )
    classes = predictions.attrs.get("classes") or sorted(pd.unique(predictions["y_true"]))
    if len(classes) != 2:
        raise ValidationError("calibration_curve_by_site needs a binary outcome.")
    y = (predictions["y_true"].to_numpy() == classes[1]).astype(float)
    p = predictions["y_score"].to_numpy(dtype=float)
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    groups = [(site, predictions["site"].to_numpy() == site)
              for site in pd.unique(predictions["site"])]
    groups.append((POOLED, np.ones(len(predictions), dtype=bool)))
    for site, mask in groups:
        for b in range(n_bins):
            sel = mask & (idx == b)
            if not sel.any():
                continue
            rows.append({"site": site, "bin": b, "bin_low": b / n_bins, "bin_high": (b + 1) / n_bins,
                         "n": int(sel.sum()), "mean_predicted": float(p[sel].mean()),
                         "observed": float(y[sel].mean())})
    return pd.DataFrame(rows, columns=["site", "bin", "bin_low", "bin_high", "n",
                                       "mean_predicted", "observed"])


# ------------------------------------------------------------------ site predictability
@dataclass
class SitePredictability:
    """Result of :func:`site_predictability`.

    Attributes
    ----------
    auc : float
        Mean cross-validated (one-vs-rest, macro) ROC AUC of predicting the site.
    p_value : float
        Permutation p-value ``(C + 1) / (n_permutations + 1)``.
    permutation_scores : ndarray of shape (n_permutations,)
        AUCs with shuffled site labels (the null distribution).
    n_samples, n_sites, n_permutations : int
    threshold : float
        AUC from which site leakage is flagged (0.625).
    """

    auc: float
    p_value: float
    permutation_scores: np.ndarray = field(repr=False)
    n_samples: int
    n_sites: int
    n_permutations: int
    threshold: float = LEAKAGE_AUC

    @property
    def leakage(self) -> bool:
        """True when ``auc >= threshold``: the features carry the site."""
        return bool(self.auc >= self.threshold)

    def to_frame(self) -> pd.DataFrame:
        """One-row tidy table: auc, p_value, null_mean, n_samples, n_sites, n_permutations, leakage."""
        return pd.DataFrame([{
            "auc": self.auc,
            "p_value": self.p_value,
            "null_mean": float(np.mean(self.permutation_scores)) if self.n_permutations else np.nan,
            "n_samples": self.n_samples,
            "n_sites": self.n_sites,
            "n_permutations": self.n_permutations,
            "leakage": self.leakage,
        }])


def site_predictability(
    X,
    sites,
    *,
    cv: int = 5,
    n_permutations: int = 100,
    estimator=None,
    random_state: RandomState = None,
) -> SitePredictability:
    """How well the site can be predicted from the features (site leakage).

    A classifier (default: standardisation + linear discriminant analysis with Ledoit-Wolf
    shrinkage, closed form and fast enough for permutation tests) predicts the site in stratified ``cv``-fold cross-validation; the score is the one-vs-rest macro ROC
    AUC (plain ROC AUC for two sites).  Shuffling the site labels ``n_permutations`` times
    gives the null distribution and the p-value (scikit-learn's ``permutation_test_score``).

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
    sites : array-like of shape (n_samples,)
    cv : int, default=5
        Stratified folds (every site needs at least ``cv`` rows).
    n_permutations : int, default=100
        Label shufflings; 0 skips the test (p-value NaN).
    estimator : classifier with ``predict_proba``, default=None
    random_state : None, int or numpy Generator, default=None

    Returns
    -------
    SitePredictability
        ``.auc`` ~0.5 without site signal, ~1 when the site is obvious; ``.p_value``;
        ``.leakage`` when ``auc >= 0.625``.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold, cross_val_score, permutation_test_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xf = as_frame(X)
    s = as_sites(sites, Xf.shape[0])
    cv = check_positive_int(cv, name="cv", owner="site_predictability", low=2)
    n_permutations = check_positive_int(n_permutations, name="n_permutations",
                                        owner="site_predictability", low=0)
    levels, counts = np.unique(s, return_counts=True)
    if len(levels) < 2:
        raise ValidationError(f"site_predictability needs at least two sites; got {list(levels)}.")
    small = levels[counts < cv]
    if len(small):
        raise ValidationError(
            f"Site(s) {list(small)} have fewer rows than cv={cv} folds; lower 'cv' or drop them."
        )
    seed = seed_from(random_state)
    if estimator is None:
        estimator = make_pipeline(StandardScaler(),
                                  LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
    scoring = "roc_auc" if len(levels) == 2 else "roc_auc_ovr"
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    # plain arrays and integer labels: the same result, less per-fit overhead
    values = Xf.to_numpy(dtype=float)
    codes = np.searchsorted(levels, s)
    if n_permutations:
        score, perm, p = permutation_test_score(
            estimator, values, codes, cv=folds, n_permutations=n_permutations, scoring=scoring,
            random_state=seed,
        )
    else:
        score = float(np.mean(cross_val_score(estimator, values, codes, cv=folds,
                                              scoring=scoring)))
        perm, p = np.empty(0), float("nan")
    return SitePredictability(
        auc=float(score), p_value=float(p), permutation_scores=np.asarray(perm, dtype=float),
        n_samples=int(Xf.shape[0]), n_sites=len(levels), n_permutations=n_permutations,
    )


# ------------------------------------------------------------------------ site effects
def site_effects(X, sites) -> pd.DataFrame:
    """Per-feature site effect: Kruskal-Wallis H test with Benjamini-Hochberg FDR.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
    sites : array-like of shape (n_samples,)

    Returns
    -------
    DataFrame
        One row per feature in column order: ``feature``, ``statistic`` (H), ``p_value``,
        ``q_value`` (Benjamini-Hochberg over the tested features), ``epsilon_squared``
        (effect size ``(H - k + 1) / (n - k)``).  Constant features get NaN and a
        :class:`~sitekit.exceptions.DataWarning`.
    """
    Xf = as_frame(X)
    s = as_sites(sites, Xf.shape[0])
    levels = list(pd.unique(s))
    if len(levels) < 2:
        raise ValidationError(f"site_effects needs at least two sites; got {levels}.")
    values = Xf.to_numpy(dtype=float)
    n, k = values.shape[0], len(levels)
    constant = np.ptp(values, axis=0) == 0
    if constant.any():
        warnings.warn(
            f"Feature(s) {Xf.columns[constant].tolist()[:5]} are constant; no site-effect test "
            "for them (NaN).",
            DataWarning,
            stacklevel=2,
        )
    h = np.full(values.shape[1], np.nan)
    p = np.full(values.shape[1], np.nan)
    q = np.full(values.shape[1], np.nan)
    tested = ~constant
    if tested.any():
        groups = [values[s == lev][:, tested] for lev in levels]
        res = stats.kruskal(*groups, axis=0)
        h[tested] = res.statistic
        p[tested] = res.pvalue
        q[tested] = stats.false_discovery_control(p[tested], method="bh")
    eps2 = (h - k + 1) / (n - k) if n > k else np.full_like(h, np.nan)
    return pd.DataFrame({
        "feature": [str(c) for c in Xf.columns],
        "statistic": h,
        "p_value": p,
        "q_value": q,
        "epsilon_squared": eps2,
    })
