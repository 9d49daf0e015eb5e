"""Minimal adversarial perturbations: exact for linear models, HopSkipJump otherwise (issue 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import LinearSVC

from sitekit.exceptions import ValidationError
from sitekit.robustness import adversarial_budget, minimal_perturbation
from sitekit.robustness.adversarial import linear_decision


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # features on wildly different scales and offsets, as radiomics features are
    X = pd.DataFrame(rng.normal(size=(150, 4)) * [1.0, 50.0, 0.01, 3.0] + [0, 1000, 0.5, -7],
                     columns=["a", "b", "c", "d"])
    y = ((X["a"] + (X["b"] - 1000) / 50 - (X["c"] - 0.5) * 100 + rng.normal(0, 0.7, 150)) > 0)
    return X, y.astype(int).to_numpy()


def _expected(f, w, norm, s):
    ws = w * s
    return np.abs(f) / (np.linalg.norm(ws) if norm == "l2" else np.abs(ws).sum())


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("scale", [None, "std"])
def test_exact_distance_plain_logistic(data, norm, scale):
    X, y = data
    model = LogisticRegression(C=10, max_iter=5000).fit(X, y)
    res = minimal_perturbation(model, X, norm=norm, scale=scale)
    s = np.ones(4) if scale is None else X.std(ddof=1).to_numpy()
    expected = _expected(model.decision_function(X), model.coef_[0], norm, s)
    np.testing.assert_allclose(res["distance"], expected, rtol=1e-6, atol=0)
    assert (res["method"] == "exact").all() and res["flipped"].all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("scale", [None, "std"])
def test_exact_distance_through_pipeline_with_standard_scaler(data, norm, scale):
    X, y = data
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    res, X_adv = minimal_perturbation(model, X, norm=norm, scale=scale, return_adversarial=True)
    scaler, clf = model[0], model[-1]
    w_input = clf.coef_[0] / scaler.scale_  # f(x) = w.((x - mu)/sigma) + b
    s = np.ones(4) if scale is None else X.std(ddof=1).to_numpy()
    expected = _expected(model.decision_function(X), w_input, norm, s)
    np.testing.assert_allclose(res["distance"], expected, rtol=1e-6, atol=0)
    # the returned adversarial examples flip the decision and sit at that distance
    assert (model.predict(X_adv) != model.predict(X)).all()
    delta = (X_adv - X).to_numpy() / s
    size = np.linalg.norm(delta, axis=1) if norm == "l2" else np.abs(delta).max(axis=1)
    np.testing.assert_allclose(size, expected, rtol=1e-5)


def test_exact_distance_with_pca_minmax_and_linear_svc(data):
    X, y = data
    model = make_pipeline(MinMaxScaler(), PCA(n_components=3, whiten=True),
                          LinearSVC(C=1.0)).fit(X, y)
    W, b = linear_decision(model, 4)
    np.testing.assert_allclose(X.to_numpy() @ W.T + b, model.decision_function(X)[:, None],
                               rtol=1e-9, atol=1e-9)
    res = minimal_perturbation(model, X)
    np.testing.assert_allclose(res["distance"], _expected(model.decision_function(X), W[0], "l2",
                                                          np.ones(4)), rtol=1e-6)


def test_exact_multiclass_is_the_nearest_pairwise_boundary(data):
    X, _ = data
    y3 = np.digitize(X["a"], [-0.5, 0.5])
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y3)
    res, X_adv = minimal_perturbation(model, X, scale="std", return_adversarial=True)
    W, b = linear_decision(model, 4)
    F = X.to_numpy() @ W.T + b
    s = X.std(ddof=1).to_numpy()
    k = F.argmax(axis=1)
    for i in range(0, len(X), 15):
        d = [(F[i, k[i]] - F[i, j]) / np.linalg.norm((W[k[i]] - W[j]) * s)
             for j in range(3) if j != k[i]]
        assert res["distance"].iloc[i] == pytest.approx(min(d), rel=1e-9)
    assert res["flipped"].all()
    assert (model.predict(X_adv) != model.predict(X)).all()


def test_exact_method_refuses_nonlinear_models(data):
    X, y = data
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    assert linear_decision(forest, 4) is None
    with pytest.raises(ValidationError, match="hopskipjump"):
        minimal_perturbation(forest, X, method="exact")
    with pytest.raises(ValidationError, match="Did you mean 'linf'"):
        minimal_perturbation(forest, X, norm="lin")


def test_hopskipjump_black_box_is_an_upper_bound_and_seeded(data):
    X, y = data
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    Xs = X.iloc[:6]
    exact = minimal_perturbation(model, Xs, scale="std")["distance"]
    state = np.random.get_state()[1].copy()  # noqa: NPY002 - checking it is restored
    kw = dict(method="hopskipjump", scale="std", random_state=0, max_iter=10, max_eval=200,
              init_eval=20, init_size=20)
    a = minimal_perturbation(model, Xs, **kw)
    b = minimal_perturbation(model, Xs, **kw)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    pd.testing.assert_frame_equal(a, b)
    assert (a["method"] == "hopskipjump").all() and a["flipped"].all()
    # a found adversarial example can never be closer than the true minimum
    assert (a["distance"] >= exact * (1 - 1e-4)).all()
    assert (a["distance"] <= exact * 3).all()


def test_hopskipjump_on_a_forest_flips_decisions(data):
    X, y = data
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    res, X_adv = minimal_perturbation(forest, X.iloc[:6], scale="std", random_state=1,
                                      max_iter=5, max_eval=100, init_eval=10, init_size=20,
                                      return_adversarial=True)
    assert (res["method"] == "hopskipjump").all()
    flipped = res["flipped"].to_numpy()
    assert flipped.mean() >= 0.5
    assert np.isfinite(res["distance"][flipped]).all() and (res["distance"][flipped] > 0).all()
    assert np.isinf(res["distance"][~flipped]).all()
    assert (forest.predict(X_adv)[flipped] != forest.predict(X.iloc[:6])[flipped]).all()


def test_budgeted_attack_exact_linear(data):
    X, y = data
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    dist = minimal_perturbation(model, X, scale="std")["distance"]
    res = adversarial_budget(model, X, y, budgets=[0.0, 0.05, 0.2, 1.0], scale="std")
    assert list(res.columns) == ["budget", "norm", "method", "score", "baseline", "score_drop",
                                 "flip_rate"]
    assert res["score"].iloc[0] == pytest.approx(res["baseline"].iloc[0], abs=1e-12)
    assert res["flip_rate"].iloc[0] == 0
    for row in res.itertuples():
        assert row.flip_rate == pytest.approx(np.mean(dist <= row.budget))
    assert res["score"].is_monotonic_decreasing and res["flip_rate"].is_monotonic_increasing
    assert res["score"].iloc[-1] < res["baseline"].iloc[0] - 0.2


def test_scale_from_stability_table_and_errors(data):
    X, y = data
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    icc = pd.DataFrame({"feature": list(X.columns), "icc": 0.75})
    a = minimal_perturbation(model, X, scale=icc)["distance"]
    b = minimal_perturbation(model, X, scale=X.std(ddof=1) * 0.5)["distance"]
    np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValidationError, match="'scale' has no value"):
        minimal_perturbation(model, X, scale={"a": 1.0})
    with pytest.raises(ValidationError, match="positive"):
        minimal_perturbation(model, X, scale=[1, 0, 1, 1])


def _linear_model(w, b):
    """A LogisticRegression with a given decision function (for property tests)."""
    model = LogisticRegression()
    model.coef_ = np.asarray(w, dtype=float)[None, :]
    model.intercept_ = np.array([float(b)])
    model.classes_ = np.array([0, 1])
    model.n_features_in_ = len(w)
    return model


finite = dict(allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_property_exact_step_reaches_the_boundary_and_no_shorter_step_flips(norm):
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=60, deadline=None)
    @given(w=arrays(float, 3, elements=st.floats(-5, 5, **finite)).filter(
               lambda v: np.abs(v).max() > 0.1),
           b=st.floats(-3, 3, **finite),
           x=arrays(float, (4, 3), elements=st.floats(-10, 10, **finite)),
           s=arrays(float, 3, elements=st.floats(0.1, 10, **finite)))
    def check(w, b, x, s):
        model = _linear_model(w, b)
        f = x @ w + b
        x = x[np.abs(f) > 1e-6]
        if not len(x):
            return
        res, x_adv = minimal_perturbation(model, x, norm=norm, scale=s, return_adversarial=True)
        d = res["distance"].to_numpy()
        np.testing.assert_allclose(d, _expected(x @ w + b, w, norm, s), rtol=1e-9)
        assert res["flipped"].all()
        delta = x_adv.to_numpy() - x
        # 0.999 of the step stays on the original side: the distance is minimal along it
        inside = model.predict(x + 0.999 * delta)
        np.testing.assert_array_equal(inside, model.predict(x))

    check()
