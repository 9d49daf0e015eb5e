"""ComBat's edge-case guarantees carried over to adapt, smooth= and target_site=."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from sitekit.datasets import make_feature_table
from sitekit.exceptions import DataWarning, UnknownSiteError
from sitekit.harmonize import ComBat


@pytest.fixture
def data():
    df = make_feature_table(n_per_site=(50, 60, 40, 30), n_features=8, random_state=7)
    feats = list(df.columns[5:])
    return df, feats


@pytest.mark.parametrize("params", [{"parametric": False}, {"mean_only": True}, {"eb": False},
                                    {"ref_site": "site_B"}, {"target_site": "site_A"},
                                    {"smooth": {"age": 4}}])
def test_adapt_with_every_variant(data, params):
    df, feats = data
    cov = df[["age", "sex"]]
    old = (df["site"] != "site_D").to_numpy()
    model = ComBat(**params).fit(df.loc[old, feats], sites=df.loc[old, "site"], covariates=cov[old])
    adapted = model.adapt(df.loc[~old, feats], sites=df.loc[~old, "site"], covariates=cov[~old])
    out = adapted.transform(df[feats], sites=df["site"], covariates=cov)
    np.testing.assert_array_equal(
        out[old].to_numpy(), model.transform(df.loc[old, feats], sites=df.loc[old, "site"],
                                             covariates=cov[old]).to_numpy())
    assert np.all(np.isfinite(out.to_numpy()))
    if params.get("mean_only"):
        assert np.all(adapted.delta_star_ == 1.0)


def test_adapt_feature_missing_or_constant_in_new_site(data):
    df, feats = data
    old = (df["site"] != "site_D").to_numpy()
    model = ComBat().fit(df.loc[old, feats], sites=df.loc[old, "site"])
    new = df.loc[~old, feats].copy()
    new[feats[0]] = np.nan     # never observed at the new site
    new[feats[1]] = 3.0        # constant at the new site
    with pytest.warns(DataWarning) as record:
        adapted = model.adapt(new, sites=df.loc[~old, "site"])
    messages = " ".join(str(w.message) for w in record)
    assert "constant there" in messages and "no observed value" in messages
    out = adapted.transform(new, sites=df.loc[~old, "site"])
    assert out[feats[0]].isna().all()
    np.testing.assert_array_equal(out[feats[1]].to_numpy(), 3.0)
    assert np.all(np.isfinite(out[feats[2:]].to_numpy()))


def test_adapt_covariate_level_unseen_raises(data):
    df, feats = data
    old = (df["site"] != "site_D").to_numpy()
    model = ComBat().fit(df.loc[old, feats], sites=df.loc[old, "site"], covariates=df.loc[old, ["sex"]])
    cov = pd.DataFrame({"sex": ["X"] * int((~old).sum())}, index=df.index[~old])
    with pytest.raises(UnknownSiteError, match="sex"):
        model.adapt(df.loc[~old, feats], sites=df.loc[~old, "site"], covariates=cov)


def test_smooth_with_nan_cells_and_ref_site(data):
    df, feats = data
    X = df[feats].copy()
    X.iloc[[2, 30, 31], [0, 3, 3]] = np.nan
    cov = df[["age"]]
    out = ComBat(smooth=["age"], ref_site="site_C").fit_transform(X, sites=df["site"], covariates=cov)
    assert np.array_equal(np.isnan(out.to_numpy()), np.isnan(X.to_numpy()))
    c = (df["site"] == "site_C").to_numpy()
    np.testing.assert_array_equal(out[c].to_numpy(), X[c].to_numpy())


def test_smooth_constant_feature_returned_unchanged(data):
    df, feats = data
    X = df[feats].copy()
    X[feats[2]] = 5.0
    with pytest.warns(DataWarning, match="constant"):
        out = ComBat(smooth=["age"]).fit_transform(X, sites=df["site"], covariates=df[["age"]])
    np.testing.assert_array_equal(out[feats[2]].to_numpy(), 5.0)


def test_target_site_with_nan_and_constant_feature(data):
    df, feats = data
    X = df[feats].copy()
    X.iloc[5, 1] = np.nan
    X[feats[4]] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        out = ComBat(target_site="site_B").fit_transform(X, sites=df["site"])
    assert np.array_equal(np.isnan(out.to_numpy()), np.isnan(X.to_numpy()))
    np.testing.assert_array_equal(out[feats[4]].to_numpy(), 1.0)


def test_smooth_missing_column_at_transform(data):
    df, feats = data
    model = ComBat(smooth=["age"]).fit(df[feats], sites=df["site"], covariates=df[["age", "sex"]])
    from sitekit.exceptions import ValidationError

    with pytest.raises(ValidationError, match="'age'"):
        model.transform(df[feats], sites=df["site"], covariates=df[["sex"]])


def test_covbat_and_nested_with_smooth_save_load(tmp_path, data):
    from sitekit.harmonize import CovBat, NestedComBat

    df, feats = data
    cov = df[["age", "sex"]]
    cb = CovBat(smooth={"age": 4}, n_components=3).fit(df[feats], sites=df["site"], covariates=cov)
    assert "age" in cb.combat_.smooth_
    loaded = CovBat.load(cb.save(tmp_path / "cb.npz"))
    assert "age" in loaded.combat_.smooth_
    pd.testing.assert_frame_equal(loaded.transform(df[feats], sites=df["site"], covariates=cov),
                                  cb.transform(df[feats], sites=df["site"], covariates=cov))
    batches = pd.DataFrame({"site": df["site"], "half": np.where(np.arange(len(df)) % 2, "x", "y")})
    nc = NestedComBat(batch_cols=["site", "half"], smooth=["age"]).fit(
        df[feats], batches=batches, covariates=cov)
    loaded = NestedComBat.load(nc.save(tmp_path / "nc.npz"))
    assert all("age" in step.smooth_ for step in loaded.steps_)
    pd.testing.assert_frame_equal(loaded.transform(df[feats], batches=batches, covariates=cov),
                                  nc.transform(df[feats], batches=batches, covariates=cov))
