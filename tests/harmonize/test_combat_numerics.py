"""Numerics of ComBat at scale: extreme magnitudes, float32, the sampled non-parametric prior.

Regression tests of issue 15 item 3 (a feature of magnitude >= 1e155 came back all-NaN with
exit 0 and shifted the other features) and item 12 (non-parametric ComBat on 100,000
features never finished), and of issue 18 (float32 end to end, ``prior_features``).
"""

from __future__ import annotations

import warnings

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from sitekit.exceptions import CostWarning, NumericalError, ValidationError
from sitekit.harmonize import ComBat, CovBat, NestedComBat, _dask, _eb


def _table(n_per_site=(60, 80, 70), n_features=8, seed=0, covariates=False):
    rng = np.random.default_rng(seed)
    sites = np.repeat(np.array(["a", "b", "c"])[: len(n_per_site)], n_per_site)
    codes = np.searchsorted(["a", "b", "c"], sites)
    n = sites.size
    age = rng.uniform(20, 80, n)
    loc = rng.normal(0, 1, (3, n_features))
    scale = rng.uniform(0.6, 1.6, (3, n_features))
    X = 5.0 + loc[codes] + scale[codes] * rng.normal(size=(n, n_features))
    if covariates:
        X += 0.02 * age[:, None]
    X = pd.DataFrame(X, columns=[f"f{j}" for j in range(n_features)])
    cov = pd.DataFrame({"age": age}) if covariates else None
    return X, sites, cov


# --------------------------------------------------------------------------- magnitudes
@pytest.mark.parametrize("covariates", [False, True])
def test_regression_issue15_large_feature_sums_do_not_overflow(covariates):
    """Values ~1e153 (variance ~1e306 fits float64, but n times it does not) harmonise to
    the scaled result; before the fix the sum of squares overflowed and the feature came
    back all-NaN, and the other features moved."""
    X, sites, cov = _table(n_per_site=(300, 400, 350), covariates=covariates)
    base = ComBat().fit_transform(X, sites=sites, covariates=cov)
    big = X.copy()
    big["f2"] *= 1e153
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow on the way either
        out = ComBat().fit_transform(big, sites=sites, covariates=cov)
    assert np.isfinite(out.to_numpy()).all()
    np.testing.assert_allclose(out["f2"] / 1e153, base["f2"], rtol=1e-10)
    others = [c for c in X.columns if c != "f2"]
    np.testing.assert_allclose(out[others], base[others], rtol=1e-12, atol=1e-12)


def test_regression_issue15_tiny_feature_is_not_treated_as_constant():
    X, sites, _ = _table(n_per_site=(300, 400, 350))
    base = ComBat().fit_transform(X, sites=sites)
    tiny = X.copy()
    tiny["f1"] *= 1e-153  # squares are ~1e-306: near underflow
    out = ComBat().fit_transform(tiny, sites=sites)
    np.testing.assert_allclose(out["f1"] / 1e-153, base["f1"], rtol=1e-10)


def _with_huge(X):
    huge = X.copy()
    huge["f3"] *= 1e155  # variance ~1e310: beyond float64
    return huge


def test_regression_issue15_variance_beyond_float64_is_refused_comBat():
    X, sites, _ = _table()
    with pytest.raises(NumericalError, match=r"'f3'.*above the float64 range.*rescale") as exc:
        ComBat().fit(_with_huge(X), sites=sites)
    assert list(exc.value.features) == [3]


def test_variance_below_float64_is_refused_not_called_constant():
    X, sites, _ = _table()
    tiny = X.copy()
    tiny["f1"] *= 1e-160  # variance ~1e-320: subnormal, precision lost
    with pytest.raises(NumericalError, match=r"'f1'.*below the float64 range"):
        ComBat().fit(tiny, sites=sites)


def test_regression_issue15_variance_beyond_float64_is_refused_covbat():
    X, sites, _ = _table()
    with pytest.raises(NumericalError, match="'f3'"):
        CovBat().fit_transform(_with_huge(X), sites=sites)


