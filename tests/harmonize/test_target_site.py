"""M-ComBat style: every site mapped onto a chosen site's location and scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sitekit.datasets import make_feature_table
from sitekit.exceptions import ValidationError
from sitekit.harmonize import ComBat


@pytest.fixture
def table():
    df = make_feature_table(n_per_site=(60, 90, 45, 75), n_features=12, random_state=4)
    return df, list(df.columns[5:])


def test_target_site_maps_every_site_onto_target(table):
    df, feats = table
    cov = df[["age", "sex"]]
    model = ComBat(target_site="site_B")
    Y = model.fit_transform(df[feats], sites=df["site"], covariates=cov)
    b = (df["site"] == "site_B").to_numpy()
    # every site now has (about) site B's estimated location and scale ...
    means = Y.groupby(df["site"].to_numpy()).mean()
    sds = Y.groupby(df["site"].to_numpy()).std()
    spread = (means.max() - means.min()) / df[feats].std()
    assert spread.max() < 0.5
    # ... which is B's own level: B's mean moves little, other sites move to it
    raw_b_mean = df.loc[b, feats].mean()
    assert (np.abs(means.loc["site_B"] - raw_b_mean) / df[feats].std()).max() < 0.2
    # the target's rows go through the same map, which is the identity for them (to
    # rounding); ref_site returns them bit-identical.  The other sites differ: target_site
    # estimates everything on the pooled model and lands on B's EB-estimated location/scale.
    np.testing.assert_allclose(Y[b].to_numpy(), df.loc[b, feats].to_numpy(), rtol=1e-12)
    ref = ComBat(ref_site="site_B").fit_transform(df[feats], sites=df["site"], covariates=cov)
    np.testing.assert_array_equal(ref[b].to_numpy(), df.loc[b, feats].to_numpy())
    assert not np.allclose(ref[~b].to_numpy(), Y[~b].to_numpy(), rtol=1e-6)
    assert (sds.loc["site_B"] > 0).all()


def test_target_site_formula(table):
    df, feats = table
    model = ComBat(target_site="site_C").fit(df[feats], sites=df["site"])
    Y = model.transform(df[feats], sites=df["site"]).to_numpy()
    t = list(model.sites_).index("site_C")
    sd = np.sqrt(model.var_pooled_)
    codes = np.array([list(model.sites_).index(s) for s in df["site"]])
    Z = (df[feats].to_numpy() - model.grand_mean_) / sd
    g, d = model.gamma_star_, model.delta_star_
    expect = model.grand_mean_ + sd * (g[t] + np.sqrt(d[t]) * (Z - g[codes]) / np.sqrt(d[codes]))
    np.testing.assert_allclose(Y, expect, rtol=1e-10, atol=1e-10)


def test_target_site_save_load_adapt(tmp_path, table):
    df, feats = table
    train = df["site"] != "site_D"
    model = ComBat(target_site="site_A").fit(df.loc[train, feats], sites=df.loc[train, "site"])
    loaded = ComBat.load(model.save(tmp_path / "m.npz"))
    assert loaded.target_site == "site_A"
    pd.testing.assert_frame_equal(
        loaded.transform(df.loc[train, feats], sites=df.loc[train, "site"]),
        model.transform(df.loc[train, feats], sites=df.loc[train, "site"]),
    )
    adapted = model.adapt(df.loc[~train, feats], sites=df.loc[~train, "site"])
    out = adapted.transform(df[feats], sites=df["site"])
    means = out.groupby(df["site"].to_numpy()).mean()
    assert ((means.max() - means.min()) / df[feats].std()).max() < 0.5


def test_target_site_validation(table):
    df, feats = table
    with pytest.raises(ValidationError, match="target_site"):
        ComBat(target_site="site_Z").fit(df[feats], sites=df["site"])
    with pytest.raises(ValidationError, match="ref_site"):
        ComBat(target_site="site_A", ref_site="site_B").fit(df[feats], sites=df["site"])
