"""Adversarial noise on tabular features: the smallest perturbation that flips each decision.

For a linear decision function ``f(x) = w.x + b`` the smallest change of ``x`` that moves it
across ``f = 0`` is known in closed form: ``|f(x)| / ||w||_2`` in the L2 norm and
``|f(x)| / ||w||_1`` in the L-infinity norm (the dual norm).  Preprocessing steps that are
affine maps (``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler``,
``PCA``) are composed into ``w`` and ``b`` so the distance is exact in the units of the
input X, also through a :class:`~sklearn.pipeline.Pipeline`.  Multiclass linear models use
the pairwise margins ``f_k - f_j``.  Distances can be measured in standardised units:
pass ``scale`` (per-feature SD, or the within-subject SD of a stability study) and a
perturbation ``delta`` counts as ``||delta / scale||``.

Other models are attacked as black boxes with HopSkipJump (adversarial-robustness-toolbox),
which only queries ``predict`` and returns an upper bound of the minimal distance.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted

from sitekit._typing import RandomState
from sitekit._validation import check_number, check_option
from sitekit.exceptions import ValidationError
from sitekit.robustness._common import (
    as_frame,
    as_target,
    model_input,
    seed_from,
    within_subject_sd,
)
from sitekit.robustness.metrics import default_scoring, get_scorer, greater_is_better

__all__ = ["linear_decision", "minimal_perturbation", "adversarial_budget", "resolve_scale"]

_OVERSHOOT = 1e-6


# ----------------------------------------------------------------------- affine maps
def _affine_step(step, p: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(A, c) with ``step.transform(x) == x @ A + c``, or None for a non-affine step."""
    if step is None or step == "passthrough":
        return np.eye(p), np.zeros(p)
    if type(step) is StandardScaler:
        mean = step.mean_ if step.with_mean and step.mean_ is not None else np.zeros(p)
        scale = step.scale_ if step.with_std and step.scale_ is not None else np.ones(p)
        mean, scale = np.asarray(mean, dtype=float), np.asarray(scale, dtype=float)
        return np.diag(1.0 / scale), -mean / scale
    if type(step) is RobustScaler:
        center = step.center_ if step.with_centering else np.zeros(p)
        scale = step.scale_ if step.with_scaling else np.ones(p)
        center, scale = np.asarray(center, dtype=float), np.asarray(scale, dtype=float)
        return np.diag(1.0 / scale), -center / scale
    if type(step) is MinMaxScaler:
        if step.clip:
            return None
        return np.diag(np.asarray(step.scale_, dtype=float)), np.asarray(step.min_, dtype=float)
    if type(step) is MaxAbsScaler:
        return np.diag(1.0 / np.asarray(step.scale_, dtype=float)), np.zeros(p)
    if type(step) is PCA:
        comp = np.asarray(step.components_, dtype=float).T
        if step.whiten:
            comp = comp / np.sqrt(step.explained_variance_)
        return comp, -np.asarray(step.mean_, dtype=float) @ comp
    return None


