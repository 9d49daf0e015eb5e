"""scikit-learn basics of CovBat and NestedComBat, and invariances of all extensions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn
from ext_data import make_covariance_sites, make_crossed_batches
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sitekit.harmonize import ComBat, CovBat, NestedComBat


@pytest.mark.parametrize("est", [CovBat(n_components=3), NestedComBat(batch_cols=["vendor"])])
def test_clone_params_not_fitted(est):
    c = clone(est)
    assert c.get_params() == est.get_params()
    c.set_params(eb=False)
    assert c.eb is False and est.eb is True
    with pytest.raises(NotFittedError):
        kw = {"sites": ["a"]} if isinstance(est, CovBat) else {"batches": pd.DataFrame({"vendor": ["a"]})}
        c.transform(np.zeros((1, 2)), **kw)
    assert "n_components" in repr(est) or "batch_cols" in repr(est)


def test_covbat_in_pipeline_with_metadata_routing():
    X, sites, cov = make_covariance_sites(n=40, p=8)
    y = (X["f00"] > X["f00"].median()).to_numpy().astype(int)
    with sklearn.config_context(enable_metadata_routing=True):
        covbat = CovBat(n_components=3).set_fit_request(sites=True, covariates=True)
        covbat = covbat.set_transform_request(sites=True, covariates=True)
        pipe = make_pipeline(covbat, LogisticRegression()).fit(X, y, sites=sites, covariates=cov)
        assert pipe.score(X, y, sites=sites, covariates=cov) > 0.5
    assert pipe[0].n_components_ == 3


def test_set_output_pandas_with_numpy_input():
    X, sites, _ = make_covariance_sites(n=30, p=5)
    out = CovBat(n_components=2).set_output(transform="pandas").fit_transform(X.to_numpy(), sites=sites)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == [f"x{j}" for j in range(5)]
    Xb, batches, _ = make_crossed_batches(n=90, p=4)
    out = NestedComBat(batch_cols=["vendor", "recon"]).set_output(transform="pandas").fit_transform(
        Xb.to_numpy(), batches=batches)
    assert isinstance(out, pd.DataFrame) and out.shape == (90, 4)


def test_row_order_invariance():
    X, sites, cov = make_covariance_sites(n=40, p=8)
    perm = np.random.default_rng(5).permutation(len(X))
    for make in (lambda: CovBat(n_components=0.8), lambda: ComBat(smooth=["age"]),
                 lambda: ComBat(target_site="s1")):
        a = make().fit_transform(X, sites=sites, covariates=cov)
        b = make().fit_transform(X.iloc[perm], sites=sites[perm], covariates=cov.iloc[perm])
        np.testing.assert_allclose(b.loc[a.index].to_numpy(), a.to_numpy(), rtol=1e-8, atol=1e-8)
    Xb, batches, cb = make_crossed_batches(n=120, p=5)
    perm = np.random.default_rng(6).permutation(len(Xb))
    a = NestedComBat(batch_cols=["vendor", "recon"]).fit_transform(Xb, batches=batches, covariates=cb)
    b = NestedComBat(batch_cols=["vendor", "recon"]).fit_transform(
        Xb.iloc[perm], batches=batches.iloc[perm], covariates=cb.iloc[perm])
    np.testing.assert_allclose(b.loc[a.index].to_numpy(), a.to_numpy(), rtol=1e-8, atol=1e-8)
