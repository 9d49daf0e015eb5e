"""Synthetic data with known structure for the ComBat extensions (seeded, small)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_covariance_sites(seed=0, n=80, p=20, k=3, q=3):
    """Sites that differ in location, scale AND covariance.

    Every site shares ``q`` orthogonal directions (loadings ``L``) but scales the variance
    of each direction by its own factor in [0.3, 2.0]: per-feature means/variances can be
    matched by ComBat while the correlation structure stays site-specific.
    """
    rng = np.random.default_rng(seed)
    sites = np.repeat([f"s{i}" for i in range(k)], n)
    age = rng.uniform(30, 80, k * n)
    L = np.linalg.qr(rng.normal(size=(p, q)))[0] * 3.0
    X = np.empty((k * n, p))
    for i in range(k):
        m = sites == f"s{i}"
        sc = rng.uniform(0.3, 2.0, q)
        f = rng.normal(size=(n, q)) * sc
        X[m] = f @ L.T + rng.normal(0.0, 1.0, (n, p))
        X[m] = X[m] * rng.uniform(0.8, 1.3, p) + rng.normal(0.0, 1.0, p)
    X += 0.03 * age[:, None] * rng.normal(1.0, 0.3, p)
    cols = [f"f{g:02d}" for g in range(p)]
    return pd.DataFrame(X, columns=cols), sites, pd.DataFrame({"age": age})


def make_crossed_batches(seed=0, n=240, p=15):
    """Two crossed batch variables (vendor x reconstruction), each with additive and
    multiplicative effects, plus a linear age effect to protect."""
    rng = np.random.default_rng(seed)
    vendor = rng.choice(["GE", "Philips", "Siemens"], n)
    recon = rng.choice(["BSREM", "OSEM"], n)
    age = rng.uniform(30, 80, n)
    X = rng.normal(0.0, 1.0, (n, p)) + 0.02 * age[:, None]
    for labels in (vendor, recon):
        for lv in np.unique(labels):
            m = labels == lv
            X[m] = X[m] * rng.uniform(0.7, 1.4, p) + rng.normal(0.0, 0.8, p)
    cols = [f"f{g:02d}" for g in range(p)]
    batches = pd.DataFrame({"vendor": vendor, "recon": recon})
    return pd.DataFrame(X, columns=cols), batches, pd.DataFrame({"age": age})


def covariance_distance(X, sites) -> float:
    """Mean Frobenius norm of the differences of the per-site covariance matrices."""
    X = np.asarray(X, dtype=float)
    sites = np.asarray(sites)
    us = np.unique(sites)
    C = [np.cov(X[sites == s].T) for s in us]
    d = [np.linalg.norm(C[i] - C[j]) for i in range(len(C)) for j in range(i + 1, len(C))]
    return float(np.mean(d))