def test_regression_issue15_variance_beyond_float64_is_refused_nested():
    X, sites, _ = _table()
    rng = np.random.default_rng(1)
    batches = pd.DataFrame({"vendor": sites, "recon": rng.choice(["x", "y"], sites.size)})
    with pytest.raises(NumericalError, match="'f3'"):
        NestedComBat(batch_cols=["vendor", "recon"]).fit_transform(_with_huge(X), batches=batches)


def test_regression_issue15_variance_beyond_float64_is_refused_dask():
    X, sites, _ = _table()
    ddf = dd.from_pandas(_with_huge(X), npartitions=3)
    with pytest.raises(NumericalError, match="'f3'"):
        _dask.fit(ComBat(), ddf, sites=sites)


def test_regression_issue15_dask_large_feature_equals_in_memory():
    X, sites, cov = _table(n_per_site=(300, 400, 350), covariates=True)
    big = X.copy()
    big["f2"] *= 1e153
    expected = ComBat().fit_transform(big, sites=sites, covariates=cov)
    ddf = dd.from_pandas(big, npartitions=4)
    model = _dask.fit(ComBat(), ddf, sites=sites, covariates=cov)
    got = _dask.transform(model, ddf, sites=sites, covariates=cov).compute()
    unit = np.where(X.columns == "f2", 1e153, 1.0)  # compare in unscaled units
    sd = (expected / unit).std().to_numpy()
    assert np.max(np.abs(got.to_numpy() / unit - expected.to_numpy() / unit) / sd) < 1e-10


def test_adjust_guard_raises_instead_of_returning_nan():
    """The final guard: a non-finite output for finite input is an error, never data."""
    Y = np.array([[1.0, 2.0], [3.0, 1e308]])
    with pytest.raises(NumericalError) as exc:
        _eb.adjust(
            Y, np.array([0, 0]), grand_mean=np.zeros(2), var_pooled=np.ones(2),
            gamma_star=np.zeros((1, 2)), delta_star=np.array([[1.0, 1e-10]]),
            keep=np.zeros((1, 2), dtype=bool),
        )
    assert list(exc.value.features) == [1]
    # NaN in, NaN out is fine
    Y[0, 0] = np.nan
    out = _eb.adjust(
        Y[:, :1], np.array([0, 0]), grand_mean=np.zeros(1), var_pooled=np.ones(1),
        gamma_star=np.zeros((1, 1)), delta_star=np.ones((1, 1)), keep=np.zeros((1, 1), dtype=bool),
    )
    assert np.isnan(out[0, 0]) and out[1, 0] == 3.0


def test_transform_names_the_feature_that_would_overflow():
    X, sites, _ = _table()
    model = ComBat().fit(X, sites=sites)
    model.gamma_star_ = model.gamma_star_.copy()
    model.delta_star_ = model.delta_star_.copy()
    model.gamma_star_[1, 4] = 1e308  # with the scale below, sends finite values to -inf
    model.delta_star_[1, 4] = 1e-4
    with pytest.raises(NumericalError, match="'f4'"):
        model.transform(X, sites=sites)


def test_extreme_scale_is_a_power_of_two_only_where_needed():
    s = _eb.extreme_scale(np.array([-3.0, 1e150, 1e-150, 0.0, np.nan]),
                          np.array([4.0, 2e150, 2e-150, 0.0, np.nan]))
    assert s[0] == 1.0 and s[3] == 1.0 and s[4] == 1.0
    for v, big in ((s[1], 2e150), (s[2], 2e-150)):
        m, _ = np.frexp(v)
        assert m == 0.5 and 0.5 <= big / v < 1.0


