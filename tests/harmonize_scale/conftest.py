"""Fixtures of the scale-out tests (dask engine, federated ComBat)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_cohort(
    *,
    n_per_site=(40, 55, 30, 45),
    n_features: int = 12,
    nan_fraction: float = 0.0,
    seed: int = 0,
    site_names=("A", "B", "C", "D"),
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Features with site location/scale effects and covariate effects, seeded.

    Returns ``(X, sites, covariates)``; covariates are ``age`` (continuous) and ``sex``
    (categorical, F/M).
    """
    rng = np.random.default_rng(seed)
    sites = np.repeat(np.asarray(site_names[: len(n_per_site)], dtype=object), n_per_site)
    n = sites.size
    age = rng.uniform(20, 80, n)
    sex = rng.choice(["F", "M"], n)
    loc = rng.normal(0, 1.0, (len(n_per_site), n_features))
    scale = rng.uniform(0.6, 1.8, (len(n_per_site), n_features))
    codes = np.searchsorted(np.asarray(site_names[: len(n_per_site)]), sites)
    base = rng.normal(size=(n, n_features))
    X = (
        10.0
        + 0.03 * age[:, None] * rng.uniform(0.5, 1.5, n_features)
        + (sex == "M")[:, None] * 0.5
        + loc[codes]
        + scale[codes] * base
    )
    if nan_fraction:
        X[rng.random(X.shape) < nan_fraction] = np.nan
    frame = pd.DataFrame(X, columns=[f"feat_{j}" for j in range(n_features)])
    covariates = pd.DataFrame({"age": age, "sex": sex})
    return frame, sites, covariates


def assert_close(actual, expected, *, rel: float) -> None:
    """Equal to ``rel`` times each feature's SD (NaN where the other is NaN)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
    sd = np.nanstd(e, axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    err = np.nanmax(np.abs(a - e) / sd) if a.size else 0.0
    assert err <= rel, f"max difference {err:.3g} feature SDs > {rel:g}"


@pytest.fixture
def cohort():
    return make_cohort(nan_fraction=0.03)
