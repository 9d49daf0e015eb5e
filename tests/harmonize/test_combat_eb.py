"""The EB core (sitekit.harmonize._eb) as pure functions on sufficient statistics.

These are the building blocks a block-wise (dask) or federated engine reuses: sums over
disjoint row sets must add up to the whole, and the EB step must need nothing but
(n, sum Z, sum Z^2).
"""

from __future__ import annotations

import numpy as np
import pytest
from combat_data import make_sites_data

from sitekit.harmonize import ComBat, _eb
from sitekit.harmonize._design import encode_sites


def naive_int_eprior(sdat, g_hat, d_hat):
    """Line-by-line port of sva's int.eprior (probability domain, loops over features)."""
    g_star, d_star = [], []
    for i in range(sdat.shape[0]):
        g = np.delete(g_hat, i)
        d = np.delete(d_hat, i)
        x = sdat[i][~np.isnan(sdat[i])]
        n = x.size
        sum2 = ((x[None, :] - g[:, None]) ** 2).sum(axis=1)
        lh = 1 / (2 * np.pi * d) ** (n / 2) * np.exp(-sum2 / (2 * d))
        g_star.append((g * lh).sum() / lh.sum())
        d_star.append((d * lh).sum() / lh.sum())
    return np.array(g_star), np.array(d_star)


def site_sums(Z):
    n = np.full(Z.shape[1], Z.shape[0], dtype=float)
    s1 = Z.sum(axis=0)
    m2 = ((Z - Z.mean(axis=0)) ** 2).sum(axis=0)
    return n, s1, m2, Z.mean(axis=0), Z.var(axis=0, ddof=1)


def test_nonparametric_equals_sva_loop_where_that_works():
    rng = np.random.default_rng(0)
    Z = rng.normal(rng.normal(0, 1, 30), 1.3, size=(12, 30))
    n, s1, m2, g_hat, d_hat = site_sums(Z)
    g, d = _eb.nonparametric_eb(n, s1, m2, g_hat, d_hat, block_cells=100)  # several blocks
    g_ref, d_ref = naive_int_eprior(Z.T, g_hat, d_hat)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12)
    np.testing.assert_allclose(d, d_ref, rtol=1e-12)


def test_nonparametric_log_domain_survives_where_sva_underflows():
    rng = np.random.default_rng(1)
    Z = rng.normal(rng.normal(0, 1, 20), 1.0, size=(3000, 20))
    n, s1, m2, g_hat, d_hat = site_sums(Z)
    with np.errstate(all="ignore"):
        g_ref, _ = naive_int_eprior(Z.T, g_hat, d_hat)
    assert np.isnan(g_ref).all()  # 0/0 in the probability domain
    g, d = _eb.nonparametric_eb(n, s1, m2, g_hat, d_hat)
    assert np.isfinite(g).all() and np.isfinite(d).all()
    # with this much data the likelihood is sharp: the nearest other feature wins
    j = np.argsort(np.abs(g_hat[:, None] - g_hat[None, :]) + np.eye(20) * 1e9, axis=1)[:, 0]
    assert np.mean(np.isclose(g, g_hat[j], atol=0.05)) > 0.5


def test_parametric_fixed_point():
    rng = np.random.default_rng(2)
    Z = rng.normal(rng.normal(0.3, 0.5, 40), 1.2, size=(15, 40))
    n, s1, m2, g_hat, d_hat = site_sums(Z)
    s2 = m2 + s1 * g_hat
    gbar, t2 = g_hat.mean(), g_hat.var(ddof=1)
    V, S2 = d_hat.mean(), d_hat.var(ddof=1)
    a, b = (2 * S2 + V**2) / S2, (V * S2 + V**3) / S2
    g, d, it, ok = _eb.parametric_eb(n, s1, s2, g_hat, d_hat, gbar, t2, a, b, tol=1e-14)
    assert ok and 1 < it < 100
    np.testing.assert_allclose(g, (n * t2 * g_hat + d * gbar) / (n * t2 + d), rtol=1e-12)
    np.testing.assert_allclose(d, (0.5 * ((Z - g) ** 2).sum(axis=0) + b) / (n / 2 + a - 1), rtol=1e-12)