# --------------------------------------------------------------------------- float32
@pytest.mark.parametrize("params", [{}, {"parametric": False}, {"ref_site": "b"}])
def test_float32_in_float32_out_within_1e5_sd(params):
    X, sites, cov = _table(covariates=True)
    X32 = X.astype(np.float32)
    out32 = ComBat(**params).fit_transform(X32, sites=sites, covariates=cov)
    out64 = ComBat(**params).fit_transform(X32.astype(np.float64), sites=sites, covariates=cov)
    assert (out32.dtypes == np.float32).all()
    sd = out64.std().to_numpy()
    assert np.max(np.abs(out32.to_numpy(np.float64) - out64.to_numpy()) / sd) < 1e-5
    arr = ComBat(**params).fit(X32.to_numpy(), sites=sites, covariates=cov).transform(
        X32.to_numpy(), sites=sites, covariates=cov)
    assert arr.dtype == np.float32


def test_float32_model_statistics_are_float64():
    X, sites, _ = _table()
    model = ComBat().fit(X.astype(np.float32), sites=sites)
    assert model.grand_mean_.dtype == np.float64 and model.var_pooled_.dtype == np.float64
    ref = ComBat().fit(X.astype(np.float32).astype(np.float64), sites=sites)
    np.testing.assert_allclose(model.var_pooled_, ref.var_pooled_, rtol=1e-12)


def test_float32_dask_partitions_stay_float32():
    X, sites, cov = _table(covariates=True)
    X32 = X.astype(np.float32)
    ddf = dd.from_pandas(X32, npartitions=3)
    model = _dask.fit(ComBat(), ddf, sites=sites, covariates=cov)
    out = _dask.transform(model, ddf, sites=sites, covariates=cov)
    assert (out.dtypes == np.float32).all()
    got = out.compute()
    assert (got.dtypes == np.float32).all()
    expected = ComBat().fit_transform(X32, sites=sites, covariates=cov)
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())


# --------------------------------------------------------------------------- Dask one pass
def test_dask_fit_reads_each_partition_once_with_covariates():
    X, sites, cov = _table(covariates=True)
    reads = []

    def load(i, part):
        reads.append(i)
        return part

    from dask import delayed

    parts = [delayed(load)(i, X.iloc[i * 70:(i + 1) * 70]) for i in range(3)]
    ddf = dd.from_delayed(parts, meta=X.iloc[:0])
    model = _dask.fit(ComBat(), ddf, sites=sites, covariates=cov)
    data_reads = len(reads)
    expected = ComBat().fit(X, sites=sites, covariates=cov)
    for name in ("beta_", "grand_mean_", "var_pooled_", "gamma_star_", "delta_star_"):
        np.testing.assert_allclose(getattr(model, name), getattr(expected, name), rtol=1e-10)
    # one read of each partition for the statistics (plus one for the row counts, which a
    # Parquet reader answers from metadata)
    assert data_reads <= 2 * 3


def test_dask_one_pass_matches_two_pass_fallback():
    """A block with a NaN cell sends the fit down the two-pass route: same model."""
    X, sites, cov = _table(covariates=True)
    Xn = X.copy()
    Xn.iloc[5, 2] = np.nan
    one = _dask.fit(ComBat(), dd.from_pandas(X, npartitions=3), sites=sites, covariates=cov)
    ref = ComBat().fit(X, sites=sites, covariates=cov)
    np.testing.assert_allclose(one.gamma_star_, ref.gamma_star_, rtol=1e-10)
    two = _dask.fit(ComBat(), dd.from_pandas(Xn, npartitions=3), sites=sites, covariates=cov)
    ref_n = ComBat().fit(Xn, sites=sites, covariates=cov)
    np.testing.assert_allclose(two.gamma_star_, ref_n.gamma_star_, rtol=1e-10)


# --------------------------------------------------------------------------- non-parametric
def _wide(n_per_site=(30, 40), n_features=600, seed=0):
    rng = np.random.default_rng(seed)
    k = len(n_per_site)
    sites = np.repeat(np.arange(k), n_per_site)
    loc = rng.normal(0, 0.5, (k, n_features))
    scale = np.sqrt(1 / rng.gamma(8, 1 / 7, (k, n_features)))
    X = 3.0 + loc[sites] + scale[sites] * rng.normal(size=(sites.size, n_features))
    return X, sites


