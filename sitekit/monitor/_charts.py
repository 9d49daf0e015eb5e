"""Control charts on standardised signals, vectorised over charts (sites x signals).

Every function takes a block of standardised values ``z`` of shape (n_steps, n_charts)
(NaN = no observation of that chart at that step: its statistic is carried over) and the
chart state before the block, and returns the statistic at every step, the alarms and the
state after the block.  A chart restarts from zero after each alarm, so run lengths are
renewal times and false alarms of many charts add up (see :func:`split_arl0`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["cusum", "ewma", "westgard"]


def _chart_arrays(z):
    """``z`` as (n_steps, n_charts) floats, and the empty outputs every chart fills:
    statistic (NaN), direction (0) and alarm (False)."""
    z = np.asarray(z, dtype=float)
    if z.ndim == 1:
        z = z[:, None]
    n, m = z.shape
    return z, np.full((n, m), np.nan), np.zeros((n, m), dtype=np.int8), np.zeros((n, m), dtype=bool)


def cusum(z, *, k: float, h, state=None):
    """Two-sided tabular CUSUM.

    ``S+ = max(0, S+ + z - k)``, ``S- = max(0, S- - z - k)``; alarm when ``max(S+, S-) > h``,
    then both restart at 0.

    Parameters
    ----------
    z : array-like of shape (n_steps, n_charts)
        Standardised values; NaN leaves a chart unchanged at that step.
    k : float
        Reference value (half the shift to detect).
    h : float or array-like of shape (n_charts,)
        Decision interval per chart.
    state : ndarray of shape (2, n_charts), default=None
        ``(S+, S-)`` before the block (zeros by default).

    Returns
    -------
    statistic : ndarray of shape (n_steps, n_charts)
        ``max(S+, S-)`` before any restart (the value compared with ``h``).
    direction : ndarray of int of shape (n_steps, n_charts)
        +1 when the upper side is the larger, -1 otherwise.
    alarm : ndarray of bool of shape (n_steps, n_charts)
    state : ndarray of shape (2, n_charts)
        ``(S+, S-)`` after the block.

    Examples
    --------
    >>> import numpy as np
    >>> from sitekit.monitor import cusum
    >>> stat, _, alarm, _ = cusum(np.full((10, 1), 1.0), k=0.25, h=4.0)
    >>> int(np.argmax(alarm[:, 0]))
    5
    """
    z, stat, direction, alarm = _chart_arrays(z)
    n, m = z.shape
    h = np.broadcast_to(np.asarray(h, dtype=float), (m,))
    sp, sm = (np.zeros(m), np.zeros(m)) if state is None else (np.array(state[0], float),
                                                               np.array(state[1], float))
    for t in range(n):
        x = z[t]
        ok = np.isfinite(x)
        xv = np.where(ok, x, 0.0)
        sp = np.where(ok, np.maximum(0.0, sp + xv - k), sp)
        sm = np.where(ok, np.maximum(0.0, sm - xv - k), sm)
        s = np.maximum(sp, sm)
        stat[t] = np.where(ok, s, np.nan)
        direction[t] = np.where(sp >= sm, 1, -1)
        a = ok & (s > h)
        alarm[t] = a
        sp = np.where(a, 0.0, sp)
        sm = np.where(a, 0.0, sm)
    return stat, direction, alarm, np.vstack([sp, sm])


def ewma(z, *, lam: float, limit, state=None):
    """EWMA chart ``Z_t = lam z_t + (1 - lam) Z_{t-1}``; alarm when ``|Z_t| > limit``.

    Parameters
    ----------
    z : array-like of shape (n_steps, n_charts)
        Standardised values; NaN leaves a chart unchanged.
    lam : float
        Smoothing constant in (0, 1].
    limit : float or array-like of shape (n_charts,)
        ``L sqrt(lam / (2 - lam))`` (asymptotic limits).
    state : ndarray of shape (1, n_charts), default=None
        ``Z`` before the block (zeros by default).

    Returns
    -------
    statistic : ndarray of shape (n_steps, n_charts)
        ``|Z_t|``.
    direction : ndarray of int of shape (n_steps, n_charts)
        Sign of ``Z_t``.
    alarm : ndarray of bool of shape (n_steps, n_charts)
    state : ndarray of shape (1, n_charts)

    Examples
    --------
    >>> import numpy as np
    >>> from sitekit.monitor import ewma
    >>> stat, _, alarm, _ = ewma(np.full((20, 1), 1.0), lam=0.1, limit=0.5)
    >>> int(np.argmax(alarm[:, 0]))
    6
    """
    z, stat, direction, alarm = _chart_arrays(z)
    n, m = z.shape
    limit = np.broadcast_to(np.asarray(limit, dtype=float), (m,))
    e = np.zeros(m) if state is None else np.array(state[0], float)
    for t in range(n):
        x = z[t]
        ok = np.isfinite(x)
        e = np.where(ok, lam * np.where(ok, x, 0.0) + (1.0 - lam) * e, e)
        stat[t] = np.where(ok, np.abs(e), np.nan)
        direction[t] = np.where(e >= 0, 1, -1)
        a = ok & (np.abs(e) > limit)
        alarm[t] = a
        e = np.where(a, 0.0, e)
    return stat, direction, alarm, e[None, :]


#: The Westgard-style rules applied to QC series, in the order they are checked.
WESTGARD_RULES = ("1_3s", "2_2s", "10_x")


def westgard(z, *, state=None):
    """Westgard-style rules on a standardised QC series.

    ``1_3s``: one point beyond 3 SD; ``2_2s``: two points in a row beyond 2 SD on the same
    side; ``10_x``: ten points in a row on the same side of the mean.  The statistic is the
    number of the first rule that fires (1, 2, 3; 0 when none).

    Parameters
    ----------
    z : array-like of shape (n_steps, n_charts)
        Standardised QC values; NaN leaves a chart unchanged.
    state : ndarray of shape (2, n_charts), default=None
        ``(previous z, signed run length on one side)`` before the block.

    Returns
    -------
    statistic : ndarray of shape (n_steps, n_charts)
        ``|z|`` of the point.
    direction : ndarray of int of shape (n_steps, n_charts)
    alarm : ndarray of bool of shape (n_steps, n_charts)
    rule : ndarray of object of shape (n_steps, n_charts)
        The rule that fired (``""`` when none).
    state : ndarray of shape (2, n_charts)

    Examples
    --------
    >>> import numpy as np
    >>> from sitekit.monitor import westgard
    >>> _, _, alarm, rule, _ = westgard(np.array([[0.5], [2.5], [2.2]]))
    >>> rule[:, 0].tolist()
    ['', '', '2_2s']
    """
    z, stat, direction, alarm = _chart_arrays(z)
    n, m = z.shape
    prev, run = (np.zeros(m), np.zeros(m)) if state is None else (np.array(state[0], float),
                                                                  np.array(state[1], float))
    rule = np.full((n, m), "", dtype=object)
    for t in range(n):
        x = z[t]
        ok = np.isfinite(x)
        xv = np.where(ok, x, 0.0)
        sign = np.sign(xv)
        run_new = np.where(sign == 0, 0.0, np.where(np.sign(run) == sign, run + sign, sign))
        r13 = np.abs(xv) > 3.0
        r22 = (np.abs(xv) > 2.0) & (np.abs(prev) > 2.0) & (np.sign(prev) == sign)
        r10 = np.abs(run_new) >= 10
        fired = ok & (r13 | r22 | r10)
        stat[t] = np.where(ok, np.abs(xv), np.nan)
        direction[t] = np.where(xv >= 0, 1, -1)
        alarm[t] = fired
        rule[t] = np.where(ok & r13, "1_3s", np.where(ok & r22, "2_2s", np.where(ok & r10, "10_x", "")))
        # after an alarm the run restarts (the 10_x rule would otherwise fire at every point)
        prev = np.where(ok, np.where(fired, 0.0, xv), prev)
        run = np.where(ok, np.where(fired, 0.0, run_new), run)
    return stat, direction, alarm, rule, np.vstack([prev, run])
