"""The metrics module: every metric once, batched, against scikit-learn and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from sitekit.exceptions import ValidationError
from sitekit.robustness.metrics import (
    EXTRA_METRICS,
    METRIC_ALIASES,
    METRICS,
    calibration_slope_intercept,
    compute_metrics,
    compute_metrics_batch,
    expected_calibration_error,
    get_scorer,
    resolve_metric,
)


# ------------------------------------------------------------------ calibration metrics
def test_calibration_slope_matches_unpenalised_logistic_fit():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 3000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    slope, intercept = calibration_slope_intercept(y, p)
    logit = np.log(p / (1 - p))
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(logit[:, None], y)
    assert slope == pytest.approx(ref.coef_[0, 0], abs=1e-5)
    # intercept with slope fixed at 1 solves the score equation sum(y - sigmoid(a + logit)) = 0
    assert np.sum(y - 1 / (1 + np.exp(-(intercept + logit)))) == pytest.approx(0, abs=1e-6)
    # well calibrated by construction
    assert slope == pytest.approx(1, abs=0.15)
    assert intercept == pytest.approx(0, abs=0.15)
    # over-confident predictions have slope < 1
    over = 1 / (1 + np.exp(-3 * logit))
    assert calibration_slope_intercept(y, over)[0] < 0.5


def test_expected_calibration_error_by_hand():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.15, 0.95, 0.85])
    # bins: [0,0.1): y 0 vs 0.05; [0.1,0.2): y .5 vs .15; [0.8,0.9): 1 vs .85; [0.9,1]: 1 vs .95
    expected = (1 * 0.05 + 2 * 0.35 + 1 * 0.15 + 1 * 0.05) / 5
    assert expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-12)


def test_vectorised_bootstrap_equals_per_resample_loop():
    rng = np.random.default_rng(4)
    y = (rng.uniform(size=40) < 0.4).astype(int)
    p = np.round(rng.beta(2, 2, size=40), 2)  # ties on purpose
    pred = (p > 0.5).astype(int)
    idx = rng.integers(0, 40, size=(200, 40))
    idx[0] = np.flatnonzero(y == 1)[0]  # a one-class resample: NaN AUC and calibration
    names = ["roc_auc", "balanced_accuracy", "brier", "calibration_slope",
             "calibration_intercept", "ece"]
    loop = np.array([compute_metrics(names, y[i], pred[i], p[i]) for i in idx])
    batch = compute_metrics_batch(names, y[idx], pred[idx], p[idx])
    np.testing.assert_array_equal(np.isnan(loop), np.isnan(batch))
    np.testing.assert_allclose(batch, loop, rtol=0, atol=1e-9)



# ------------------------------------------------------------- against scikit-learn
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_sklearn_on_every_resample(seed):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=50) < 0.45).astype(int)
    p = np.round(rng.beta(2, 2, size=50), 2)  # ties on purpose
    pred = (p > 0.5).astype(int)
    idx = rng.integers(0, 50, size=(30, 50))
    names = ["roc_auc", "balanced_accuracy", "accuracy", "neg_brier_score", "neg_log_loss",
             "brier"]
    got = compute_metrics_batch(names, y[idx], pred[idx], p[idx])
    for b, i in enumerate(idx):
        want = [roc_auc_score(y[i], p[i]), balanced_accuracy_score(y[i], pred[i]),
                accuracy_score(y[i], pred[i]), -brier_score_loss(y[i], p[i]),
                -log_loss(y[i], p[i], labels=[0, 1]), brier_score_loss(y[i], p[i])]
        np.testing.assert_allclose(got[b], want, rtol=0, atol=1e-12)


def test_multiclass_metrics_equal_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=60)
    proba = rng.dirichlet([2, 2, 2], size=60)
    pred = proba.argmax(1)
    got = compute_metrics(["roc_auc", "balanced_accuracy", "neg_log_loss", "brier"], y, pred,
                          proba)
    onehot = np.eye(3)[y]
    want = [roc_auc_score(y, proba, multi_class="ovr"), balanced_accuracy_score(y, pred),
            -log_loss(y, proba), float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(2)
    y = rng.normal(size=40)
    pred = y + rng.normal(scale=0.5, size=40)
    names = ["r2", "neg_mean_absolute_error", "neg_mean_squared_error",
             "neg_root_mean_squared_error", "mae", "rmse"]
    got = compute_metrics(names, y, pred, pred)
    mse = mean_squared_error(y, pred)
    want = [r2_score(y, pred), -mean_absolute_error(y, pred), -mse, -np.sqrt(mse),
            mean_absolute_error(y, pred), np.sqrt(mse)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------ vocabulary
def test_names_are_sklearn_scorer_names_or_documented_extras():
    from sklearn.metrics import get_scorer_names

    import sitekit.robustness.metrics as M

    for name, metric in METRICS.items():
        assert metric.sklearn == (name in get_scorer_names()), name
        assert f"``{name}``" in M.__doc__  # every name is in the docstring table
    assert set(EXTRA_METRICS) == {"brier", "ece", "calibration_slope", "calibration_intercept",
                                  "mae", "rmse"}


def test_aliases_map_in_one_place_to_the_same_value():
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=30) < 0.5).astype(int)
    p = rng.uniform(size=30)
    for alias, target in METRIC_ALIASES.items():
        assert resolve_metric(alias) == target
    assert compute_metrics([resolve_metric("auc")], y, y, p) == compute_metrics(["roc_auc"], y, y, p)
    with pytest.raises(ValidationError, match="Did you mean 'roc_auc'"):
        resolve_metric("roc_acu")


def test_get_scorer_accepts_sklearn_names_extras_and_aliases():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] + rng.normal(size=80) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    proba = model.predict_proba(X)[:, 1]
    assert get_scorer("roc_auc", owner="t")(model, X, y) == pytest.approx(roc_auc_score(y, proba))
    assert get_scorer("brier", owner="t")(model, X, y) == pytest.approx(brier_score_loss(y, proba))
    assert get_scorer("brier_score", owner="t")(model, X, y) == pytest.approx(
        brier_score_loss(y, proba))
    assert get_scorer("ece", owner="t")(model, X, y) == pytest.approx(
        expected_calibration_error(y, proba))
    reg = Ridge().fit(X, X[:, 1])
    assert get_scorer("mae", owner="t")(reg, X, X[:, 1]) == pytest.approx(
        mean_absolute_error(X[:, 1], reg.predict(X)))
    with pytest.raises(ValidationError, match="scikit-learn scorer name"):
        get_scorer("not_a_metric", owner="t")