def test_prior_features_at_least_n_features_is_exact():
    X, sites = _wide(n_features=300)
    exact = ComBat(parametric=False, prior_features=None).fit(X, sites=sites)
    full = ComBat(parametric=False, prior_features=300).fit(X, sites=sites)
    auto = ComBat(parametric=False).fit(X, sites=sites)  # "auto": exact at this size
    np.testing.assert_array_equal(full.gamma_star_, exact.gamma_star_)
    np.testing.assert_array_equal(auto.gamma_star_, exact.gamma_star_)


@pytest.mark.parametrize("n_per_site", [(6, 8), (30, 40), (300, 250)])
def test_sampled_prior_estimates_the_exact_posterior(n_per_site):
    """Small sites (flat weights) and large sites (peaked weights): the Monte Carlo error
    falls as the support grows, and at half the features it is a small fraction of the
    EB shrinkage itself."""
    X, sites = _wide(n_per_site=n_per_site, n_features=1500, seed=2)
    exact = ComBat(parametric=False, prior_features=None).fit_transform(X, sites=sites)
    sd = X.std(axis=0)
    err = {
        k: np.abs(ComBat(parametric=False, prior_features=k, random_state=0)
                  .fit_transform(X, sites=sites) - exact) / sd
        for k in (150, 750)
    }
    assert np.median(err[750]) < np.median(err[150])
    assert np.quantile(err[750], 0.99) < np.quantile(err[150], 0.99)
    assert err[750].max() < 0.02, err[750].max()
    raw = ComBat(parametric=False, eb=False).fit_transform(X, sites=sites)
    assert np.abs(raw - exact).max(axis=None) / 10 > (err[750] * sd).max()


def test_regression_issue18_sampled_prior_within_1e3_sd_on_outlying_features():
    """Large sites (500 samples each) and site variances with an inverse-gamma tail: the
    features of the tail resemble few others, and their likelihood weights lie beyond the
    exact neighbourhood in gamma order.  With a uniform support their error reached 3.2e-3
    SD here (1.4e-3 to 4.7e-3 over four seeds); the support drawn more densely in sparse
    regions keeps every value within the 1e-3 SD target of issue 18 (3e-4 to 8.5e-4)."""
    rng = np.random.default_rng(1)
    n_features, k = 4000, 4
    sites = np.repeat(np.arange(k), 500)
    loc = rng.normal(0, 1, (k, n_features))
    scale = np.sqrt(1 / rng.gamma(8, 1 / 7, (k, n_features)))
    X = 50.0 + loc[sites] + scale[sites] * rng.normal(size=(sites.size, n_features))
    exact = ComBat(parametric=False, prior_features=None).fit_transform(X, sites=sites)
    sampled = ComBat(parametric=False, prior_features=800, random_state=0).fit_transform(X, sites=sites)
    err = np.abs(sampled - exact) / X.std(axis=0)
    assert err.max() < 1e-3, err.max()
    assert np.quantile(err, 0.99) < 1e-4


def test_support_inclusion_favours_sparse_features():
    rng = np.random.default_rng(0)
    F = 3000
    gamma_hat = rng.normal(0, 0.3, F)
    delta_hat = np.exp(rng.normal(0, 0.1, F))
    gamma_hat[:10] = 2.5  # a small cluster far from the rest
    n = np.full(F, 200.0)
    p = _eb.support_inclusion(n, gamma_hat, delta_hat, 300)
    assert p.sum() == pytest.approx(300)
    assert np.all((p > 0) & (p <= 1))
    np.testing.assert_array_equal(p[:10], 1.0)
    assert np.median(p[10:]) < 0.1
    np.testing.assert_array_equal(_eb.support_inclusion(n, gamma_hat, delta_hat, F), 1.0)


def test_sampled_prior_with_every_feature_drawn_is_exact():
    """Horvitz-Thompson weights of 1 and the whole support: the exact posterior means."""
    rng = np.random.default_rng(3)
    F = 500
    n = np.full(F, 40.0)
    gamma_hat = rng.normal(0, 0.5, F)
    delta_hat = np.exp(rng.normal(0, 0.3, F))
    s1 = n * gamma_hat
    m2 = (n - 1) * delta_hat
    g, d = _eb.nonparametric_eb(n, s1, m2, gamma_hat, delta_hat)
    gs, ds = _eb.nonparametric_eb(n, s1, m2, gamma_hat, delta_hat, support=np.arange(F),
                                  inclusion=np.ones(F), block_cells=5000)
    np.testing.assert_allclose(gs, g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ds, d, rtol=1e-12)


