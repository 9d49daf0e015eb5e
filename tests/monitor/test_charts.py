"""Chart recursions against hand-computed values."""

import numpy as np

from sitekit.monitor import cusum, ewma, westgard


def test_cusum_recursion_by_hand():
    z = np.array([0.5, 1.0, -2.0, 0.0])
    stat, direction, alarm, state = cusum(z, k=0.25, h=10.0)
    # S+: 0.25, 1.0, 0, 0 ; S-: 0, 0, 1.75, 1.5
    np.testing.assert_allclose(stat[:, 0], [0.25, 1.0, 1.75, 1.5])
    assert direction[:, 0].tolist() == [1, 1, -1, -1]
    assert not alarm.any()
    np.testing.assert_allclose(state[:, 0], [0.0, 1.5])


def test_cusum_restarts_and_skips_nan():
    z = np.array([[3.0], [np.nan], [3.0]])
    stat, _, alarm, state = cusum(z, k=0.5, h=2.0)
    assert alarm[:, 0].tolist() == [True, False, True]
    assert np.isnan(stat[1, 0])
    np.testing.assert_allclose(state[:, 0], 0.0)


def test_state_carries_over_blocks():
    rng = np.random.default_rng(0)
    z = rng.normal(0.3, 1.0, (50, 3))
    whole = cusum(z, k=0.25, h=3.0)
    first = cusum(z[:20], k=0.25, h=3.0)
    second = cusum(z[20:], k=0.25, h=3.0, state=first[3])
    np.testing.assert_allclose(np.vstack([first[0], second[0]]), whole[0])
    e1 = ewma(z[:20], lam=0.2, limit=0.8)
    e2 = ewma(z[20:], lam=0.2, limit=0.8, state=e1[3])
    np.testing.assert_allclose(np.vstack([e1[0], e2[0]]), ewma(z, lam=0.2, limit=0.8)[0])


def test_ewma_by_hand():
    stat, direction, alarm, state = ewma(np.array([1.0, 1.0, -1.0]), lam=0.5, limit=10.0)
    np.testing.assert_allclose(stat[:, 0], [0.5, 0.75, 0.125])
    assert direction[:, 0].tolist() == [1, 1, -1]


def test_westgard_rules():
    _, _, alarm, rule, _ = westgard(np.array([3.5, 0.0, 2.5, -2.5, 2.1, 2.2]))
    assert rule[:, 0].tolist() == ["1_3s", "", "", "", "", "2_2s"]
    _, _, alarm, rule, _ = westgard(np.full(12, 0.5))
    assert rule[:, 0].tolist().index("10_x") == 9
