"""Model metrics, each written once, in the batched form used for one sample and for bootstraps.

Every metric is a function of ``(Y, PRED, S)``: arrays of shape ``(B, m)`` holding ``B``
samples of ``m`` cases each (``Y`` the outcome as class indices or values, ``PRED`` the
predicted labels or values, ``S`` the continuous score: probability of the second class, or
``(B, m, n_classes)`` probabilities for multiclass problems), returning ``B`` values.  One
sample is the case ``B = 1`` (:func:`compute_metrics`); bootstrap resamples are evaluated all
at once (:func:`compute_metrics_batch`).

Names are scikit-learn scorer names where scikit-learn has one (same value and sign: greater
is better, losses negated), plus a few documented extras:

===============================  ==============  =============================================
name                             kind            meaning
===============================  ==============  =============================================
``roc_auc``                      scikit-learn    ROC AUC (one-vs-rest macro for multiclass)
``balanced_accuracy``            scikit-learn    mean recall over the classes present
``accuracy``                     scikit-learn    share of correct labels
``neg_brier_score``              scikit-learn    minus the Brier score
``neg_log_loss``                 scikit-learn    minus the log loss
``r2``                           scikit-learn    coefficient of determination
``neg_mean_absolute_error``      scikit-learn    minus the mean absolute error
``neg_mean_squared_error``       scikit-learn    minus the mean squared error
``neg_root_mean_squared_error``  scikit-learn    minus the root mean squared error
``brier``                        extra           Brier score (a loss: lower is better)
``ece``                          extra           expected calibration error, 10 equal bins
``calibration_slope``            extra (binary)  slope of the logistic recalibration (1 ideal)
``calibration_intercept``        extra (binary)  calibration-in-the-large (0 ideal)
``mae``                          extra           mean absolute error (a loss)
``rmse``                         extra           root mean squared error (a loss)
===============================  ==============  =============================================

:data:`METRIC_ALIASES` maps other spellings met in older files (``auc``, ``brier_score`` ...)
to these names, in this one place; :func:`resolve_metric` applies it.  :func:`get_scorer`
turns any of these names, or any other scikit-learn scorer name, into a
``scorer(estimator, X, y)`` for the stress tests and the adversarial budget.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.base import is_classifier
from sklearn.metrics import get_scorer as _sklearn_get_scorer
from sklearn.metrics import get_scorer_names, roc_auc_score

from sitekit._validation import check_number
from sitekit.exceptions import ValidationError
from sitekit.robustness._common import positive_score

__all__ = [
    "Metric",
    "METRICS",
    "METRIC_ALIASES",
    "EXTRA_METRICS",
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "resolve_metric",
    "compute_metrics",
    "compute_metrics_batch",
    "calibration_slope_intercept",
    "expected_calibration_error",
    "get_scorer",
    "greater_is_better",
    "default_scoring",
]

_LOGIT_CLIP = 1e-6


# ------------------------------------------------------------------------- primitives
def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _calibration(Y: np.ndarray, P: np.ndarray, max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise calibration slope and intercept of (B, m) outcomes and probabilities.

    Slope: Newton-Raphson on ``logit P(y=1) = a + b logit(p)``; intercept: the same with the
    slope fixed at 1 (``logit(p)`` an offset).  NaN for one-class rows and for fits that do
    not converge (separation).
    """
    Y = Y.astype(float)
    x = _logit(P)
    B = Y.shape[0]
    one_class = Y.min(axis=1) == Y.max(axis=1)
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
        bad = (~np.isfinite(a[idx]) | ~np.isfinite(b[idx])
               | (np.maximum(np.abs(a[idx]), np.abs(b[idx])) > 1e6))
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


def _ece(Y: np.ndarray, S: np.ndarray, n_bins: int = 10) -> np.ndarray:
    B, m = Y.shape
    idx = np.minimum((S * n_bins).astype(int), n_bins - 1) + n_bins * np.arange(B)[:, None]
    sum_y = np.bincount(idx.ravel(), weights=Y.ravel().astype(float), minlength=B * n_bins)
    sum_p = np.bincount(idx.ravel(), weights=S.ravel(), minlength=B * n_bins)
    return np.abs(sum_y - sum_p).reshape(B, n_bins).sum(1) / m


