"""Thresholds for a target ARL0: Markov chain against published values, Siegmund and Monte Carlo."""

import numpy as np
import pytest

from sitekit.monitor import (
    cusum,
    cusum_arl,
    cusum_threshold,
    ewma,
    ewma_arl,
    ewma_threshold,
    robust_reference,
    siegmund_arl,
    split_arl0,
)


def test_cusum_arl_matches_published_table():
    # two-sided CUSUM, k = 0.5: h = 4 -> 168, h = 5 -> 465 (Montgomery, SQC, table 9.3)
    assert cusum_arl(4.0, 0.5) == pytest.approx(168, rel=0.01)
    assert cusum_arl(5.0, 0.5) == pytest.approx(465, rel=0.01)
    # shifted by 1 SD: ARL1 = 8.38 (h = 4) and 10.4 (h = 5)
    assert cusum_arl(4.0, 0.5, mu=1.0) == pytest.approx(8.38, rel=0.02)
    assert cusum_arl(5.0, 0.5, mu=1.0) == pytest.approx(10.4, rel=0.02)


def test_ewma_arl_matches_published_value():
    # Lucas & Saccucci (1990): lambda = 0.10, L = 2.814 -> ARL0 = 500, ARL(1 SD) = 10.3
    assert ewma_arl(2.814, 0.1) == pytest.approx(500, rel=0.01)
    assert ewma_arl(2.814, 0.1, mu=1.0) == pytest.approx(10.3, rel=0.03)


def test_siegmund_close_to_markov_chain():
    for h, k in [(4.0, 0.5), (8.0, 0.25), (5.0, 0.5)]:
        assert siegmund_arl(h, k) == pytest.approx(cusum_arl(h, k), rel=0.05)


def test_threshold_inverts_arl():
    h = cusum_threshold(500.0, 0.25)
    assert cusum_arl(h, 0.25) == pytest.approx(500.0, rel=1e-3)
    L = ewma_threshold(500.0, 0.1)
    assert L == pytest.approx(2.814, abs=0.01)


def _mc_rate(h, *, k=0.25, n_ref=None, n_charts=400, n_steps=3000, random_state=0):
    """Studies per false alarm of restarted CUSUMs on in-control N(0, 1) data."""
    rng = np.random.default_rng(random_state)
    if n_ref is None:
        loc, sc = np.zeros(n_charts), np.ones(n_charts)
    else:
        ref = rng.standard_normal((n_ref, n_charts))
        est = np.array([robust_reference(ref[:, j])[:2] for j in range(n_charts)])
        loc, sc = est[:, 0], est[:, 1]
    z = (rng.standard_normal((n_steps, n_charts)) - loc) / sc
    _, _, alarm, _ = cusum(z, k=k, h=h)
    return n_steps * n_charts / alarm.sum()


@pytest.mark.parametrize("random_state", [0, 1])
def test_monte_carlo_arl_within_10_percent_known_parameters(random_state):
    h = cusum_threshold(500.0, 0.25)
    assert _mc_rate(h, random_state=random_state) == pytest.approx(500.0, rel=0.10)


def test_monte_carlo_arl_within_10_percent_estimated_reference():
    """Regression guard of the reference correction: 240 reference studies per site."""
    h = cusum_threshold(500.0, 0.25, n_reference=240)
    assert _mc_rate(h, n_ref=240) == pytest.approx(500.0, rel=0.10)
    # without the correction the same charts alarm far more often (the documented inflation)
    assert _mc_rate(cusum_threshold(500.0, 0.25), n_ref=240) < 0.8 * 500.0


def test_ewma_monte_carlo():
    lam = 0.1
    limit = ewma_threshold(500.0, lam) * np.sqrt(lam / (2 - lam))
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3000, 400))
    _, _, alarm, _ = ewma(z, lam=lam, limit=limit)
    assert z.size / alarm.sum() == pytest.approx(500.0, rel=0.10)


def test_split_keeps_network_rate():
    assert split_arl0(500, 10) == 5000.0
    assert split_arl0(500, 10, split="none") == 500.0


def test_ewma_monte_carlo_estimated_reference():
    lam, n_ref = 0.1, 240
    limit = ewma_threshold(500.0, lam, n_reference=n_ref) * np.sqrt(lam / (2 - lam))
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((n_ref, 400))
    est = np.array([robust_reference(ref[:, j])[:2] for j in range(400)])
    z = (rng.standard_normal((3000, 400)) - est[:, 0]) / est[:, 1]
    _, _, alarm, _ = ewma(z, lam=lam, limit=limit)
    assert z.size / alarm.sum() == pytest.approx(500.0, rel=0.10)
