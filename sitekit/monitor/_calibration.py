"""Alarm thresholds for a target in-control average run length (ARL0).

How a threshold is chosen
-------------------------
* **CUSUM** (two-sided, reference value ``k``, decision interval ``h``): the run length of
  each one-sided chart is computed with the Markov-chain approximation of Brook & Evans
  (1972): the interval ``[0, h]`` is cut into ``n_states`` cells, the chart statistic moves
  between cells with normal transition probabilities, and ``ARL = (I - R)^-1 1`` from the
  empty state.  The two sides are combined as ``1/ARL = 1/ARL+ + 1/ARL-`` (Lucas & Crosier
  1982).  ``h`` is then found by root finding (Brent) so that the ARL equals the target.
  Siegmund's closed form (:func:`siegmund_arl`) is kept as a cross-check (within 5 % in
  the tests); the Markov chain is what the monitor uses, and the tests check it against
  published ARLs and by Monte Carlo.
* **EWMA** (smoothing ``lam``, limits ``+-L sqrt(lam / (2 - lam))``, asymptotic): the
  Markov chain of Lucas & Saccucci (1990) on the control interval, ``L`` by root finding.
* **Estimated in-control parameters.**  The monitor standardises each signal with the
  site's reference location (Huber M-estimate) and MAD.  With ``n`` reference studies the
  estimates are off by ``~ N(0, 1.05/n)`` (location) and ``~ N(1, 1.3605/n)`` (MAD scale,
  relative), and a chart with the nominal threshold raises false alarms more often than
  planned (for ``k = 0.25`` and ARL0 500, measured: 2.1 times as often at ``n = 100``,
  1.4 times at ``n = 240``, 1.2 times at ``n = 500``).  With ``n_reference`` given, the
  threshold is chosen so that the *expected false-alarm rate*, averaged over that estimation error
  (Gauss-Hermite quadrature over both estimates), equals ``1 / ARL0``: the long-run number
  of false alarms per study over many sites is then the one asked for.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import optimize, special
from threadpoolctl import threadpool_limits

from sitekit._validation import check_number

__all__ = [
    "siegmund_arl",
    "cusum_arl",
    "ewma_arl",
    "cusum_threshold",
    "ewma_threshold",
    "split_arl0",
    "LOCATION_VAR",
    "MAD_VAR",
]

#: Asymptotic variance of Huber's M-estimate of location (c = 1.345, 95 % efficiency) of
#: N(0, 1) data, times n.
LOCATION_VAR = 1.0 / 0.95
#: Asymptotic variance of the normalised MAD (1.4826 MAD) of N(0, 1) data, times n.
MAD_VAR = 1.3605

_N_STATES = 150
_N_QUAD = 7


def siegmund_arl(h: float, k: float, *, two_sided: bool = True) -> float:
    """Siegmund's approximation of the in-control ARL of a CUSUM on N(0, 1) data.

    ``ARL = (exp(2 k b) - 2 k b - 1) / (2 k^2)`` with ``b = h + 1.166`` for one side; the
    two-sided chart has half of it.

    Parameters
    ----------
    h : float
        Decision interval (in standard deviations).
    k : float
        Reference value (half the shift to detect).
    two_sided : bool, default=True
        Two-sided chart (half the one-sided ARL).

    Returns
    -------
    float

    Examples
    --------
    >>> from sitekit.monitor import siegmund_arl
    >>> round(siegmund_arl(5.0, 0.5, two_sided=False))
    938
    """
    b = float(h) + 1.166
    if k == 0:
        arl = b * b
    else:
        arl = (np.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)
    return float(arl / 2.0 if two_sided else arl)


def _cusum_side_arl(h: float, k: float, mu: float, sigma: float, n_states: int) -> float:
    """One upper CUSUM ``S = max(0, S + z - k)``, z ~ N(mu, sigma^2): Brook-Evans ARL."""
    w = 2.0 * h / (2 * n_states - 1)
    centres = np.arange(n_states) * w
    upper = (np.arange(n_states) + 0.5) * w  # upper cell edges; cell 0 is [0, w/2)
    # P(i -> j) = F(upper_j - c_i + k) - F(upper_{j-1} - c_i + k), cell 0 from -inf
    x = (upper[None, :] - centres[:, None] + k - mu) / sigma
    cdf = special.ndtr(x)
    R = np.diff(np.concatenate([np.zeros((n_states, 1)), cdf], axis=1), axis=1)
    try:
        arl = np.linalg.solve(np.eye(n_states) - R, np.ones(n_states))
    except np.linalg.LinAlgError:  # pragma: no cover - absorbing chain is never singular
        return float("inf")
    return float(arl[0])


def cusum_arl(h: float, k: float, *, mu: float = 0.0, sigma: float = 1.0,
              n_states: int = _N_STATES) -> float:
    """Average run length of a two-sided CUSUM by the Brook & Evans Markov chain.

    Parameters
    ----------
    h : float
        Decision interval (in standard deviations of the standardised signal).
    k : float
        Reference value.
    mu : float, default=0.0
        Mean of the standardised signal (0 in control; the shift otherwise).
    sigma : float, default=1.0
        Its standard deviation.
    n_states : int, default=150
        Cells of the Markov chain per side.

    Returns
    -------
    float
        Expected number of studies to the first alarm, combining the sides as
        ``1/ARL = 1/ARL+ + 1/ARL-``.

    Examples
    --------
    >>> from sitekit.monitor import cusum_arl
    >>> 460 < cusum_arl(5.0, 0.5) < 480
    True
    """
    up = _cusum_side_arl(h, k, mu, sigma, n_states)
    down = _cusum_side_arl(h, k, -mu, sigma, n_states)
    return float(1.0 / (1.0 / up + 1.0 / down))


def ewma_arl(L: float, lam: float, *, mu: float = 0.0, sigma: float = 1.0,
             n_states: int = 2 * _N_STATES + 1) -> float:
    """Average run length of an EWMA chart by the Lucas & Saccucci Markov chain.

    The chart is ``Z_t = lam x_t + (1 - lam) Z_{t-1}``, ``Z_0 = 0``, alarm when
    ``|Z_t| > L sqrt(lam / (2 - lam))``.

    Parameters
    ----------
    L : float
        Width of the limits in asymptotic standard deviations of ``Z``.
    lam : float
        Smoothing constant in (0, 1].
    mu, sigma : float, default=0.0, 1.0
        Mean and SD of the standardised signal.
    n_states : int, default=301
        Cells of the Markov chain (odd).

    Returns
    -------
    float

    Examples
    --------
    >>> from sitekit.monitor import ewma_arl
    >>> 480 < ewma_arl(2.814, 0.1) < 520
    True
    """
    c = L * np.sqrt(lam / (2.0 - lam))
    n = int(n_states) | 1
    d = 2.0 * c / n
    centres = -c + (np.arange(n) + 0.5) * d
    edges = -c + np.arange(n + 1) * d
    # x such that (1 - lam) c_i + lam x = edge
    x = (edges[None, :] - (1.0 - lam) * centres[:, None]) / lam
    cdf = special.ndtr((x - mu) / sigma)
    R = np.diff(cdf, axis=1)
    arl = np.linalg.solve(np.eye(n) - R, np.ones(n))
    return float(arl[n // 2])


def _quadrature(n_reference: int | None):
    """Nodes and weights of the estimation error of (median, MAD) from n reference studies."""
    if n_reference is None:
        return np.array([0.0]), np.array([1.0]), np.array([1.0])
    x, w = np.polynomial.hermite_e.hermegauss(_N_QUAD)
    w = w / w.sum()
    m = x * np.sqrt(LOCATION_VAR / n_reference)
    s = 1.0 + x * np.sqrt(MAD_VAR / n_reference)
    s = np.clip(s, 0.2, None)
    mm, ss = np.meshgrid(m, s, indexing="ij")
    ww = np.outer(w, w)
    # z = (x - m_hat) / s_hat with x ~ N(0, 1): mean -m/s, SD 1/s
    return (-mm / ss).ravel(), (1.0 / ss).ravel(), ww.ravel()


def _expected_rate(arl_fn, n_reference):
    mus, sigmas, weights = _quadrature(n_reference)

    def rate(param):
        return float(sum(w / arl_fn(param, mu, sd) for mu, sd, w in zip(mus, sigmas, weights)))

    return rate


@functools.lru_cache(maxsize=512)
def cusum_threshold(arl0: float, k: float, *, n_reference: int | None = None) -> float:
    """Decision interval ``h`` of a two-sided CUSUM for an in-control ARL.

    Parameters
    ----------
    arl0 : float
        Target in-control average run length (studies per false alarm), >= 2.
    k : float
        Reference value (half the shift to detect, in SD units), > 0.
    n_reference : int, default=None
        Size of the reference period the in-control median/MAD come from.  ``None``
        assumes they are known; with a number, ``h`` makes the expected false-alarm rate
        over the estimation error equal ``1 / arl0`` (see the module notes).

    Returns
    -------
    float

    Examples
    --------
    >>> from sitekit.monitor import cusum_threshold
    >>> h = cusum_threshold(500.0, 0.25)
    >>> 8.0 < h < 9.0
    True
    """
    check_number(arl0, name="arl0", owner="cusum_threshold", low=2)
    check_number(k, name="k", owner="cusum_threshold", low=0, low_inclusive=False)
    n_states = _N_STATES if n_reference is None else 80
    rate = _expected_rate(lambda h, mu, sd: cusum_arl(h, k, mu=mu, sigma=sd, n_states=n_states),
                          n_reference)

    def f(h):
        return np.log(rate(h)) + np.log(arl0)

    # small LAPACK solves: one thread is ~20x faster than a contended pool
    with threadpool_limits(1):
        hi = 1.0
        while f(hi) > 0 and hi < 500:
            hi *= 1.6
        lo = hi / 1.6 if hi > 1.0 else 1e-3
        if f(lo) < 0:
            lo = 1e-3
        return float(optimize.brentq(f, lo, hi, xtol=1e-5))


@functools.lru_cache(maxsize=512)
def ewma_threshold(arl0: float, lam: float, *, n_reference: int | None = None) -> float:
    """Limit width ``L`` of an EWMA chart for an in-control ARL.

    Parameters
    ----------
    arl0 : float
        Target in-control average run length, >= 2.
    lam : float
        Smoothing constant in (0, 1].
    n_reference : int, default=None
        As in :func:`cusum_threshold`.

    Returns
    -------
    float

    Examples
    --------
    >>> from sitekit.monitor import ewma_threshold
    >>> 2.7 < ewma_threshold(500.0, 0.1) < 2.9
    True
    """
    check_number(arl0, name="arl0", owner="ewma_threshold", low=2)
    check_number(lam, name="lam", owner="ewma_threshold", low=0, high=1, low_inclusive=False)
    n_states = 151
    rate = _expected_rate(lambda L, mu, sd: ewma_arl(L, lam, mu=mu, sigma=sd, n_states=n_states),
                          n_reference)

    def f(L):
        return np.log(rate(L)) + np.log(arl0)

    with threadpool_limits(1):
        return float(optimize.brentq(f, 0.1, 8.0, xtol=1e-5))


def split_arl0(arl0: float, n_charts: int, *, split: str = "bonferroni") -> float:
    """The per-chart ARL0 that keeps a network of charts at ``arl0``.

    With ``split="bonferroni"`` each of the ``n_charts`` charts (sites x signals) gets
    ``arl0 * n_charts``: false alarms of charts restarted after each alarm add up, so the
    expected number of false alarms in the whole network per round of one study per site
    is ``n_charts / (arl0 n_charts) = 1 / arl0`` (exact for the expected count; the chance
    of at least one false alarm in a round is at most that).  ``split="none"`` gives every
    chart ``arl0``.

    Parameters
    ----------
    arl0 : float
        Target in-control ARL of the network (or of each chart with ``split="none"``).
    n_charts : int
        Number of charts sharing the budget.
    split : {"bonferroni", "none"}, default="bonferroni"

    Returns
    -------
    float

    Examples
    --------
    >>> from sitekit.monitor import split_arl0
    >>> split_arl0(500, 10)
    5000.0
    """
    if split == "none":
        return float(arl0)
    return float(arl0) * max(int(n_charts), 1)