def test_cross_products_and_moments_add_up_over_row_blocks():
    """What a dask or federated engine relies on: sums of blocks equal the whole."""
    X, sites, _ = make_sites_data(n_features=5, seed=3, as_frame=False)
    X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    codes = encode_sites(sites)
    D = codes.onehot()
    half = len(X) // 2
    parts = [slice(0, half), slice(half, None)]
    whole = _eb.ols_cross_products(X, D)
    summed = _eb.ols_cross_products(X[parts[0]], D[parts[0]]) + _eb.ols_cross_products(X[parts[1]], D[parts[1]])
    np.testing.assert_array_equal(summed.missing, whole.missing)
    np.testing.assert_allclose(summed.dty, whole.dty, rtol=1e-12)
    np.testing.assert_allclose(summed.dtd_missing, whole.dtd_missing, rtol=1e-12)
    B = _eb.solve_ols(whole)
    np.testing.assert_allclose(_eb.solve_ols(summed), B, rtol=1e-12)
    m = _eb.residual_moments(X, D, B, codes.codes, codes.n_sites)
    ms = [_eb.residual_moments(X[p], D[p], B, codes.codes[p], codes.n_sites) for p in parts]
    np.testing.assert_allclose(ms[0].n + ms[1].n, m.n)
    np.testing.assert_allclose(ms[0].r2 + ms[1].r2, m.r2, rtol=1e-12)
    np.testing.assert_allclose(np.fmin(ms[0].ymin, ms[1].ymin), m.ymin)


def test_fit_eb_from_sums_reproduces_the_estimator():
    X, sites, _ = make_sites_data(n_features=10, seed=4, as_frame=False)
    est = ComBat().fit(X, sites=sites)
    codes = encode_sites(sites)
    Z = (X - est.grand_mean_) / np.sqrt(est.var_pooled_)
    onehot = codes.onehot()
    n, s1, s2 = onehot.T @ np.ones_like(Z), onehot.T @ Z, onehot.T @ Z**2
    fit = _eb.fit_eb(n, s1, s2)  # no m2: the (n, s1, s2) interface alone
    np.testing.assert_allclose(fit.gamma_star, est.gamma_star_, rtol=1e-9)
    np.testing.assert_allclose(fit.delta_star, est.delta_star_, rtol=1e-9)
    pri = est.priors_
    np.testing.assert_allclose(fit.tau2, pri["tau2"], rtol=1e-9)
    np.testing.assert_allclose(fit.a_prior, pri["a_prior"], rtol=1e-9)


@pytest.mark.parametrize("ref", [None, 1])
def test_adjust_keeps_marked_cells_bit_identical(ref):
    rng = np.random.default_rng(5)
    Y = rng.normal(100, 3, (30, 4))
    codes = np.repeat([0, 1, 2], 10)
    keep = np.zeros((3, 4), dtype=bool)
    keep[:, 2] = True
    if ref is not None:
        keep[ref] = True
    out = _eb.adjust(Y, codes, grand_mean=np.full(4, 100.0), var_pooled=np.full(4, 9.0),
                     gamma_star=rng.normal(0, 1, (3, 4)), delta_star=rng.uniform(0.5, 2, (3, 4)),
                     keep=keep)
    np.testing.assert_array_equal(out[:, 2], Y[:, 2])
    if ref is not None:
        np.testing.assert_array_equal(out[codes == ref], Y[codes == ref])
    assert not np.allclose(out[:, 0], Y[:, 0])


def test_one_pass_moments_equal_the_general_path():
    X, sites, _ = make_sites_data(sizes=(30, 7, 52), n_features=6, seed=6, as_frame=False)
    X[np.random.default_rng(0).permutation(len(X))] = X.copy()  # sites not contiguous in rows
    codes = encode_sites(np.random.default_rng(1).permutation(sites))
    D = codes.onehot()
    B = _eb.solve_ols(_eb.ols_cross_products(X, D))
    general = _eb.residual_moments(X, D, B, codes.codes, codes.n_sites)
    means, fast = _eb.site_moments_complete(X, codes.codes, codes.n_sites, block_cells=18)
    np.testing.assert_allclose(means, B, rtol=1e-13)
    np.testing.assert_array_equal(fast.n, general.n)
    np.testing.assert_allclose(fast.r2, general.r2, rtol=1e-10)
    np.testing.assert_array_equal(fast.ymin, general.ymin)
    X[3, 2] = np.nan
    assert _eb.site_moments_complete(X, codes.codes, codes.n_sites) is None