def test_sampled_prior_is_seeded():
    X, sites = _wide(n_features=800)
    a = ComBat(parametric=False, prior_features=100, random_state=3).fit(X, sites=sites)
    b = ComBat(parametric=False, prior_features=100, random_state=3).fit(X, sites=sites)
    c = ComBat(parametric=False, prior_features=100, random_state=4).fit(X, sites=sites)
    np.testing.assert_array_equal(a.gamma_star_, b.gamma_star_)
    assert not np.array_equal(a.gamma_star_, c.gamma_star_)


def test_exact_nonparametric_warns_with_a_cost_estimate(monkeypatch):
    from sitekit.harmonize import _combat

    monkeypatch.setattr(_combat, "_SLOW_SECONDS", 1e-6)  # make 600 features "slow"
    X, sites = _wide(n_features=600)
    with pytest.warns(CostWarning, match=r"prior_features=2000.*Monte Carlo"):
        ComBat(parametric=False, prior_features=None).fit(X, sites=sites)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CostWarning)
        ComBat(parametric=False, prior_features=100, random_state=0).fit(X, sites=sites)
        ComBat(parametric=True, prior_features=None).fit(X, sites=sites)


def test_auto_samples_beyond_the_exact_limit(monkeypatch):
    from sitekit.harmonize import _combat

    monkeypatch.setattr(_combat, "_AUTO_EXACT_FEATURES", 200)
    monkeypatch.setattr(_combat, "_AUTO_SUPPORT", 200)
    X, sites = _wide(n_features=600)
    auto = ComBat(parametric=False, random_state=0).fit(X, sites=sites)
    sampled = ComBat(parametric=False, prior_features=200, random_state=0).fit(X, sites=sites)
    np.testing.assert_array_equal(auto.gamma_star_, sampled.gamma_star_)


@pytest.mark.parametrize("bad", [1, 2.5, "all", True])
def test_prior_features_validation(bad):
    X, sites = _wide(n_features=20)
    with pytest.raises(ValidationError, match="prior_features"):
        ComBat(parametric=False, prior_features=bad).fit(X, sites=sites)


def test_random_state_validation():
    X, sites = _wide(n_features=20)
    with pytest.raises(ValidationError, match="random_state"):
        ComBat(random_state="seed").fit(X, sites=sites)


@pytest.mark.parametrize("params", [{}, {"smooth": ["age"]}, {"parametric": False}])
def test_dask_labels_carried_with_parquet_blocks_equal_in_memory(tmp_path, params):
    """Sites and covariates given as columns of the same Parquet table travel with the
    feature blocks (each block builds its own design rows: no extra pass to count rows)."""
    X, sites, cov = _table(covariates=True)
    cov = cov.assign(sex=np.where(np.arange(len(sites)) % 3 == 0, "F", "M"))
    table = pd.concat([X, cov], axis=1).assign(site=sites)
    for i in range(3):
        table.iloc[i * 70:(i + 1) * 70].to_parquet(tmp_path / f"part{i}.parquet")
    ddf = dd.read_parquet(tmp_path)
    feats = list(X.columns)
    blocks = _dask._Blocks(ddf[feats], ddf["site"], ddf[["age", "sex"]])
    assert blocks.carry is not None
    model = _dask.fit(ComBat(**params), ddf[feats], sites=ddf["site"], covariates=ddf[["age", "sex"]])
    ref = ComBat(**params).fit(X, sites=sites, covariates=cov)
    for name in ("beta_", "grand_mean_", "var_pooled_", "gamma_star_", "delta_star_"):
        np.testing.assert_allclose(getattr(model, name), getattr(ref, name), rtol=1e-10, atol=1e-12)
