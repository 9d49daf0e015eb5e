"""Property-based invariances of ComBat (hypothesis; few, small examples)."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sitekit.harmonize import ComBat

SETTINGS = settings(max_examples=15, deadline=None)


@st.composite
def cohorts(draw):
    k = draw(st.integers(2, 3))
    sizes = draw(st.lists(st.integers(3, 8), min_size=k, max_size=k))
    n_features = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(k), sizes)
    X = rng.normal(rng.normal(0, 2, (k, n_features))[codes], rng.uniform(0.5, 2, (k, n_features))[codes])
    X = X * rng.uniform(0.1, 10, n_features) + rng.uniform(-50, 50, n_features)
    sites = np.array(["north", "south", "east"])[codes]
    params = {"parametric": draw(st.booleans()), "mean_only": draw(st.booleans())}
    return X, sites, params, rng


def harmonise(X, sites, params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ComBat(tol=1e-12, **params).fit_transform(X, sites=sites)


def close(a, b, X):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-8 * X.std(axis=0).max())


@SETTINGS
@given(cohorts())
def test_row_permutation_permutes_output(cohort):
    X, sites, params, rng = cohort
    perm = rng.permutation(len(X))
    close(harmonise(X[perm], sites[perm], params), harmonise(X, sites, params)[perm], X)


@SETTINGS
@given(cohorts())
def test_renaming_sites_changes_nothing(cohort):
    X, sites, params, _ = cohort
    renamed = np.vectorize({"north": 7, "south": -1, "east": 3}.get)(sites)
    close(harmonise(X, renamed, params), harmonise(X, sites, params), X)


@SETTINGS
@given(cohorts(), st.data())
def test_positive_affine_map_commutes(cohort, data):
    X, sites, params, rng = cohort
    a = rng.uniform(0.01, 100, X.shape[1])
    b = rng.uniform(-1e3, 1e3, X.shape[1])
    out = harmonise(X, sites, params)
    close(harmonise(a * X + b, sites, params), a * out + b, a * X)
