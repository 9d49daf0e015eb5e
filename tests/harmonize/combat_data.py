"""Seeded multi-site test data for the ComBat tests (imported by name, so unique)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_sites_data(
    sizes=(20, 30, 25), n_features=8, *, seed=0, covariates=False, as_frame=True
):
    """Samples x features with additive and multiplicative site effects.

    Returns ``(X, sites, covariates_or_None)``; X is a DataFrame with columns f0.. and an
    index ``s0..`` when ``as_frame``.
    """
    rng = np.random.default_rng(seed)
    k = len(sizes)
    sites = np.repeat([f"site{i}" for i in range(k)], sizes)
    codes = np.repeat(np.arange(k), sizes)
    n = codes.size
    mu = rng.uniform(5, 50, n_features)
    sd = rng.uniform(0.5, 3, n_features)
    loc = rng.normal(0, 1, (k, n_features))
    scale = np.sqrt(1 / rng.gamma(8, 1 / 7, (k, n_features)))
    X = mu + sd * (loc[codes] + scale[codes] * rng.standard_normal((n, n_features)))
    cov = None
    if covariates:
        age = rng.uniform(20, 80, n).round(1)
        sex = np.where(rng.random(n) < 0.5, "F", "M")
        X += np.outer(age - 50, rng.normal(0, 0.05, n_features)) * sd
        X += np.outer(sex == "M", rng.normal(0, 1, n_features)) * sd
        cov = pd.DataFrame({"age": age, "sex": sex})
    if as_frame:
        index = pd.Index([f"s{j}" for j in range(n)], name="id")
        X = pd.DataFrame(X, columns=[f"f{j}" for j in range(n_features)], index=index)
        sites = pd.Series(sites, index=index, name="site")
        if cov is not None:
            cov.index = index
    return X, sites, cov
