"""ComBat-GAM: spline terms for continuous covariates (ComBat(smooth=...))."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sitekit.exceptions import DataWarning, ValidationError
from sitekit.harmonize import ComBat


def make_quadratic_age(seed=0, n=100, p=10):
    """Three sites with shifted age ranges and a U-shaped (quadratic) age effect."""
    rng = np.random.default_rng(seed)
    sites = np.repeat(["a", "b", "c"], n)
    age = np.concatenate([rng.uniform(20, 50, n), rng.uniform(35, 65, n), rng.uniform(50, 80, n)])
    curve = ((age - 50.0) / 15.0) ** 2
    amp = rng.uniform(0.5, 1.5, p)
    X = curve[:, None] * amp + rng.normal(0.0, 0.5, (3 * n, p))
    for s in "abc":
        m = sites == s
        X[m] = X[m] * rng.uniform(0.8, 1.25, p) + rng.normal(0.0, 0.8, p)
    cov = pd.DataFrame({"age": age})
    return pd.DataFrame(X, columns=[f"f{j}" for j in range(p)]), sites, cov, amp


def _curvature(Y, age, amp):
    """Mean fitted quadratic coefficient relative to the true one (1 = preserved)."""
    t = (age - 50.0) / 15.0
    return float(np.mean([np.polyfit(t, Y.iloc[:, j], 2)[0] / amp[j] for j in range(Y.shape[1])]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_age_effect_survives_with_smoothing(seed):
    # Must-show.  Measured (seeds 0/1/2), curvature relative to the truth (1.0):
    # linear ComBat 0.76 / 0.76 / 0.76 (flattened: the site terms absorb part of the curve,
    # because the sites' age ranges differ); ComBat(smooth=["age"]) 1.03 / 1.03 / 1.00.
    X, sites, cov, amp = make_quadratic_age(seed)
    age = cov["age"].to_numpy()
    linear = ComBat().fit_transform(X, sites=sites, covariates=cov)
    smooth = ComBat(smooth=["age"]).fit_transform(X, sites=sites, covariates=cov)
    c_lin, c_smooth = _curvature(linear, age, amp), _curvature(smooth, age, amp)
    assert abs(c_smooth - 1.0) < 0.1, c_smooth
    assert abs(c_lin - 1.0) > 0.15, c_lin


def test_smooth_dict_knots_and_state():
    X, sites, cov, _ = make_quadratic_age(0)
    cov = cov.assign(sex=np.where(np.arange(len(cov)) % 2, "F", "M"))
    model = ComBat(smooth={"age": 7}).fit(X, sites=sites, covariates=cov)
    # 7 knots, cubic, no bias column: 7 + 3 - 2 = 8 basis columns, plus sex[M]
    assert model.beta_.shape == (9, X.shape[1])
    assert model.covariate_columns_[0] == "sex[M]"
    assert all(c.startswith("age[spline") for c in model.covariate_columns_[1:])
    knots = model.smooth_["age"]["knots"]
    assert len(knots) == 7
    np.testing.assert_allclose([knots[0], knots[-1]], [cov["age"].min(), cov["age"].max()])


def test_smooth_save_load_and_new_data(tmp_path):
    X, sites, cov, _ = make_quadratic_age(1)
    model = ComBat(smooth=["age"]).fit(X, sites=sites, covariates=cov)
    path = model.save(tmp_path / "gam.npz")
    with np.load(path, allow_pickle=False) as z:
        assert "smooth.age.knots" in z.files
    loaded = ComBat.load(path)
    assert loaded.smooth == ["age"]
    pd.testing.assert_frame_equal(
        loaded.transform(X, sites=sites, covariates=cov), model.transform(X, sites=sites, covariates=cov)
    )
    part = model.transform(X.iloc[::5], sites=sites[::5], covariates=cov.iloc[::5])
    np.testing.assert_allclose(part.to_numpy(), model.transform(X, sites=sites, covariates=cov).iloc[::5])


def test_smooth_outside_training_range_warns_and_extrapolates_linearly():
    X, sites, cov, _ = make_quadratic_age(2)
    model = ComBat(smooth=["age"]).fit(X, sites=sites, covariates=cov)
    lo, hi = cov["age"].min(), cov["age"].max()
    new_age = pd.DataFrame({"age": [hi + 5.0, hi + 10.0, hi + 15.0]})
    Xn = X.iloc[:3]
    with pytest.warns(DataWarning, match=r"outside the training range"):
        out = model.transform(Xn, sites=sites[:3], covariates=new_age)
    assert np.all(np.isfinite(out.to_numpy()))
    # linear continuation: the spline part of the mean changes by equal steps
    with pytest.warns(DataWarning):
        basis = model._extra_design(new_age, 3)
    effect = basis @ model.beta_
    steps = np.diff(effect, axis=0)
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-8, atol=1e-10)
    # inside the range: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        model.transform(Xn, sites=sites[:3], covariates=pd.DataFrame({"age": [lo, (lo + hi) / 2, hi]}))


def test_smooth_validation():
    X, sites, cov, _ = make_quadratic_age(0)
    with pytest.raises(ValidationError, match="smooth"):
        ComBat(smooth=["bmi"]).fit(X, sites=sites, covariates=cov)
    with pytest.raises(ValidationError, match="smooth"):
        ComBat(smooth=["age"]).fit(X, sites=sites)
    with pytest.raises(ValidationError, match="n_knots|knots"):
        ComBat(smooth={"age": 1}).fit(X, sites=sites, covariates=cov)
    cat = cov.assign(group=np.where(cov["age"] > 50, "old", "young"))
    with pytest.raises(ValidationError, match="continuous"):
        ComBat(smooth=["group"]).fit(X, sites=sites, covariates=cat)
    with pytest.raises(ValidationError, match="smooth"):
        ComBat(smooth="age").fit(X, sites=sites, covariates=cov)


def test_smooth_with_adapt():
    X, sites, cov, amp = make_quadratic_age(0)
    train = sites != "b"
    model = ComBat(smooth=["age"]).fit(X[train], sites=sites[train], covariates=cov[train])
    adapted = model.adapt(X[~train], sites=sites[~train], covariates=cov[~train])
    out = adapted.transform(X, sites=sites, covariates=cov)
    assert _curvature(out, cov["age"].to_numpy(), amp) == pytest.approx(1.0, abs=0.15)
