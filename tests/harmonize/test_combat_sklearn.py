"""ComBat inside scikit-learn: Pipeline with metadata routing, cross-validation, clone.

Cross-validation choice (documented in the README, "Harmonisation: ComBat"): the harmoniser is fitted on the
training folds only, so every site of a test fold must occur in the training folds.  Split
subjects (GroupKFold over subject ids) for that.  Leave-one-site-out puts an unseen site in
every test fold: ComBat then raises UnknownSiteError naming the known sites -- it needs an
estimate of the new site's location/scale (adapting to unseen sites is issue 8).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from combat_data import make_sites_data
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sitekit.exceptions import DataWarning, UnknownSiteError, ValidationError
from sitekit.harmonize import ComBat


@pytest.fixture
def task():
    X, sites, cov = make_sites_data(sizes=(40, 50, 45), n_features=6, seed=11, covariates=True)
    rng = np.random.default_rng(0)
    y = (X["f0"] - X.groupby(sites)["f0"].transform("mean") + rng.normal(0, 0.5, len(X)) > 0).astype(int)
    subjects = np.arange(len(X)) // 3  # three scans per subject, same site
    return X, y.to_numpy(), sites, cov, subjects


def make_pipe(**params):
    combat = ComBat(**params).set_fit_request(sites=True, covariates=True).set_transform_request(
        sites=True, covariates=True
    )
    return make_pipeline(combat, StandardScaler(), LogisticRegression())


def test_pipeline_routes_sites_and_covariates(task):
    X, y, sites, cov, _ = task
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipe().fit(X, y, sites=sites, covariates=cov)
        score = pipe.score(X, y, sites=sites, covariates=cov)
    assert 0.5 < score <= 1.0
    assert list(pipe[0].sites_) == ["site0", "site1", "site2"]


def test_cross_val_score_fits_harmoniser_on_training_folds_only(task):
    X, y, sites, cov, subjects = task
    params = {"sites": sites, "covariates": cov, "groups": subjects}
    with sklearn.config_context(enable_metadata_routing=True):
        scores = cross_val_score(make_pipe(), X, y, cv=GroupKFold(n_splits=4), params=params,
                                 error_score="raise")
        res = cross_validate(make_pipe(), X, y, cv=GroupKFold(n_splits=4), params=params,
                             return_estimator=True, return_indices=True, error_score="raise")
    assert scores.shape == (4,) and np.all(scores > 0.5)
    for est, train in zip(res["estimator"], res["indices"]["train"]):
        combat = est[0]
        assert combat.priors_["n_samples"].sum() == len(train)
        # the fitted grand mean is that of the training rows only, not of all data
        ref = ComBat().fit(X.iloc[train], sites=sites.iloc[train], covariates=cov.iloc[train])
        np.testing.assert_array_equal(combat.grand_mean_, ref.grand_mean_)


def test_leave_one_site_out_names_the_unseen_site(task):
    X, y, sites, cov, _ = task
    params = {"sites": sites, "covariates": cov, "groups": sites}
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(UnknownSiteError, match="were not seen in fit; the known sites are"):
            cross_val_score(make_pipe(), X, y, cv=LeaveOneGroupOut(), params=params,
                            error_score="raise")


def test_leave_one_site_out_runs_with_unseen_sites_adapt(task):
    """Issue 3: LOSO cross_val_score runs; ComBat is fitted on the training sites only and
    the held-out site is adapted (frozen model, no labels) inside transform."""
    X, y, sites, cov, _ = task
    params = {"sites": sites, "covariates": cov, "groups": sites}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with sklearn.config_context(enable_metadata_routing=True):
            res = cross_validate(make_pipe(unseen_sites="adapt"), X, y, cv=LeaveOneGroupOut(),
                                 params=params, return_estimator=True, return_indices=True,
                                 error_score="raise")
    assert res["test_score"].shape == (3,) and np.all(res["test_score"] > 0.5)
    for est, train, test in zip(res["estimator"], res["indices"]["train"], res["indices"]["test"]):
        combat = est[0]
        held_out = set(sites.iloc[test])
        assert held_out.isdisjoint(combat.sites_)  # the held-out site never reached fit
        assert combat.priors_["n_samples"].sum() == len(train)
        # transform of the held-out site equals an explicit adapt of the frozen model
        Xt = X.iloc[test]
        adapted = combat.adapt(Xt, sites=sites.iloc[test], covariates=cov.iloc[test])
        np.testing.assert_allclose(
            combat.transform(Xt, sites=sites.iloc[test], covariates=cov.iloc[test]),
            adapted.transform(Xt, sites=sites.iloc[test], covariates=cov.iloc[test]),
            rtol=0, atol=1e-12,
        )


def test_unseen_sites_option_is_validated(task):
    X, _, sites, _, _ = task
    with pytest.raises(ValidationError, match="unseen_sites.*did you mean|unseen_sites"):
        ComBat(unseen_sites="adpat").fit(X, sites=sites)


def test_without_request_routing_complains(task):
    X, y, sites, _, _ = task
    pipe = make_pipeline(ComBat(), LogisticRegression())
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(ValueError, match="sites"):
            pipe.fit(X, y, sites=sites)


def test_clone_and_params():
    est = ComBat(parametric=False, ref_site="a", categorical=["sex"])
    c = clone(est)
    assert c.get_params() == est.get_params()
    assert not hasattr(c, "gamma_star_")


def test_set_output_pandas(task):
    X, _, sites, _, _ = task
    out = ComBat().set_output(transform="pandas").fit_transform(X.to_numpy(), sites=sites.to_numpy())
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == [f"x{j}" for j in range(X.shape[1])]