# ---------------------------------------------------------------------------- metrics
def _roc_auc(Y, PRED, S):
    if S.ndim == 3:  # multiclass: one-vs-rest macro AUC per sample
        k = S.shape[2]
        return np.array([
            float(roc_auc_score(y, s, multi_class="ovr", labels=np.arange(k)))
            if len(np.unique(y)) == k else np.nan
            for y, s in zip(Y, S)
        ])
    m = Y.shape[1]
    pos = Y == 1
    n1 = pos.sum(1)
    n0 = m - n1
    ranks = stats.rankdata(S, axis=1)
    with np.errstate(all="ignore"):
        auc = ((ranks * pos).sum(1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _balanced_accuracy(Y, PRED, S):
    recall_sum = np.zeros(Y.shape[0])
    n_present = np.zeros(Y.shape[0])
    for c in np.unique(Y):
        is_c = Y == c
        n_c = is_c.sum(1)
        with np.errstate(all="ignore"):
            recall_sum += np.where(n_c > 0, (is_c & (PRED == c)).sum(1) / n_c, 0.0)
        n_present += n_c > 0
    return recall_sum / n_present


def _accuracy(Y, PRED, S):
    return np.mean(Y == PRED, axis=1)


def _brier(Y, PRED, S):
    if S.ndim == 3:
        onehot = np.eye(S.shape[2])[Y]
        return np.mean(np.sum((S - onehot) ** 2, axis=2), axis=1)
    return np.mean((S - Y) ** 2, axis=1)


def _log_loss(Y, PRED, S):
    eps = np.finfo(float).eps
    if S.ndim == 3:
        p = np.take_along_axis(S, Y[..., None].astype(int), axis=2)[..., 0]
    else:
        p = np.where(Y == 1, S, 1.0 - S)
    return -np.mean(np.log(np.clip(p, eps, 1.0)), axis=1)


def _r2(Y, PRED, S):
    ss_tot = ((Y - Y.mean(1, keepdims=True)) ** 2).sum(1)
    with np.errstate(all="ignore"):
        return np.where(ss_tot > 0, 1.0 - ((Y - PRED) ** 2).sum(1) / ss_tot, np.nan)


def _mae(Y, PRED, S):
    return np.abs(Y - PRED).mean(1)


def _mse(Y, PRED, S):
    return ((Y - PRED) ** 2).mean(1)


def _rmse(Y, PRED, S):
    return np.sqrt(((Y - PRED) ** 2).mean(1))


def _negated(fn: Callable) -> Callable:
    def neg(Y, PRED, S):
        return -fn(Y, PRED, S)

    return neg


def _calibration_slope(Y, PRED, S):
    return _calibration(Y, S)[0]


def _calibration_intercept(Y, PRED, S):
    return _calibration(Y, S)[1]


def _ece_metric(Y, PRED, S):
    return _ece(Y, S)


@dataclass(frozen=True)
class Metric:
    """One metric of :data:`METRICS`.

    Attributes
    ----------
    name : str
    func : callable
        ``func(Y, PRED, S) -> ndarray of shape (B,)`` on ``(B, m)`` arrays.
    task : {"classification", "regression"}
    needs : {"label", "rank", "probability", "value"}
        What the metric reads: predicted labels, a continuous score (probability or
        decision value), probabilities, or regression values.
    binary_only : bool
        Only defined for two classes.
    worst : {"min", "max", "from_one", "from_zero"}
        Which site is the worst: the lowest value, the highest, the farthest from 1 or from 0.
    sklearn : bool
        The name is a scikit-learn scorer name (same value and sign).
    """

    name: str
    func: Callable
    task: str
    needs: str
    binary_only: bool
    worst: str
    sklearn: bool


def _m(name, func, task, needs, worst, *, binary_only=False, sklearn=False) -> Metric:
    return Metric(name, func, task, needs, binary_only, worst, sklearn)


#: Every metric by name (see the module docstring for the table).
METRICS: dict[str, Metric] = {m.name: m for m in (
    _m("roc_auc", _roc_auc, "classification", "rank", "min", sklearn=True),
    _m("balanced_accuracy", _balanced_accuracy, "classification", "label", "min", sklearn=True),
    _m("accuracy", _accuracy, "classification", "label", "min", sklearn=True),
    _m("neg_brier_score", _negated(_brier), "classification", "probability", "min", sklearn=True),
    _m("neg_log_loss", _negated(_log_loss), "classification", "probability", "min", sklearn=True),
    _m("brier", _brier, "classification", "probability", "max"),
    _m("calibration_slope", _calibration_slope, "classification", "probability", "from_one",
       binary_only=True),
    _m("calibration_intercept", _calibration_intercept, "classification", "probability",
       "from_zero", binary_only=True),
    _m("ece", _ece_metric, "classification", "probability", "max", binary_only=True),
    _m("r2", _r2, "regression", "value", "min", sklearn=True),
    _m("neg_mean_absolute_error", _negated(_mae), "regression", "value", "min", sklearn=True),
    _m("neg_mean_squared_error", _negated(_mse), "regression", "value", "min", sklearn=True),
    _m("neg_root_mean_squared_error", _negated(_rmse), "regression", "value", "min",
       sklearn=True),
    _m("mae", _mae, "regression", "value", "max"),
    _m("rmse", _rmse, "regression", "value", "max"),
)}

#: The names of :data:`METRICS` that are not scikit-learn scorer names.
EXTRA_METRICS: tuple[str, ...] = tuple(n for n, m in METRICS.items() if not m.sklearn)

#: Other spellings of metric names (older suite files, reports) -> the name used here.
#: Every alias has the same value and sign as its target.
METRIC_ALIASES: dict[str, str] = {
    "auc": "roc_auc",
    "roc": "roc_auc",
    "bacc": "balanced_accuracy",
    "brier_score": "brier",
    "brier_score_loss": "brier",
    "expected_calibration_error": "ece",
    "calibration_in_the_large": "calibration_intercept",
    "mean_absolute_error": "mae",
    "root_mean_squared_error": "rmse",
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


def resolve_metric(name: str, *, owner: str = "") -> str:
    """The name of :data:`METRICS` that ``name`` means (through :data:`METRIC_ALIASES`).

    Parameters
    ----------
    name : str
    owner : str, default=""
        Named in the error message.

    Returns
    -------
    str

    Raises
    ------
    ValidationError
        Unknown name, with the closest known one.

    Examples
    --------
    >>> resolve_metric("auc"), resolve_metric("neg_brier_score")
    ('roc_auc', 'neg_brier_score')
    """
    key = str(name)
    key = METRIC_ALIASES.get(key, key)
    if key in METRICS:
        return key
    known = sorted(METRICS)
    close = difflib.get_close_matches(str(name), known + sorted(METRIC_ALIASES), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    where = f" of {owner}" if owner else ""
    raise ValidationError(
        f"The 'scoring' parameter{where} must be one of {known}. Got {name!r} instead.{hint}"
    )


def compute_metrics_batch(names: Sequence[str], Y, PRED, S) -> np.ndarray:
    """Metrics of ``B`` samples at once.

    Parameters
    ----------
    names : sequence of str
        Names of :data:`METRICS`.
    Y, PRED : ndarray of shape (B, m)
        Outcomes (class indices ``0..k-1`` for classifiers) and predictions.
    S : ndarray of shape (B, m) or (B, m, n_classes)
        Scores (probability of class 1, or class probabilities).

    Returns
    -------
    ndarray of shape (B, len(names))
    """
    Y, PRED, S = np.asarray(Y), np.asarray(PRED), np.asarray(S)
    out = np.full((Y.shape[0], len(names)), np.nan)
    calibration = None
    with np.errstate(all="ignore"):
        for j, name in enumerate(names):
            if name in ("calibration_slope", "calibration_intercept"):
                if calibration is None:  # one fit gives both
                    calibration = _calibration(Y, S)
                out[:, j] = calibration[0 if name == "calibration_slope" else 1]
            else:
                out[:, j] = METRICS[name].func(Y, PRED, S)
    return out


def compute_metrics(names: Sequence[str], y, pred, score) -> list[float]:
    """Metrics of one sample: :func:`compute_metrics_batch` with ``B = 1``.

    Parameters
    ----------
    names : sequence of str
    y, pred : array-like of shape (m,)
    score : array-like of shape (m,) or (m, n_classes)

    Returns
    -------
    list of float

    Examples
    --------
    >>> compute_metrics(["roc_auc", "brier"], [0, 1, 1, 0], [0, 1, 0, 0], [0.1, 0.8, 0.4, 0.3])
    [1.0, 0.125]
    """
    row = compute_metrics_batch(names, np.asarray(y)[None], np.asarray(pred)[None],
                                np.asarray(score, dtype=float)[None])
    return [float(v) for v in row[0]]


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

    Examples
    --------
    >>> slope, intercept = calibration_slope_intercept([0, 0, 1, 1, 0, 1], [0.2, 0.4, 0.6, 0.7, 0.5, 0.3])
    >>> round(slope, 3), round(intercept, 3)
    (1.557, 0.228)
    """
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(y_prob, dtype=float)
    if y.size == 0:
        return float("nan"), float("nan")
    max_iter = int(check_number(max_iter, name="max_iter", owner="calibration_slope_intercept",
                                low=1, integer=True))
    with np.errstate(all="ignore"):
        slope, intercept = _calibration(y[None], p[None], max_iter)
    return float(slope[0]), float(intercept[0])


def expected_calibration_error(y_true, y_prob, *, n_bins: int = 10) -> float:
    """Expected calibration error with ``n_bins`` equal-width probability bins.

    ``ECE = sum_b (n_b / n) |mean(y in b) - mean(p in b)|``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 outcomes.
    y_prob : array-like of shape (n_samples,)
        Predicted probabilities of class 1.
    n_bins : int, default=10

    Returns
    -------
    float

    Examples
    --------
    >>> expected_calibration_error([0, 1], [0.25, 0.75], n_bins=2)
    0.25
    """
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(y_prob, dtype=float)
    if y.size == 0:
        return float("nan")
    n_bins = int(check_number(n_bins, name="n_bins", owner="expected_calibration_error", low=1,
                              integer=True))
    return float(_ece(y[None], p[None], n_bins)[0])


def get_scorer(scoring, *, owner: str) -> Callable:
    """A ``scorer(estimator, X, y)`` from a metric name, a scikit-learn scorer name or a callable.

    scikit-learn scorer names use scikit-learn's own scorer; the extras of :data:`METRICS`
    (``brier``, ``ece`` ...) and the aliases of :data:`METRIC_ALIASES` are computed from the
    model's predictions and scores here.

    Parameters
    ----------
    scoring : str or callable
    owner : str
        Named in the error message.

    Returns
    -------
    callable
        ``scorer(estimator, X, y) -> float``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = [[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1]
    >>> model = LogisticRegression().fit(X, y)
    >>> get_scorer("brier", owner="example")(model, X, y) < 0.25
    True
    """
    if callable(scoring):
        return scoring
    names = get_scorer_names()
    if isinstance(scoring, str) and scoring in names:
        return _sklearn_get_scorer(scoring)
    if not isinstance(scoring, str) or METRIC_ALIASES.get(scoring, scoring) not in METRICS:
        close = difflib.get_close_matches(str(scoring), [*names, *EXTRA_METRICS, *METRIC_ALIASES],
                                          n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValidationError(
            f"The 'scoring' parameter of {owner} must be a scikit-learn scorer name, one of the "
            f"sitekit metrics {list(EXTRA_METRICS)} or a callable scorer(estimator, X, y). "
            f"Got {scoring!r} instead.{hint}"
        )
    return _MetricScorer(METRIC_ALIASES.get(scoring, scoring))


class _MetricScorer:
    """A scikit-learn style scorer for a metric of :data:`METRICS`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"sitekit_scorer({self.name!r})"

    def __call__(self, estimator, X, y) -> float:
        metric = METRICS[self.name]
        y = np.asarray(y)
        pred = np.asarray(estimator.predict(X))
        if metric.task == "regression":
            return compute_metrics([self.name], y.astype(float), pred.astype(float),
                                   pred.astype(float))[0]
        classes = list(np.asarray(estimator.classes_))
        lookup = {c: i for i, c in enumerate(classes)}
        yi = np.array([lookup[v] for v in y], dtype=int)
        pi = np.array([lookup[v] for v in pred], dtype=int)
        if metric.needs == "probability" and not hasattr(estimator, "predict_proba"):
            raise ValidationError(
                f"The metric '{self.name}' needs predicted probabilities; "
                f"{type(estimator).__name__} has no predict_proba."
            )
        if metric.binary_only and len(classes) != 2:
            raise ValidationError(
                f"The metric '{self.name}' needs a binary outcome; the model has "
                f"{len(classes)} classes."
            )
        score = positive_score(estimator, X) if metric.needs != "label" else pi.astype(float)
        return compute_metrics([self.name], yi, pi, score)[0]


def greater_is_better(scoring) -> bool:
    """Whether a higher value of ``scoring`` is better (False for losses such as ``brier``).

    scikit-learn scorer names and callables are scores (higher is better, the scikit-learn
    convention); of the extras, ``brier``, ``ece``, ``mae`` and ``rmse`` are losses.  The
    calibration slope and intercept are best at 1 and 0 and count as scores here.  The stress
    tests and the adversarial budget use it to report a score drop that is positive when the
    model gets worse, whatever the metric.

    Parameters
    ----------
    scoring : str or callable

    Returns
    -------
    bool

    Examples
    --------
    >>> greater_is_better("roc_auc"), greater_is_better("brier"), greater_is_better("neg_brier_score")
    (True, False, True)
    """
    if not isinstance(scoring, str):
        return True
    name = METRIC_ALIASES.get(scoring, scoring)
    return not (name in METRICS and METRICS[name].worst == "max")


def default_scoring(estimator) -> str:
    """The default metric of the model analyses for a fitted ``estimator``.

    ``roc_auc`` for binary classifiers with ``predict_proba`` or ``decision_function``,
    ``balanced_accuracy`` for other classifiers, ``r2`` for regressors.

    Parameters
    ----------
    estimator : fitted estimator

    Returns
    -------
    str

    Examples
    --------
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> default_scoring(LogisticRegression().fit([[0], [1]], [0, 1]))
    'roc_auc'
    >>> default_scoring(LinearRegression())
    'r2'
    """
    if not is_classifier(estimator):
        return "r2"
    classes = getattr(estimator, "classes_", None)
    scores = hasattr(estimator, "predict_proba") or hasattr(estimator, "decision_function")
    if classes is not None and len(classes) == 2 and scores:
        return "roc_auc"
    return "balanced_accuracy"
