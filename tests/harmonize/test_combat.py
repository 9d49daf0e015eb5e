"""Behaviour of sitekit.harmonize.ComBat: API, edge cases, new data, persistence."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
from combat_data import make_sites_data

from sitekit.exceptions import (
    ConfoundingError,
    DataWarning,
    MissingFileError,
    ModelFileError,
    OutputExistsError,
    SitekitWarning,
    UnknownSiteError,
    ValidationError,
)
from sitekit.harmonize import ComBat, combat


def site_spread(Xh, sites):
    """Largest difference between site means, in units of the pooled SD, per feature."""
    Xh = np.asarray(Xh)
    sites = np.asarray(sites)
    means = np.array([Xh[sites == s].mean(axis=0) for s in np.unique(sites)])
    return (means.max(axis=0) - means.min(axis=0)) / Xh.std(axis=0)


# ------------------------------------------------------------------ basics
def test_removes_site_effects_and_keeps_pandas(data):
    X, sites, _ = data
    before = site_spread(X, sites)
    out = ComBat().fit_transform(X, sites=sites)
    assert isinstance(out, pd.DataFrame)
    assert out.index.equals(X.index) and out.columns.equals(X.columns)
    assert (site_spread(out, sites) < 0.3 * before).all()


def test_numpy_in_numpy_out(data):
    X, sites, _ = data
    out = ComBat().fit_transform(X.to_numpy(), sites=sites.to_numpy())
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, ComBat().fit_transform(X, sites=sites).to_numpy(), rtol=0, atol=1e-12)


def test_fitted_attributes(data_cov):
    X, sites, cov = data_cov
    m = ComBat().fit(X, sites=sites, covariates=cov)
    K, F = 3, X.shape[1]
    assert list(m.sites_) == ["site0", "site1", "site2"]
    assert m.n_features_in_ == F and list(m.feature_names_in_) == list(X.columns)
    for name in ("gamma_star_", "delta_star_", "gamma_hat_", "delta_hat_", "site_coef_", "n_per_site_"):
        assert getattr(m, name).shape == (K, F)
    assert m.grand_mean_.shape == (F,) and m.var_pooled_.shape == (F,)
    assert m.beta_.shape == (2, F)
    assert m.covariate_columns_ == ["age", "sex[M]"]
    assert list(m.priors_.columns) == [
        "site", "n_samples", "n_features_used", "gamma_bar", "tau2", "a_prior", "b_prior",
        "eb", "mean_only", "n_iter", "converged",
    ]
    assert m.priors_["n_samples"].tolist() == [20, 30, 25]
    assert m.priors_["eb"].all() and m.priors_["converged"].all()


def test_fit_transform_equals_fit_then_transform(data_cov):
    X, sites, cov = data_cov
    a = ComBat().fit_transform(X, sites=sites, covariates=cov)
    b = ComBat().fit(X, sites=sites, covariates=cov).transform(X, sites=sites, covariates=cov)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_combat_function_pairs_the_class(data):
    X, sites, _ = data
    pd.testing.assert_frame_equal(
        combat(X, sites=sites, parametric=False), ComBat(parametric=False).fit_transform(X, sites=sites)
    )


def test_eb_false_uses_raw_estimates(data):
    X, sites, _ = data
    m = ComBat(eb=False).fit(X, sites=sites)
    np.testing.assert_array_equal(m.gamma_star_, m.gamma_hat_)
    np.testing.assert_array_equal(m.delta_star_, m.delta_hat_)
    # without EB each site ends with mean = grand mean and pooled-variance scale exactly
    out = m.transform(X, sites=sites).to_numpy()
    for s in m.sites_:
        rows = (sites == s).to_numpy()
        np.testing.assert_allclose(out[rows].mean(axis=0), m.grand_mean_, rtol=1e-10)


def test_mean_only_keeps_scale_ratio(data):
    X, sites, _ = data
    m = ComBat(mean_only=True).fit(X, sites=sites)
    assert (m.delta_star_ == 1).all()
    out = m.transform(X, sites=sites).to_numpy()
    rows = (sites == "site1").to_numpy()
    np.testing.assert_allclose(out[rows].std(axis=0), X.to_numpy()[rows].std(axis=0), rtol=1e-12)


@pytest.mark.parametrize("bad", [{"eb": "yes"}, {"parametric": 1}, {"tol": 0}, {"max_iter": 0},
                                 {"categorical": "sex"}])
def test_parameters_are_validated(data, bad):
    X, sites, _ = data
    with pytest.raises(ValidationError, match=f"'{next(iter(bad))}' parameter of ComBat"):
        ComBat(**bad).fit(X, sites=sites)


def test_missing_sites_argument(data):
    X, _, _ = data
    with pytest.raises(ValidationError, match="sites="):
        ComBat().fit(X, sites=None)


# ------------------------------------------------------------------ edge cases
def test_one_sample_site_is_mean_only_for_that_site_only():
    X, sites, _ = make_sites_data(sizes=(1, 30, 25), seed=3)
    with pytest.warns(DataWarning, match="single sample"):
        m = ComBat().fit(X, sites=sites)
    assert (m.delta_star_[0] == 1).all()
    assert (m.delta_star_[1:] != 1).all()  # sva would switch every site to mean-only
    assert m.priors_["mean_only"].tolist() == [True, False, False]
    assert np.isfinite(m.transform(X, sites=sites).to_numpy()).all()


def test_constant_feature_returned_unchanged():
    X, sites, _ = make_sites_data(seed=4)
    X["f2"] = 7.5
    with pytest.warns(DataWarning, match=r"'f2' are constant; they are returned unchanged"):
        out = ComBat().fit_transform(X, sites=sites)
    assert (out["f2"] == 7.5).all()
    assert not np.allclose(out["f1"], X["f1"])


def test_feature_constant_within_a_site_returned_unchanged():
    X, sites, _ = make_sites_data(seed=5)
    X.loc[(sites == "site1").to_numpy(), "f3"] = 2.0
    with pytest.warns(DataWarning, match="constant within a site"):
        m = ComBat().fit(X, sites=sites)
    out = m.transform(X, sites=sites)
    pd.testing.assert_series_equal(out["f3"], X["f3"])
    assert not m.adjusted_[:, 3].any()
    # the constant feature does not enter the priors
    assert (m.priors_["n_features_used"] == X.shape[1] - 1).all()


def test_feature_all_nan_within_a_site():
    X, sites, _ = make_sites_data(seed=6)
    rows = (sites == "site2").to_numpy()
    X.loc[rows, "f0"] = np.nan
    with pytest.warns(DataWarning, match=r"Site 'site2' has no observed value of feature\(s\) 'f0'"):
        m = ComBat().fit(X, sites=sites)
    out = m.transform(X, sites=sites)
    assert out.loc[rows, "f0"].isna().all()
    assert out.loc[~rows, "f0"].notna().all()
    assert not np.allclose(out.loc[~rows, "f0"], X.loc[~rows, "f0"])  # other sites adjusted
    # a new sample of site2 that has f0 keeps it unchanged (nothing was learnt about it)
    new = X.iloc[[0]].copy()
    new.iloc[0, 0] = 12.0
    res = m.transform(new, sites=["site2"])
    assert res.iloc[0, 0] == 12.0


def test_nan_cells_come_back_nan_everything_else_finite():
    X, sites, _ = make_sites_data(seed=7)
    rng = np.random.default_rng(0)
    mask = rng.random(X.shape) < 0.05
    X = X.mask(mask)
    out = ComBat().fit_transform(X, sites=sites)
    np.testing.assert_array_equal(out.isna().to_numpy(), mask)


def test_inf_is_an_error_naming_the_feature(data):
    X, sites, _ = data
    X = X.copy()
    X.iloc[2, 4] = np.inf
    with pytest.raises(ValidationError, match="'f4' contain infinite values"):
        ComBat().fit(X, sites=sites)


def test_single_feature_falls_back_to_no_eb(data):
    X, sites, _ = data
    one = X[["f1"]]
    with pytest.warns(DataWarning, match="priors could not be estimated"):
        out = ComBat().fit_transform(one, sites=sites)
    pd.testing.assert_frame_equal(out, ComBat(eb=False).fit_transform(one, sites=sites))


def test_single_site_is_an_error(data):
    X, _, _ = data
    with pytest.raises(ValidationError, match="nothing to harmonise"):
        ComBat().fit(X, sites=["a"] * len(X))


def test_confounded_covariate_is_an_error_naming_it(data):
    X, sites, _ = data
    cov = pd.DataFrame({"scanner": sites.map({"site0": "x", "site1": "y", "site2": "y"}),
                        "age": np.arange(len(X), dtype=float)}, index=X.index)
    with pytest.raises(ConfoundingError, match=r"\['scanner\[y\]'\] are confounded with site"):
        ComBat().fit(X, sites=sites, covariates=cov)


def test_collinear_covariates_are_an_error(data):
    X, sites, _ = data
    age = np.random.default_rng(1).uniform(20, 80, len(X))
    cov = pd.DataFrame({"age": age, "age_months": age * 12}, index=X.index)
    with pytest.raises(ConfoundingError, match="age"):
        ComBat().fit(X, sites=sites, covariates=cov)


def test_unseen_categorical_level_at_transform(data_cov):
    X, sites, cov = data_cov
    m = ComBat().fit(X, sites=sites, covariates=cov)
    cov2 = cov.copy()
    cov2.iloc[0, 1] = "X"
    with pytest.raises(UnknownSiteError, match=r"'sex' has level\(s\) \['X'\] not seen in fit"):
        m.transform(X, sites=sites, covariates=cov2)


def test_missing_covariates_at_transform(data_cov):
    X, sites, cov = data_cov
    m = ComBat().fit(X, sites=sites, covariates=cov)
    with pytest.raises(ValidationError, match="pass them as covariates="):
        m.transform(X, sites=sites)


def test_covariate_dtype_detection_and_override(data_cov):
    X, sites, cov = data_cov
    cov = cov.assign(grade=np.random.default_rng(2).integers(1, 4, len(X)))
    auto = ComBat().fit(X, sites=sites, covariates=cov)
    assert auto.covariate_columns_ == ["age", "sex[M]", "grade"]
    forced = ComBat(categorical=["grade"]).fit(X, sites=sites, covariates=cov)
    assert forced.covariate_columns_ == ["age", "sex[M]", "grade[2]", "grade[3]"]
    with pytest.raises(ValidationError, match="declared continuous"):
        ComBat(continuous=["sex"]).fit(X, sites=sites, covariates=cov)


def test_non_numeric_feature_columns_are_named(data):
    X, sites, _ = data
    X = X.assign(scanner="GE", note=None)
    with pytest.raises(ValidationError, match="'scanner', 'note' are not numeric"):
        ComBat().fit(X, sites=sites)


def test_duplicate_column_names(data):
    X, sites, _ = data
    X = X.rename(columns={"f1": "f0"})
    with pytest.raises(ValidationError, match="duplicate column name.*'f0'"):
        ComBat().fit(X, sites=sites)


def test_sites_as_strings_or_ints(data):
    X, sites, _ = data
    codes = sites.map({"site0": 10, "site1": 20, "site2": 30})
    a = ComBat().fit_transform(X, sites=sites)
    m = ComBat().fit(X, sites=codes)
    assert list(m.sites_) == [10, 20, 30]
    pd.testing.assert_frame_equal(a, m.transform(X, sites=codes))
    # ints that came back as text from a table are accepted
    pd.testing.assert_frame_equal(a, m.transform(X, sites=codes.astype(str)))


def test_misaligned_indexes_are_aligned_by_label(data_cov):
    X, sites, cov = data_cov
    ref = ComBat().fit_transform(X, sites=sites, covariates=cov)
    order = np.random.default_rng(0).permutation(len(X))
    out = ComBat().fit_transform(X, sites=sites.iloc[order], covariates=cov.iloc[order[::-1]])
    pd.testing.assert_frame_equal(out, ref)


def test_indexes_with_other_labels_are_an_error(data):
    X, sites, _ = data
    with pytest.raises(ValidationError, match="index of 'sites' does not match the index of X"):
        ComBat().fit(X, sites=sites.reset_index(drop=True))
    # a plain array is matched by position
    ComBat().fit(X, sites=sites.to_numpy())


def test_length_mismatch(data):
    X, sites, _ = data
    with pytest.raises(ValidationError, match="'sites' has 74 rows but X has 75"):
        ComBat().fit(X, sites=sites.to_numpy()[:-1])


def test_nonparametric_finite_with_many_samples_per_site():
    X, sites, _ = make_sites_data(sizes=(2000, 2000), n_features=20, seed=8, as_frame=False)
    out = ComBat(parametric=False).fit_transform(X, sites=sites)
    assert np.isfinite(out).all()


def test_iteration_cap_warns(data):
    X, sites, _ = data
    with pytest.warns(SitekitWarning, match="did not reach tol"):
        m = ComBat(max_iter=1, tol=1e-15).fit(X, sites=sites)
    assert not m.priors_["converged"].any()


# ------------------------------------------------------------------ new data
def test_unknown_site_lists_known_ones(data):
    X, sites, _ = data
    m = ComBat().fit(X, sites=sites)
    with pytest.raises(UnknownSiteError, match=r"\['elsewhere'\] were not seen.*'site0', 'site1', 'site2'"):
        m.transform(X.iloc[:2], sites=["elsewhere", "site0"])


def test_unknown_ref_site(data):
    X, sites, _ = data
    with pytest.raises(UnknownSiteError, match="'ref_site' parameter of ComBat must be one of"):
        ComBat(ref_site="site9").fit(X, sites=sites)


def test_new_samples_use_their_own_covariates(data_cov):
    X, sites, cov = data_cov
    train = np.arange(len(X)) % 3 != 0
    m = ComBat().fit(X[train], sites=sites[train], covariates=cov[train])
    new, new_sites, new_cov = X[~train], sites[~train], cov[~train]
    out = m.transform(new, sites=new_sites, covariates=new_cov)
    # row by row gives the same: each sample is adjusted on its own
    one = pd.concat([m.transform(new.iloc[[j]], sites=new_sites.iloc[[j]], covariates=new_cov.iloc[[j]])
                     for j in range(len(new))])
    pd.testing.assert_frame_equal(out, one, rtol=1e-12)
    # the formula, written out: Y* = sd (Z - g*) / sqrt(d*) + m,  m = alpha + C beta
    C = np.column_stack([new_cov["age"], new_cov["sex"] == "M"]).astype(float)
    mean = m.grand_mean_ + C @ m.beta_
    k = pd.Index(m.sites_).get_indexer(new_sites)
    sd = np.sqrt(m.var_pooled_)
    expected = sd * ((new.to_numpy() - mean) / sd - m.gamma_star_[k]) / np.sqrt(m.delta_star_[k]) + mean
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=1e-10)
    # changing a covariate changes the kept covariate effect accordingly
    older = new_cov.assign(age=new_cov["age"] + 10)
    shifted = m.transform(new, sites=new_sites, covariates=older).to_numpy()
    scale = 1 / np.sqrt(m.delta_star_[k])
    np.testing.assert_allclose(shifted - out.to_numpy(), (1 - scale) * 10 * m.beta_[0], atol=1e-9)


# ------------------------------------------------------------------ persistence
def test_save_load_round_trip(tmp_path, data_cov):
    X, sites, cov = data_cov
    m = ComBat(parametric=False, ref_site="site1").fit(X, sites=sites, covariates=cov)
    path = m.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(z["__sitekit__"].tobytes())
    meta = header["metadata"]
    assert header["kind"] == "ComBat" and header["schema_version"] == 2
    assert meta["sites"] == ["site0", "site1", "site2"]
    assert meta["params"]["ref_site"] == "site1"
    loaded = ComBat.load(path)
    assert loaded.get_params() == m.get_params()
    pd.testing.assert_frame_equal(loaded.priors_, m.priors_)
    pd.testing.assert_frame_equal(
        loaded.transform(X, sites=sites, covariates=cov), m.transform(X, sites=sites, covariates=cov),
        check_exact=True,
    )
    with pytest.raises(OutputExistsError):
        m.save(path)
    m.save(path, force=True)


def test_load_numpy_fitted_model_with_int_sites(tmp_path, data):
    X, sites, _ = data
    codes = sites.map({"site0": 1, "site1": 2, "site2": 3}).to_numpy()
    m = ComBat().fit(X.to_numpy(), sites=codes)
    loaded = ComBat.load(m.save(tmp_path / "m.npz"))
    assert list(loaded.sites_) == [1, 2, 3] and not hasattr(loaded, "feature_names_in_")
    np.testing.assert_array_equal(loaded.transform(X.to_numpy(), sites=codes), m.transform(X.to_numpy(), sites=codes))


def _rewrite(path, out, edit):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    with open(out, "wb") as fh:
        np.savez(fh, **arrays)


def test_bad_model_files(tmp_path, data):
    X, sites, _ = data
    path = ComBat().fit(X, sites=sites).save(tmp_path / "m.npz")
    raw = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        ComBat.load(tmp_path / "trunc.npz")

    def tamper(a):
        a["gamma_star_"] = a["gamma_star_"] + 1e-9

    _rewrite(path, tmp_path / "tampered.npz", tamper)
    with pytest.raises(ModelFileError, match="checksum"):
        ComBat.load(tmp_path / "tampered.npz")

    def newer(a):
        header = json.loads(a["__sitekit__"].tobytes())
        header["schema_version"] = 99
        a["__sitekit__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)

    _rewrite(path, tmp_path / "newer.npz", newer)
    with pytest.raises(ModelFileError, match="newer than this sitekit"):
        ComBat.load(tmp_path / "newer.npz")

    with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
        zf.writestr("x.npy", b"nonsense")
    with pytest.raises(ModelFileError):
        ComBat.load(tmp_path / "other.npz")
    with pytest.raises(MissingFileError):
        ComBat.load(tmp_path / "absent.npz")


def test_no_warnings_on_clean_data(data_cov):
    X, sites, cov = data_cov
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ComBat().fit_transform(X, sites=sites, covariates=cov)


def test_transform_checks_feature_names_and_count(data):
    X, sites, _ = data
    m = ComBat().fit(X, sites=sites)
    with pytest.raises(ValidationError, match="feature names"):
        m.transform(X[X.columns[::-1]], sites=sites)
    with pytest.raises(ValidationError, match="features"):
        ComBat().fit(X.to_numpy(), sites=sites).transform(X.to_numpy()[:, :3], sites=sites.to_numpy())


def test_feature_all_nan_everywhere_is_returned_nan():
    X, sites, _ = make_sites_data(seed=9)
    X["f5"] = np.nan
    with pytest.warns(DataWarning, match=r"'f5' are missing \(NaN\) in every sample"):
        out = ComBat().fit_transform(X, sites=sites)
    assert out["f5"].isna().all() and out.drop(columns="f5").notna().all().all()


def test_feature_missing_in_the_reference_site_is_unchanged():
    X, sites, _ = make_sites_data(seed=10)
    ref_rows = (sites == "site1").to_numpy()
    X.loc[ref_rows, "f4"] = np.nan
    with pytest.warns(DataWarning, match="no observed value in the reference site"):
        out = ComBat(ref_site="site1").fit_transform(X, sites=sites)
    pd.testing.assert_series_equal(out["f4"], X["f4"])
    pd.testing.assert_frame_equal(out[ref_rows], X[ref_rows])


def test_nonparametric_does_not_need_parametric_priors():
    """Identical delta_hat across features (S2 = 0) leaves the inverse-gamma prior undefined;
    the non-parametric EB does not use it."""
    X, sites, _ = make_sites_data(n_features=6, seed=12)
    m = ComBat(parametric=False, mean_only=True).fit(X, sites=sites)
    assert m.priors_["eb"].all()
    assert np.isnan(m.priors_["a_prior"]).all()
