"""CovBat: covariance harmonisation on top of ComBat."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ext_data import covariance_distance, make_covariance_sites

from sitekit.exceptions import ModelFileError, UnknownSiteError, ValidationError
from sitekit.harmonize import ComBat, CovBat


@pytest.fixture
def covariance_sites():
    return make_covariance_sites()


def test_covbat_reduces_site_covariance_differences(covariance_sites):
    # Must-show: on data with site-specific covariance, the mean Frobenius distance between
    # per-site covariance matrices drops against plain ComBat.  Measured (seed 0):
    # raw 33.5, ComBat 17.4, CovBat 10.6 (ratio 0.61).
    X, sites, cov = covariance_sites
    raw = covariance_distance(X, sites)
    d_combat = covariance_distance(ComBat().fit_transform(X, sites=sites, covariates=cov), sites)
    model = CovBat()
    d_covbat = covariance_distance(model.fit_transform(X, sites=sites, covariates=cov), sites)
    assert d_combat < raw
    assert d_covbat < 0.75 * d_combat, (raw, d_combat, d_covbat)
    assert 1 <= model.n_components_ <= X.shape[1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_covbat_reduction_across_seeds(seed):
    X, sites, cov = make_covariance_sites(seed)
    d_combat = covariance_distance(ComBat().fit_transform(X, sites=sites, covariates=cov), sites)
    d_covbat = covariance_distance(CovBat().fit_transform(X, sites=sites, covariates=cov), sites)
    assert d_covbat < 0.9 * d_combat


def test_covbat_keeps_means_and_covariate_effects(covariance_sites):
    X, sites, cov = covariance_sites
    Y = ComBat().fit_transform(X, sites=sites, covariates=cov)
    Z = CovBat().fit_transform(X, sites=sites, covariates=cov)
    # site means per feature stay harmonised (the score stage re-centres on pooled axes)
    for s in np.unique(sites):
        m = sites == s
        np.testing.assert_allclose(Z[m].mean(), Y[m].mean(), atol=0.05 * X.std().mean())
    # the age slope survives as in ComBat
    age = cov["age"].to_numpy()
    slope = lambda A: np.polyfit(age, np.asarray(A), 1)[0]  # noqa: E731
    np.testing.assert_allclose(slope(Z), slope(Y), atol=0.01)


def test_covbat_pandas_in_out_and_transform_matches_fit_transform(covariance_sites):
    X, sites, cov = covariance_sites
    X = X.set_axis([f"r{i}" for i in range(len(X))])
    cov = cov.set_axis(X.index)
    model = CovBat(n_components=4)
    Z = model.fit_transform(X, sites=sites, covariates=cov)
    assert isinstance(Z, pd.DataFrame)
    assert list(Z.columns) == list(X.columns) and Z.index.equals(X.index)
    assert model.n_components_ == 4
    pd.testing.assert_frame_equal(model.transform(X, sites=sites, covariates=cov), Z)
    # row subsets of known sites give the same rows
    part = model.transform(X.iloc[::7], sites=sites[::7], covariates=cov.iloc[::7])
    np.testing.assert_allclose(part.to_numpy(), Z.iloc[::7].to_numpy(), atol=1e-10)
    assert list(model.get_feature_names_out()) == list(X.columns)


@pytest.mark.parametrize("n_components, expected", [(None, 20), (3, 3), (1.0, 20)])
def test_covbat_n_components_forms(covariance_sites, n_components, expected):
    X, sites, cov = covariance_sites
    model = CovBat(n_components=n_components).fit(X, sites=sites, covariates=cov)
    assert model.n_components_ == expected
    frac = CovBat(n_components=0.5).fit(X, sites=sites, covariates=cov)
    cum = np.cumsum(frac.explained_variance_ratio_)
    assert cum[frac.n_components_ - 1] >= 0.5 > (cum[frac.n_components_ - 2] if frac.n_components_ > 1 else 0)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "all", True])
def test_covbat_bad_n_components(covariance_sites, bad):
    X, sites, _ = covariance_sites
    with pytest.raises(ValidationError, match="n_components"):
        CovBat(n_components=bad).fit(X, sites=sites)


def test_covbat_too_many_components_warns(covariance_sites):
    X, sites, _ = covariance_sites
    with pytest.warns(UserWarning, match="exceeds"):
        model = CovBat(n_components=50).fit(X, sites=sites)
    assert model.n_components_ == X.shape[1]


def test_covbat_nan_cells_pass_through(covariance_sites):
    X, sites, cov = covariance_sites
    X = X.copy()
    X.iloc[3, 2] = np.nan
    X.iloc[100, 5] = np.nan
    Z = CovBat().fit_transform(X, sites=sites, covariates=cov)
    assert np.array_equal(np.isnan(Z.to_numpy()), np.isnan(X.to_numpy()))


def test_covbat_constant_feature_unchanged(covariance_sites):
    X, sites, _ = covariance_sites
    X = X.copy()
    X["f05"] = 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Z = CovBat().fit_transform(X, sites=sites)
    np.testing.assert_array_equal(Z["f05"].to_numpy(), 7.0)
    assert np.all(np.isfinite(Z.to_numpy()))


def test_covbat_unknown_site_raises(covariance_sites):
    X, sites, _ = covariance_sites
    model = CovBat().fit(X, sites=sites)
    with pytest.raises(UnknownSiteError):
        model.transform(X.iloc[:3], sites=["nowhere"] * 3)


def test_covbat_ref_site_rows_unchanged(covariance_sites):
    X, sites, cov = covariance_sites
    Z = CovBat(ref_site="s1").fit_transform(X, sites=sites, covariates=cov)
    m = sites == "s1"
    np.testing.assert_allclose(Z[m].to_numpy(), X[m].to_numpy(), atol=1e-9)


def test_covbat_save_load_roundtrip(tmp_path, covariance_sites):
    X, sites, cov = covariance_sites
    model = CovBat(n_components=0.9).fit(X, sites=sites, covariates=cov)
    path = model.save(tmp_path / "covbat.npz")
    loaded = CovBat.load(path)
    assert loaded.get_params() == model.get_params()
    pd.testing.assert_frame_equal(
        loaded.transform(X, sites=sites, covariates=cov), model.transform(X, sites=sites, covariates=cov)
    )
    with np.load(path, allow_pickle=False) as z:  # no pickle anywhere
        assert "__sitekit__" in z.files
    # a ComBat file is not a CovBat model, and tampering is detected
    ComBat().fit(X, sites=sites).save(tmp_path / "combat.npz")
    with pytest.raises(ModelFileError, match="not a sitekit CovBat model"):
        CovBat.load(tmp_path / "combat.npz")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["pca_mean"] = data["pca_mean"] + 1.0
    np.savez(tmp_path / "tampered.npz", **data)
    with pytest.raises(ModelFileError, match="checksum"):
        CovBat.load(tmp_path / "tampered.npz")


def test_covbat_sklearn_basics(covariance_sites):
    from sklearn.base import clone

    X, sites, _ = covariance_sites
    model = CovBat(n_components=2)
    assert clone(model).get_params() == model.get_params()
    assert model.fit(X.to_numpy(), sites=sites) is model
    out = model.transform(X.to_numpy(), sites=sites)
    assert isinstance(out, np.ndarray) and out.shape == X.shape


def test_covbat_adapt_new_site(tmp_path, covariance_sites):
    X, sites, cov = covariance_sites
    train = sites != "s2"
    model = CovBat().fit(X[train], sites=sites[train], covariates=cov[train])
    before = model.transform(X[train], sites=sites[train], covariates=cov[train])
    adapted = model.adapt(X[~train], sites=sites[~train], covariates=cov[~train])
    assert list(adapted.sites_) == ["s0", "s1", "s2"] and list(model.sites_) == ["s0", "s1"]
    pd.testing.assert_frame_equal(
        adapted.transform(X[train], sites=sites[train], covariates=cov[train]), before
    )
    out = adapted.transform(X, sites=sites, covariates=cov)
    raw_gap = np.abs(X[~train].mean() - X[train].mean()).mean()
    new_gap = np.abs(out[~train].mean() - out[train].mean()).mean()
    assert new_gap < 0.3 * raw_gap
    loaded = CovBat.load(adapted.save(tmp_path / "adapted.npz"))
    pd.testing.assert_frame_equal(loaded.transform(X, sites=sites, covariates=cov), out)


def test_covbat_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CovBat().transform(np.zeros((3, 2)), sites=["a", "b", "c"])


def test_covbat_more_features_than_samples():
    # n < p: the PCA runs on the sample Gram matrix; at most n - 1 axes carry variance
    rng = np.random.default_rng(2)
    sites = np.repeat(["a", "b", "c"], 8)
    X = rng.normal(size=(24, 40)) + (sites == "b")[:, None]
    model = CovBat(n_components=None)
    out = model.fit_transform(X, sites=sites)
    assert model.components_.shape[0] <= 23 and model.components_.shape[1] == 40
    np.testing.assert_allclose(model.components_ @ model.components_.T, np.eye(model.components_.shape[0]),
                               atol=1e-8)
    assert np.all(np.isfinite(out))


def test_covbat_all_constant_raises():
    sites = np.repeat(["a", "b"], 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValidationError, match="no feature varies"):
            CovBat().fit(np.ones((10, 3)), sites=sites)


# ------------------------------------------------------------------ issue 13/14 additions
DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("bad", ["sd", None, True])
def test_covbat_bad_pca_scaling(covariance_sites, bad):
    X, sites, _ = covariance_sites
    with pytest.raises(ValidationError, match="pca_scaling"):
        CovBat(pca_scaling=bad).fit(X, sites=sites)


def test_covbat_sample_scaling_divides_by_the_residual_sd(covariance_sites):
    """Regression (issue 14 item 2): the PCA input has unit sample SD per feature."""
    X, sites, cov = covariance_sites
    model = CovBat().fit(X, sites=sites, covariates=cov)
    combat = ComBat().fit(X, sites=sites, covariates=cov)
    resid = combat.transform(X, sites=sites, covariates=cov).to_numpy() - (
        combat.grand_mean_ + cov.to_numpy() @ combat.beta_
    )
    # pca_scale_ is in units of the pooled SD: times sqrt(sigma2) it is the residual SD
    np.testing.assert_allclose(model.pca_scale_ * np.sqrt(combat.var_pooled_),
                               resid.std(axis=0, ddof=1), rtol=1e-10)
    assert not np.allclose(model.pca_scale_, 1.0)  # the pooled scaling would be all ones
    pooled = CovBat(pca_scaling="pooled").fit(X, sites=sites, covariates=cov)
    np.testing.assert_array_equal(pooled.pca_scale_, 1.0)


def test_covbat_model_file_of_sitekit_0_1_loads_with_its_pooled_scaling():
    """A CovBat file written by sitekit 0.1 (before pca_scaling existed) keeps its results."""
    X, sites, cov = make_covariance_sites()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = CovBat.load(DATA / "covbat_v0_1.npz")
    assert model.pca_scaling == "pooled"
    expected = pd.read_csv(DATA / "covbat_v0_1_output.csv")
    out = model.transform(X, sites=sites, covariates=cov)
    np.testing.assert_allclose(out.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    refit = CovBat(n_components=0.9, pca_scaling="pooled").fit_transform(X, sites=sites, covariates=cov)
    np.testing.assert_allclose(refit.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)


def test_covbat_target_site_maps_onto_the_target(covariance_sites):
    X, sites, cov = covariance_sites
    out = CovBat(target_site="s1").fit_transform(X, sites=sites, covariates=cov)
    plain = CovBat().fit_transform(X, sites=sites, covariates=cov)
    ref = X[sites == "s1"].to_numpy()
    # every site lands on the target's feature means, closer than plain CovBat puts them
    for s in ("s0", "s2"):
        gap_t = np.abs(out[sites == s].mean().to_numpy() - ref.mean(axis=0)).mean()
        gap_p = np.abs(plain[sites == s].mean().to_numpy() - ref.mean(axis=0)).mean()
        assert gap_t < 0.5 * gap_p
    assert covariance_distance(out, sites) < 0.5 * covariance_distance(X, sites)
    with pytest.raises(ValidationError, match="target_site"):
        CovBat(target_site="nowhere").fit(X, sites=sites)
    with pytest.raises(ValidationError, match="cannot be combined"):
        CovBat(target_site="s1", ref_site="s0").fit(X, sites=sites)


def test_covbat_unseen_sites_adapt_equals_adapt(covariance_sites):
    X, sites, cov = covariance_sites
    train = sites != "s2"
    model = CovBat(unseen_sites="adapt").fit(X[train], sites=sites[train], covariates=cov[train])
    out = model.transform(X, sites=sites, covariates=cov)
    explicit = model.adapt(X[~train], sites=sites[~train], covariates=cov[~train]).transform(
        X, sites=sites, covariates=cov)
    pd.testing.assert_frame_equal(out, explicit)
    assert list(model.sites_) == ["s0", "s1"]  # transform does not change the model
    with pytest.raises(UnknownSiteError):
        CovBat().fit(X[train], sites=sites[train], covariates=cov[train]).transform(
            X, sites=sites, covariates=cov)
    with pytest.raises(ValidationError, match="unseen_sites"):
        CovBat(unseen_sites="ignore").fit(X, sites=sites)
