"""ComBat.adapt: harmonising a site that was not in the training data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from sitekit.datasets import make_feature_table
from sitekit.exceptions import DataWarning, UnknownSiteError, ValidationError
from sitekit.harmonize import ComBat

N_PER_SITE = (80, 90, 70, 100, 85, 75, 95, 80, 40)  # site_I (40 samples) is held out


def _table(seed):
    df = make_feature_table(n_per_site=N_PER_SITE, n_features=30, random_state=seed)
    feats = list(df.columns[5:])
    return df, feats


def _compare(seed, ref_site):
    df, feats = _table(seed)
    cov = df[["age", "sex"]]
    hold = df["site"] == "site_I"
    full = ComBat(ref_site=ref_site).fit(df[feats], sites=df["site"], covariates=cov)
    y_full = full.transform(df[feats], sites=df["site"], covariates=cov)
    part = ComBat(ref_site=ref_site).fit(
        df.loc[~hold, feats], sites=df.loc[~hold, "site"], covariates=cov[~hold]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # 40 samples: no small-site warning
        adapted = part.adapt(df.loc[hold, feats], sites=df.loc[hold, "site"], covariates=cov[hold])
    y_new = adapted.transform(df.loc[hold, feats], sites=df.loc[hold, "site"], covariates=cov[hold])
    sd = y_full.std(axis=0).to_numpy()
    diff = (y_new.to_numpy() - y_full.loc[hold].to_numpy()) / sd
    return part, adapted, df, feats, diff


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adapt_matches_refit_with_reference_site(seed):
    # Must-show: outputs within 5 % of a feature SD of the refit that includes the site.
    # With a reference site both models share alpha and sigma (the reference's), so the
    # comparison isolates the new site's estimate.  Measured (seeds 0/1/2): per-feature RMS
    # difference at most 1.6 / 3.4 / 2.0 % of the feature SD, mean |diff| 0.6 / 0.9 / 0.6 %.
    *_, diff = _compare(seed, "site_A")
    rms = np.sqrt((diff**2).mean(axis=0))
    assert rms.max() < 0.05, rms.max()
    assert np.abs(diff).mean() < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adapt_matches_refit_pooled(seed):
    # Without a reference site the refit also moves the grand mean and pooled variance
    # (the new site's data enter them), so cells differ a little more.  Measured (seeds
    # 0/1/2): mean |diff| 3.4 / 2.7 / 2.9 % of the feature SD.
    *_, diff = _compare(seed, None)
    assert np.abs(diff).mean() < 0.05, np.abs(diff).mean()


def test_adapt_keeps_training_sites_and_original_model():
    df, feats = _table(0)
    cov = df[["age", "sex"]]
    hold = df["site"] == "site_I"
    part = ComBat().fit(df.loc[~hold, feats], sites=df.loc[~hold, "site"], covariates=cov[~hold])
    before = part.transform(df.loc[~hold, feats], sites=df.loc[~hold, "site"], covariates=cov[~hold])
    gamma = part.gamma_star_.copy()
    adapted = part.adapt(df.loc[hold, feats], sites=df.loc[hold, "site"], covariates=cov[hold])
    assert adapted is not part
    assert list(part.sites_) == [f"site_{c}" for c in "ABCDEFGH"]
    np.testing.assert_array_equal(part.gamma_star_, gamma)
    assert "site_I" in list(adapted.sites_)
    after = adapted.transform(df.loc[~hold, feats], sites=df.loc[~hold, "site"], covariates=cov[~hold])
    pd.testing.assert_frame_equal(after, before)  # earlier sites' outputs unchanged
    np.testing.assert_array_equal(adapted.grand_mean_, part.grand_mean_)
    np.testing.assert_array_equal(adapted.var_pooled_, part.var_pooled_)
    np.testing.assert_array_equal(adapted.beta_, part.beta_)
    assert "site_I" in adapted.priors_["site"].tolist()
    with pytest.raises(UnknownSiteError):
        part.transform(df.loc[hold, feats], sites=df.loc[hold, "site"], covariates=cov[hold])


def test_adapt_save_load_roundtrip(tmp_path):
    df, feats = _table(1)
    hold = df["site"] == "site_I"
    part = ComBat().fit(df.loc[~hold, feats], sites=df.loc[~hold, "site"])
    adapted = part.adapt(df.loc[hold, feats], sites=df.loc[hold, "site"])
    loaded = ComBat.load(adapted.save(tmp_path / "adapted.npz"))
    pd.testing.assert_frame_equal(
        loaded.transform(df[feats], sites=df["site"]), adapted.transform(df[feats], sites=df["site"])
    )


def test_adapt_small_sites_warn_and_refuse():
    df, feats = _table(2)
    hold = df["site"] == "site_I"
    part = ComBat().fit(df.loc[~hold, feats], sites=df.loc[~hold, "site"])
    new = df.loc[hold, feats]
    with pytest.warns(DataWarning, match="fewer than 20"):
        part.adapt(new.iloc[:10], sites=["new"] * 10)
    with pytest.raises(ValidationError, match="at least 2"):
        part.adapt(new.iloc[:1], sites=["new"])
    with pytest.raises(ValidationError, match="at least 15"):
        part.adapt(new.iloc[:10], sites=["new"] * 10, min_site_size=15)
    with pytest.raises(ValidationError, match="already"):
        part.adapt(new, sites=["site_A"] * len(new))


def test_adapt_several_new_sites_and_nan():
    df, feats = _table(0)
    new_sites = df["site"].isin(["site_H", "site_I"])
    part = ComBat().fit(df.loc[~new_sites, feats], sites=df.loc[~new_sites, "site"])
    X_new = df.loc[new_sites, feats].copy()
    X_new.iloc[0, 0] = np.nan
    adapted = part.adapt(X_new, sites=df.loc[new_sites, "site"])
    out = adapted.transform(X_new, sites=df.loc[new_sites, "site"])
    assert np.array_equal(np.isnan(out.to_numpy()), np.isnan(X_new.to_numpy()))
    assert {"site_H", "site_I"} <= set(adapted.sites_)
    # each new site is put on the pooled scale: its mean location moves towards the others
    h = df.loc[df["site"] == "site_H", feats]
    gap_raw = np.abs(h.mean() - df.loc[~new_sites, feats].mean()) / df[feats].std()
    gap_new = np.abs(out.loc[h.index].mean() - part.transform(
        df.loc[~new_sites, feats], sites=df.loc[~new_sites, "site"]).mean()) / df[feats].std()
    assert gap_new.mean() < 0.5 * gap_raw.mean()


def test_adapting_sites_together_equals_one_after_another():
    # each new site is estimated from its own data only
    df, feats = _table(1)
    new = df["site"].isin(["site_H", "site_I"])
    part = ComBat().fit(df.loc[~new, feats], sites=df.loc[~new, "site"])
    both = part.adapt(df.loc[new, feats], sites=df.loc[new, "site"])
    h, i = df["site"] == "site_H", df["site"] == "site_I"
    seq = part.adapt(df.loc[h, feats], sites=df.loc[h, "site"]).adapt(
        df.loc[i, feats], sites=df.loc[i, "site"])
    assert list(both.sites_) == list(seq.sites_)
    pd.testing.assert_frame_equal(both.transform(df[feats], sites=df["site"]),
                                  seq.transform(df[feats], sites=df["site"]))
    pd.testing.assert_frame_equal(both.priors_, seq.priors_)