def linear_decision(estimator, n_features: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The affine decision function of a fitted linear classifier in input space.

    Parameters
    ----------
    estimator : fitted classifier or Pipeline
        A final step with ``coef_`` and ``intercept_`` (LogisticRegression, LinearSVC,
        SGDClassifier, RidgeClassifier, LinearDiscriminantAnalysis ...) after affine
        preprocessing steps.
    n_features : int

    Returns
    -------
    (W, b) or None
        ``W`` of shape (n_outputs, n_features) and ``b`` of shape (n_outputs,) with
        ``decision_function(X) == X @ W.T + b``; None when the model is not of that form.
    """
    steps = list(estimator.steps) if isinstance(estimator, Pipeline) else [(None, estimator)]
    final = steps[-1][1]
    coef = getattr(final, "coef_", None)
    intercept = getattr(final, "intercept_", None)
    if coef is None or intercept is None or not hasattr(final, "decision_function"):
        return None
    A = np.eye(n_features)
    c = np.zeros(n_features)
    for _, step in steps[:-1]:
        m = _affine_step(step, A.shape[1])
        if m is None:
            return None
        A2, c2 = m
        if A2.shape[0] != A.shape[1]:
            return None
        A, c = A @ A2, c @ A2 + c2
    W = np.atleast_2d(np.asarray(coef, dtype=float))
    b = np.atleast_1d(np.asarray(intercept, dtype=float)) * np.ones(W.shape[0])
    if W.shape[1] != A.shape[1]:
        return None
    return W @ A.T, b + W @ c


# ---------------------------------------------------------------------------- scale
def resolve_scale(scale, X: pd.DataFrame) -> np.ndarray:
    """Per-feature scale vector: None -> ones; "std" -> SD of X; a mapping/Series by feature
    name; a stability table (see ``within_subject_sd``); or an array of length n_features.
    Zero/negative/missing scales are rejected."""
    p = X.shape[1]
    if scale is None:
        return np.ones(p)
    if isinstance(scale, str):
        check_option(scale, ("std",), name="scale")
        s = X.std(ddof=1).to_numpy(dtype=float)
    elif isinstance(scale, pd.DataFrame):
        s = within_subject_sd(scale, X)
    elif isinstance(scale, pd.Series | dict):
        ser = pd.Series(scale, dtype=float)
        missing = [c for c in X.columns if c not in ser.index]
        if missing:
            raise ValidationError(
                f"'scale' has no value for feature(s) {missing[:5]}; give one scale per column of X."
            )
        s = ser.loc[list(X.columns)].to_numpy(dtype=float)
    else:
        s = np.asarray(scale, dtype=float).reshape(-1)
        if s.shape[0] != p:
            raise ValidationError(f"'scale' must have one value per feature ({p}). Got {s.shape[0]}.")
    bad = ~np.isfinite(s) | (s <= 0)
    if bad.any():
        raise ValidationError(
            f"'scale' must be positive and finite; feature(s) {list(X.columns[bad])[:5]} are not "
            "(a constant feature has SD 0: drop it or pass explicit scales)."
        )
    return s


def _dual(v: np.ndarray, norm: str) -> np.ndarray:
    return np.linalg.norm(v, ord=2, axis=-1) if norm == "l2" else np.abs(v).sum(axis=-1)


# ------------------------------------------------------------------------ exact path
def _exact(estimator, Xf: pd.DataFrame, Wb, norm: str, s: np.ndarray):
    W, b = Wb
    X = Xf.to_numpy(dtype=float)
    F = X @ W.T + b
    n = X.shape[0]
    Ws = W * s  # gradient in standardised coordinates u = x / s
    if W.shape[0] == 1:
        f = F[:, 0]
        sign = np.where(f > 0, 1.0, -1.0)
        margin = np.abs(f)
        V = sign[:, None] * Ws[0][None, :]  # gradient of the margin
    else:
        k_star = np.argmax(F, axis=1)
        rows = np.arange(n)
        best = np.full(n, np.inf)
        margin = np.zeros(n)
        V = np.zeros_like(X)
        for j in range(W.shape[0]):
            m_j = F[rows, k_star] - F[:, j]
            v_j = Ws[k_star] - Ws[j][None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                d_j = np.where(j == k_star, np.inf, m_j / _dual(v_j, norm))
            better = d_j < best
            best = np.where(better, d_j, best)
            margin = np.where(better, m_j, margin)
            V = np.where(better[:, None], v_j, V)
    dual = _dual(V, norm)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(dual > 0, margin / dual, np.inf)
    if norm == "l2":
        unit = V / np.maximum(np.linalg.norm(V, axis=1), 1e-300)[:, None]
    else:
        unit = np.sign(V)
    step = np.where(np.isfinite(distance), distance * (1 + _OVERSHOOT) + 1e-12, 0.0)
    X_adv = X - (step[:, None] * unit) * s
    return distance, pd.DataFrame(X_adv, index=Xf.index, columns=Xf.columns)


# --------------------------------------------------------------------- black-box path
@contextlib.contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """HopSkipJump draws from numpy's global RNG; seed it for the attack and restore it after."""
    state = np.random.get_state()  # noqa: NPY002 - ART offers no generator argument
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _hopskipjump(estimator, Xf, norm, s, *, random_state, max_iter, max_eval, init_eval,
                 init_size):
    # ART is imported here, in the one black-box path that needs it: importing it costs
    # seconds and announces optional back-ends, which every other command would pay for
    with warnings.catch_warnings():
        # ART announces optional back-ends it does not find (PyTorch ...) on import
        warnings.filterwarnings("ignore", message=".*not found.*", category=UserWarning)
        from art.attacks.evasion import HopSkipJump
        from art.estimators.classification import BlackBoxClassifier

    classes = np.asarray(estimator.classes_)
    k = len(classes)
    cols = Xf.columns
    lookup = {c: i for i, c in enumerate(classes)}

    def predict_fn(u: np.ndarray) -> np.ndarray:
        x = pd.DataFrame(np.asarray(u, dtype=float) * s, columns=cols)
        idx = np.array([lookup[v] for v in estimator.predict(model_input(estimator, x))])
        return np.eye(k)[idx]

    U = Xf.to_numpy(dtype=float) / s
    span = float(U.max() - U.min()) or 1.0
    clip = (float(U.min() - 2 * span), float(U.max() + 2 * span))
    clf = BlackBoxClassifier(predict_fn, input_shape=(U.shape[1],), nb_classes=k, clip_values=clip)
    pred = predict_fn(U).argmax(axis=1)
    # seeded start points: the nearest case with another predicted class
    init = U.copy()
    for i in range(U.shape[0]):
        other = np.flatnonzero(pred != pred[i])
        if other.size:
            d = np.linalg.norm(U[other] - U[i], axis=1)
            init[i] = U[other[np.argmin(d)]]
    attack = HopSkipJump(clf, targeted=False, norm=2 if norm == "l2" else np.inf,
                         max_iter=max_iter, max_eval=max_eval, init_eval=min(init_eval, max_eval),
                         init_size=init_size, verbose=False)
    logger = logging.getLogger("art")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with _seeded_global_rng(seed_from(random_state)):
            U_adv = attack.generate(x=U.astype(np.float32), x_adv_init=init.astype(np.float32))
    finally:
        logger.setLevel(level)
    U_adv = np.asarray(U_adv, dtype=float)
    X_adv = pd.DataFrame(U_adv * s, index=Xf.index, columns=cols)
    delta = U_adv - U
    distance = np.linalg.norm(delta, axis=1) if norm == "l2" else np.abs(delta).max(axis=1)
    return distance, X_adv


# --------------------------------------------------------------------------- public
def _prepare(estimator, X, norm, method, scale):
    if not is_classifier(estimator):
        raise ValidationError(
            f"Adversarial distances need a classifier; {type(estimator).__name__} is not one."
        )
    check_is_fitted(estimator)
    check_option(norm, ("l2", "linf"), name="norm", owner="minimal_perturbation")
    check_option(method, ("auto", "exact", "hopskipjump"), name="method",
                 owner="minimal_perturbation")
    Xf = as_frame(X)
    s = resolve_scale(scale, Xf)
    Wb = linear_decision(estimator, Xf.shape[1]) if method != "hopskipjump" else None
    if Wb is not None:
        # guard: the composed map must reproduce the model's own decision function
        ref = np.asarray(estimator.decision_function(model_input(estimator, Xf)), dtype=float).reshape(Xf.shape[0], -1)
        mine = Xf.to_numpy(dtype=float) @ Wb[0].T + Wb[1]
        if ref.shape != mine.shape or not np.allclose(ref, mine, rtol=1e-7, atol=1e-9):
            Wb = None
    if method == "exact" and Wb is None:
        raise ValidationError(
            f"method='exact' needs a linear decision function after affine preprocessing; "
            f"{type(estimator).__name__} is not of that form. Use method='hopskipjump'."
        )
    return Xf, s, Wb


def _run(estimator, X, *, norm, method, scale, random_state, max_iter, max_eval, init_eval,
         init_size):
    Xf, s, Wb = _prepare(estimator, X, norm, method, scale)
    if Wb is not None:
        used = "exact"
        distance, X_adv = _exact(estimator, Xf, Wb, norm, s)
    else:
        used = "hopskipjump"
        distance, X_adv = _hopskipjump(
            estimator, Xf, norm, s, random_state=random_state, max_iter=max_iter,
            max_eval=max_eval, init_eval=init_eval, init_size=init_size)
    before = np.asarray(estimator.predict(model_input(estimator, Xf)))
    after = np.asarray(estimator.predict(model_input(estimator, X_adv)))
    flipped = before != after
    distance = np.where(flipped, distance, np.inf)
    out = pd.DataFrame({
        "distance": distance,
        "flipped": flipped,
        "prediction": before,
        "adversarial_prediction": after,
        "norm": norm,
        "method": used,
    }, index=Xf.index)
    return out, X_adv, Wb, s


def minimal_perturbation(
    estimator,
    X,
    *,
    norm: str = "l2",
    method: str = "auto",
    scale=None,
    random_state: RandomState = None,
    max_iter: int = 20,
    max_eval: int = 1000,
    init_eval: int = 100,
    init_size: int = 100,
    return_adversarial: bool = False,
):
    """The smallest perturbation of each row of X that flips the model's decision.

    Parameters
    ----------
    estimator : fitted classifier or Pipeline
    X : DataFrame or array-like of shape (n_samples, n_features)
    norm : {"l2", "linf"}, default="l2"
    method : {"auto", "exact", "hopskipjump"}, default="auto"
        ``"exact"``: closed form for linear decision functions (after affine preprocessing);
        ``"hopskipjump"``: black-box decision-based attack (an upper bound of the minimum);
        ``"auto"``: exact when possible.
    scale : None, "std", array-like, Series/mapping by feature or DataFrame, default=None
        Units of the distance: a perturbation ``delta`` counts as ``||delta / scale||``.
        None measures in the units of X; ``"std"`` in per-feature SDs of X; a Series of
        within-subject SDs or a stability table (``feature`` + ``within_sd`` or ``icc``,
        then ``SD(X) * sqrt(1 - ICC)``) for test-retest units.
    random_state : None, int or numpy Generator, default=None
        Seeds HopSkipJump (which uses numpy's global RNG: its state is saved and restored).
    max_iter, max_eval, init_eval, init_size : int
        HopSkipJump budget (ignored by the exact method): iterations, the most and the
        first number of model queries per gradient estimate (``init_eval`` is capped at
        ``max_eval``), and random draws for a start point when no case of another class
        exists.
    return_adversarial : bool, default=False
        Also return the adversarial examples (a DataFrame like X).

    Returns
    -------
    DataFrame
        Index of X; ``distance`` (inf when no flip was found), ``flipped``, ``prediction``,
        ``adversarial_prediction``, ``norm``, ``method`` (the method used).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]); y = [0, 0, 1, 1]
    >>> model = LogisticRegression().fit(X, y)
    >>> d = minimal_perturbation(model, X)["distance"]
    >>> f = model.decision_function(X); w = model.coef_[0]
    >>> bool(np.allclose(d, np.abs(f) / np.linalg.norm(w)))
    True
    """
    out, X_adv, _, _ = _run(estimator, X, norm=norm, method=method, scale=scale,
                            random_state=random_state,
                            max_iter=check_number(max_iter, name="max_iter", low=1, integer=True),
                            max_eval=check_number(max_eval, name="max_eval", low=1, integer=True),
                            init_eval=check_number(init_eval, name="init_eval", low=1, integer=True),
                            init_size=check_number(init_size, name="init_size", low=1, integer=True))
    return (out, X_adv) if return_adversarial else out


def adversarial_budget(
    estimator,
    X,
    y,
    *,
    budgets: Sequence[float],
    norm: str = "l2",
    scale=None,
    method: str = "auto",
    scoring: str | None = None,
    random_state: RandomState = None,
    **attack_params,
) -> pd.DataFrame:
    """Score under an adversarial budget and decision flip rate.

    For each budget ``eps`` (in the units set by ``scale``): the flip rate is the share of
    cases whose minimal flipping perturbation is at most ``eps``.  The score is the model's
    score on the attacked data.  Exact (binary linear) models get the worst case allowed by
    the budget: every case is moved by ``eps`` towards the other class of its true label
    (positives down, negatives up) along the steepest direction of the norm.  Otherwise the
    cases that can be flipped within ``eps`` are replaced by their adversarial examples.

    Parameters
    ----------
    estimator : fitted classifier
    X : DataFrame or array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    budgets : sequence of float
        Perturbation sizes (>= 0).
    norm, scale, method, random_state
        As in :func:`minimal_perturbation`.
    scoring : str, default=None
        A scikit-learn scorer name or a metric of :mod:`sitekit.robustness.metrics`
        (``brier`` ...); default ``"roc_auc"`` for binary classifiers, else
        ``"balanced_accuracy"``.
    **attack_params
        HopSkipJump budget (``max_iter``, ``max_eval``, ``init_eval``, ``init_size``).

    Returns
    -------
    DataFrame
        ``budget``, ``norm``, ``method``, ``score``, ``baseline``, ``score_drop`` (positive
        when the model gets worse, for scores and losses alike), ``flip_rate``.
    """
    budgets = [float(check_number(b, name="budgets", owner="adversarial_budget", low=0))
               for b in budgets]
    params = {"max_iter": 20, "max_eval": 1000, "init_eval": 100, "init_size": 100}
    params.update(attack_params)
    table, X_adv, Wb, s = _run(estimator, X, norm=norm, method=method, scale=scale,
                               random_state=random_state, **params)
    Xf = as_frame(X)
    yv = as_target(y, Xf.shape[0])
    scoring = scoring or default_scoring(estimator)
    scorer = get_scorer(scoring, owner="adversarial_budget")
    sign = 1.0 if greater_is_better(scoring) else -1.0  # a drop is positive when worse
    baseline = float(scorer(estimator, model_input(estimator, Xf), yv))
    used = table["method"].iloc[0]
    rows = []
    classes = np.asarray(estimator.classes_)
    for eps in budgets:
        if used == "exact" and Wb[0].shape[0] == 1:
            w_s = Wb[0][0] * s
            unit = w_s / np.linalg.norm(w_s) if norm == "l2" else np.sign(w_s)
            toward = np.where(yv == classes[1], -1.0, 1.0)  # move against the true class
            X_att = Xf + (eps * toward[:, None] * unit[None, :]) * s
        else:
            take = (table["distance"] <= eps).to_numpy()
            X_att = Xf.copy()
            X_att.loc[take] = X_adv.loc[take].to_numpy()
        score = float(scorer(estimator, model_input(estimator, X_att), yv))
        rows.append({"budget": eps, "norm": norm, "method": used, "score": score,
                     "baseline": baseline, "score_drop": sign * (baseline - score),
                     "flip_rate": float(np.mean(table["distance"].to_numpy() <= eps))})
    return pd.DataFrame(rows)
