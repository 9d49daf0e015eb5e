"""Data of the scale-out tests (Dask engine, federated ComBat): make_cohort, blank_cells, the cohort fixture."""

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


def blank_cells(X, sites, covariates, *, k: int = 5, feature_fraction: float = 0.3, seed: int = 0):
    """Missing values that respect the federated privacy rule (``min_cell_size=k``).

    For a random ``feature_fraction`` of the features at each site and sex level, ``k`` to
    ``k + 2`` rows of that cell become NaN (only where the cell keeps at least ``k`` observed
    values), so every observed and missing count per cell is 0 or >= k.
    """
    rng = np.random.default_rng(seed)
    values = X.to_numpy(dtype=float, copy=True)
    sex = covariates["sex"].to_numpy()
    for s in pd.unique(sites):
        for level in pd.unique(sex):
            rows = np.flatnonzero((sites == s) & (sex == level))
            for j in range(values.shape[1]):
                m = int(rng.integers(k, k + 3))
                if rng.random() < feature_fraction and rows.size - m >= k:
                    values[rng.choice(rows, m, replace=False), j] = np.nan
    return pd.DataFrame(values, columns=X.columns, index=X.index)


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
