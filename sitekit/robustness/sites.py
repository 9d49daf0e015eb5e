"""Generalisation across sites: leave-one-site-out validation, site leakage, site effects.

* :func:`leave_one_site_out` trains on all sites but one and tests on the held-out site, for
  every site in turn, with the harmoniser fitted on the training sites only (ComBat fitted on
  all data leaks the test site into training).  Per-site metrics carry bootstrap confidence
  intervals and the worst site is named.
* :func:`site_predictability` asks how well the site can be predicted from the features
  (cross-validated one-vs-rest AUC with a permutation p-value): ~0.5 means no site signal,
  >= 0.625 is flagged as site leakage.
* :func:`site_effects` tests every feature for a site effect (Kruskal-Wallis) with
  Benjamini-Hochberg false-discovery-rate control; run it before and after harmonisation.
* :func:`covariate_effects` tests every feature for an association with each biological
  covariate (Spearman or Kruskal-Wallis, same FDR): harmonisation should keep these.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone, is_classifier
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import StratifiedKFold, cross_val_score, permutation_test_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sitekit._stats import fdr_bh, kruskal_fdr, spearman_columns
from sitekit._typing import RandomState
from sitekit._validation import check_number, check_option, check_random_state
from sitekit.exceptions import DataWarning, ValidationError
from sitekit.robustness._common import (
    as_frame,
    as_sites,
    as_target,
    positive_score,
    seed_from,
)
from sitekit.robustness.metrics import (
    CLASSIFICATION_METRICS,
    METRICS,
    REGRESSION_METRICS,
    compute_metrics,
    compute_metrics_batch,
    resolve_metric,
)

__all__ = [
    "POOLED",
    "SitePredictability",
    "leave_one_site_out",
    "loso_predictions",
    "site_predictability",
    "site_effects",
    "covariate_effects",
    "calibration_curve_by_site",
]

#: Label of the row that pools the held-out predictions of every site.
POOLED = "(pooled)"

#: Site-predictability AUC from which leakage is flagged (a quarter of the way from chance to
#: perfect separation).
LEAKAGE_AUC = 0.625

def _badness(metric: str, values: pd.Series) -> pd.Series:
    rule = METRICS[metric].worst
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


def _harmonize_held_out(h, X_tr_h, X_te, s_te, cov_te, unseen_sites):
    use_adapt = unseen_sites == "adapt" or (unseen_sites == "auto" and hasattr(h, "adapt"))
    if use_adapt:
        if not hasattr(h, "adapt"):
            raise ValidationError(
                f"unseen_sites='adapt' needs a harmoniser with an 'adapt' method; "
                f"{type(h).__name__} has none. Use unseen_sites='standardize' instead."
            )
        kw = {"sites": s_te}
        if cov_te is not None:
            kw["covariates"] = cov_te
        adapted = h.adapt(X_te, **kw)
        adapted = h if adapted is None else adapted
        return _transform(adapted, X_te, s_te, cov_te)
    if unseen_sites == "error":
        raise ValidationError(
            f"The held-out site '{s_te[0]}' is unseen by the harmoniser {type(h).__name__} "
            "fitted on the other sites, and it has no 'adapt' method. Pass "
            "unseen_sites='standardize' to map the held-out site onto the training pool's "
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
    unseen_sites: str = "auto",
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
    unseen_sites : {"auto", "adapt", "standardize", "error"}, default="auto"
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
    check_option(unseen_sites, ("auto", "adapt", "standardize", "error"), name="unseen_sites",
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
            X_te = _harmonize_held_out(h, X_tr, X_te, s[test], cov_te, unseen_sites)
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


def _unusable(name: str, classifier: bool, n_classes: int, has_proba: bool) -> str | None:
    """Why the metric ``name`` cannot be computed for this model (None when it can)."""
    metric = METRICS[name]
    if metric.task != ("classification" if classifier else "regression"):
        return f"it is a {metric.task} metric and the estimator is a " + (
            "classifier" if classifier else "regressor")
    if classifier and metric.binary_only and n_classes != 2:
        return f"the outcome has {n_classes} classes"
    if classifier and not has_proba and (
            metric.needs == "probability" or (metric.needs == "rank" and n_classes != 2)):
        # decision values are no probabilities: only rank (binary) and label metrics apply
        return "the estimator has no predict_proba"
    return None


def _check_scoring(scoring, classifier: bool, n_classes: int, has_proba: bool = True) -> list[str]:
    if scoring is None:
        defaults = CLASSIFICATION_METRICS if classifier else REGRESSION_METRICS
        return [n for n in defaults if _unusable(n, classifier, n_classes, has_proba) is None]
    names = [scoring] if isinstance(scoring, str) else list(scoring)
    names = [resolve_metric(n, owner="leave_one_site_out") for n in names]
    for name in names:
        why = _unusable(name, classifier, n_classes, has_proba)
        if why is not None:
            usable = [n for n in METRICS if _unusable(n, classifier, n_classes, has_proba) is None]
            raise ValidationError(
                f"The metric '{name}' cannot be computed here: {why}. Use one of {usable}."
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
    unseen_sites: str = "auto",
    random_state: RandomState = None,
    return_predictions: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Leave-one-site-out validation with per-site metrics, bootstrap CIs and the worst site.

    For every site: clone the harmoniser and fit it on the other sites only, transform
    them, fit a clone of ``estimator`` on the result, bring the held-out site into the
    harmonised space (see ``unseen_sites``) and predict it.  Metrics are computed per
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
    unseen_sites : {"auto", "adapt", "standardize", "error"}, default="auto"
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
    n_bootstrap = check_number(n_bootstrap, name="n_bootstrap", owner="leave_one_site_out",
                               low=0, integer=True)
    check_number(confidence, name="confidence", owner="leave_one_site_out", low=0, high=1,
                 low_inclusive=False)
    rng = check_random_state(random_state)
    preds = loso_predictions(estimator, X, y, sites=sites, harmonizer=harmonizer,
                             covariates=covariates, unseen_sites=unseen_sites)
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
        values = compute_metrics(metrics, yy, pp, ss)
        if n_bootstrap:
            # vectorised over resamples, in chunks to bound memory
            chunk = max(1, 2_000_000 // max(m * (ss.shape[1] if ss.ndim == 2 else 1), 1))
            boots = np.vstack([
                compute_metrics_batch(metrics, yy[i], pp[i], ss[i])
                for i in np.array_split(boot_idx, range(chunk, n_bootstrap, chunk))
            ])
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


def _wilson(k: np.ndarray, n: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of the proportions ``k / n``."""
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    phat = k / n
    denom = 1.0 + z**2 / n
    centre = (phat + z**2 / (2.0 * n)) / denom
    half = z * np.sqrt(phat * (1.0 - phat) / n + z**2 / (4.0 * n**2)) / denom
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def calibration_curve_by_site(predictions: pd.DataFrame, *, strategy: str = "quantile",
                              n_bins: int | None = None, min_per_bin: int = 15,
                              confidence: float = 0.95) -> pd.DataFrame:
    """Reliability-diagram data per held-out site (and pooled) from :func:`loso_predictions`.

    A site holds few cases (often 40-100), so fixed bins are mostly noise.  By default each
    site gets its own equal-count bins, as many as keep at least ``min_per_bin`` cases in
    each (at most 10), and every bin carries a Wilson confidence interval of its observed
    share, which the report draws as a band.

    Parameters
    ----------
    predictions : DataFrame
        Held-out predictions with ``site``, ``y_true`` and ``y_score`` (binary, probabilities).
    strategy : {"quantile", "uniform"}, default="quantile"
        ``"quantile"``: equal-count bins per site; ``"uniform"``: equal-width probability bins
        (those of :func:`~sitekit.robustness.metrics.expected_calibration_error`).
    n_bins : int, default=None
        Bins per site; default: ``n // min_per_bin`` clipped to 1..10 (quantile) or 10
        (uniform).
    min_per_bin : int, default=15
        Cases per bin aimed at by the default number of quantile bins.
    confidence : float, default=0.95
        Coverage of the Wilson interval of each bin's observed share.

    Returns
    -------
    DataFrame
        One row per non-empty (site, bin): ``site``, ``bin``, ``bin_low``, ``bin_high`` (the
        bin's probability edges), ``n``, ``mean_predicted``, ``observed`` (share of
        positives), ``ci_low``, ``ci_high``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=60)
    >>> preds = pd.DataFrame({"site": "a", "y_true": (rng.uniform(size=60) < p).astype(int),
    ...                       "y_score": p})
    >>> curve = calibration_curve_by_site(preds)
    >>> curve.loc[curve["site"] == "a", "n"].tolist()
    [15, 15, 15, 15]
    """
    check_option(strategy, ("quantile", "uniform"), name="strategy",
                 owner="calibration_curve_by_site")
    if n_bins is not None:
        n_bins = check_number(n_bins, name="n_bins", owner="calibration_curve_by_site", low=1,
                              integer=True)
    min_per_bin = check_number(min_per_bin, name="min_per_bin", owner="calibration_curve_by_site",
                               low=1, integer=True)
    check_number(confidence, name="confidence", owner="calibration_curve_by_site", low=0, high=1,
                 low_inclusive=False)
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
    columns = ["site", "bin", "bin_low", "bin_high", "n", "mean_predicted", "observed",
               "ci_low", "ci_high"]
    rows = []
    groups = [(site, predictions["site"].to_numpy() == site)
              for site in pd.unique(predictions["site"])]
    groups.append((POOLED, np.ones(len(predictions), dtype=bool)))
    for site, mask in groups:
        ps, ys = p[mask], y[mask]
        if strategy == "uniform":
            k = n_bins or 10
            edges = np.linspace(0.0, 1.0, k + 1)
            idx = np.minimum((ps * k).astype(int), k - 1)
        else:
            k = n_bins or int(np.clip(ps.size // min_per_bin, 1, 10))
            edges = np.quantile(ps, np.linspace(0.0, 1.0, k + 1))
            idx = np.clip(np.searchsorted(edges[1:-1], ps, side="right"), 0, k - 1)
        for b in range(k):
            sel = idx == b
            if not sel.any():
                continue
            rows.append({"site": site, "bin": b, "bin_low": float(edges[b]),
                         "bin_high": float(edges[b + 1]), "n": int(sel.sum()),
                         "mean_predicted": float(ps[sel].mean()),
                         "observed": float(ys[sel].mean()), "_k": float(ys[sel].sum())})
    table = pd.DataFrame(rows, columns=[*columns[:7], "_k"])
    lo, hi = _wilson(table["_k"].to_numpy(dtype=float), table["n"].to_numpy(dtype=float),
                     confidence)
    table["ci_low"], table["ci_high"] = lo, hi
    return table[columns]


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
    Xf = as_frame(X)
    s = as_sites(sites, Xf.shape[0])
    cv = check_number(cv, name="cv", owner="site_predictability", low=2, integer=True)
    n_permutations = check_number(n_permutations, name="n_permutations",
                                  owner="site_predictability", low=0, integer=True)
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

    The test and its conventions (empty cells left out of their feature's test, tie-corrected
    H equal to :func:`scipy.stats.kruskal`, untestable features outside the FDR family) are
    those of sitekit's one per-feature test, shared with the batch-effect test of
    :class:`~sitekit.harmonize.NestedComBat`.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        Empty (NaN) cells are allowed: each feature is tested on its non-empty cells.
    sites : array-like of shape (n_samples,)

    Returns
    -------
    DataFrame
        One row per feature in column order: ``feature``, ``statistic`` (H), ``p_value``,
        ``q_value`` (Benjamini-Hochberg over the tested features), ``epsilon_squared``
        (effect size ``(H - k + 1) / (n - k)`` with ``n`` the non-empty cells and ``k`` the
        sites holding them).  Features that cannot be tested (constant, or fewer than two
        sites with data) get NaN and a :class:`~sitekit.exceptions.DataWarning`.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 5.0], [2.0, np.nan], [3.0, 4.0], [7.0, 1.0], [8.0, 2.0], [9.0, 0.0]])
    >>> site_effects(X, ["a", "a", "a", "b", "b", "b"])["q_value"].round(3).tolist()
    [0.083, 0.083]
    """
    Xf = as_frame(X, allow_nan=True)
    s = as_sites(sites, Xf.shape[0])
    levels = list(pd.unique(s))
    if len(levels) < 2:
        raise ValidationError(f"site_effects needs at least two sites; got {levels}.")
    res = kruskal_fdr(Xf.to_numpy(dtype=float), s)
    untested = res["statistic"].isna().to_numpy()
    if untested.any():
        warnings.warn(
            f"Feature(s) {Xf.columns[untested].tolist()[:5]} are constant or have data at fewer "
            "than two sites; no site-effect test for them (NaN).",
            DataWarning,
            stacklevel=2,
        )
    return pd.DataFrame({
        "feature": [str(c) for c in Xf.columns],
        "statistic": res["statistic"].to_numpy(),
        "p_value": res["p_value"].to_numpy(),
        "q_value": res["q_value"].to_numpy(),
        "epsilon_squared": res["epsilon_squared"].to_numpy(),
    })


def covariate_effects(X, covariates, *, max_levels: int = 5) -> pd.DataFrame:
    """Per-feature association with every covariate, with Benjamini-Hochberg FDR per covariate.

    Numeric covariates with more than ``max_levels`` distinct values: Spearman rank
    correlation; other covariates (categories, booleans, few levels): Kruskal-Wallis across
    their levels.  Both leave empty cells out (the conventions of :func:`site_effects`).  Run
    it before and after harmonisation: the associations with biology should stay.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
    covariates : DataFrame of shape (n_samples, n_covariates)
    max_levels : int, default=5
        Numeric covariates with at most this many distinct values are treated as categories.

    Returns
    -------
    DataFrame
        One row per (covariate, feature): ``covariate``, ``feature``, ``test``
        (``"Spearman"`` or ``"Kruskal-Wallis"``), ``statistic`` (rho or H), ``p_value``,
        ``q_value``, ``effect`` (``|rho|`` or epsilon squared).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> age = rng.uniform(30, 80, 60)
    >>> X = pd.DataFrame({"f": age + rng.normal(size=60), "g": rng.normal(size=60)})
    >>> res = covariate_effects(X, pd.DataFrame({"age": age}))
    >>> res.loc[res["q_value"] < 0.05, "feature"].tolist()
    ['f']
    """
    Xf = as_frame(X, allow_nan=True)
    if not isinstance(covariates, pd.DataFrame):
        raise ValidationError("'covariates' must be a DataFrame with one named column per covariate.")
    if len(covariates) != Xf.shape[0]:
        raise ValidationError(
            f"'covariates' must have one row per row of X ({Xf.shape[0]}). Got {len(covariates)}."
        )
    max_levels = check_number(max_levels, name="max_levels", owner="covariate_effects", low=1,
                              integer=True)
    values = Xf.to_numpy(dtype=float)
    features = [str(c) for c in Xf.columns]
    frames = []
    for name in covariates.columns:
        v = covariates[name]
        numeric = pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v)
        if numeric and v.nunique() > max_levels:
            rho, p, _ = spearman_columns(values, v.to_numpy(dtype=float))
            frames.append(pd.DataFrame({"covariate": str(name), "feature": features,
                                        "test": "Spearman", "statistic": rho, "p_value": p,
                                        "q_value": fdr_bh(p), "effect": np.abs(rho)}))
            continue
        keep = v.notna().to_numpy()
        res = kruskal_fdr(values[keep], v[keep].astype(str).to_numpy())
        frames.append(pd.DataFrame({"covariate": str(name), "feature": features,
                                    "test": "Kruskal-Wallis",
                                    "statistic": res["statistic"].to_numpy(),
                                    "p_value": res["p_value"].to_numpy(),
                                    "q_value": res["q_value"].to_numpy(),
                                    "effect": res["epsilon_squared"].to_numpy()}))
    columns = ["covariate", "feature", "test", "statistic", "p_value", "q_value", "effect"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
