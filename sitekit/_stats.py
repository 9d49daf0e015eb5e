"""Per-feature group tests with false-discovery-rate control, shared by every layer.

One implementation of the Kruskal-Wallis test over many features at once and of the
Benjamini-Hochberg adjustment, used by :class:`sitekit.harmonize.NestedComBat` (its batch-effect
test, ``batch_effect_test``) and by
:func:`sitekit.robustness.site_effects` (and through it the report).

Conventions (the same for every caller):

================  ================================================================================
missing cells     NaN (and +-inf) cells are left out of that feature's test only; the feature
                  is tested on its finite values.
ties              average ranks; H is divided by the tie correction
                  ``1 - sum(t**3 - t) / (n**3 - n)``, as :func:`scipy.stats.kruskal` does, so
                  H and p equal scipy's for every feature.
p-value           chi-squared survival function of H with ``g - 1`` degrees of freedom, ``g`` the
                  number of groups with at least one finite value in that feature.
untestable        a feature with fewer than two groups holding data, or whose finite values are
                  all equal (the tie correction is zero), gets NaN statistic, p- and q-value: it
                  was not tested, so it is not counted in the FDR family either.
Spearman          :func:`spearman_columns`: rank correlation of every feature with one numeric
                  variable on the rows where both are finite; the p-value is the two-sided
                  t approximation with ``n - 2`` degrees of freedom (that of
                  :func:`scipy.stats.spearmanr`).
FDR               Benjamini-Hochberg (``method="bh"`` of :func:`scipy.stats.false_discovery_control`)
                  over the tested features of one call (one grouping variable).
================  ================================================================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from sitekit.exceptions import ValidationError

__all__ = ["kruskal_columns", "spearman_columns", "fdr_bh", "kruskal_fdr"]


def _ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column: finite mask, average ranks among the finite cells (0 elsewhere), number of
    finite cells and the tie correction factor ``1 - sum(t^3 - t) / (n^3 - n)``.

    One sort of every column at once; runs of equal values get the mean of their positions.
    """
    finite = np.isfinite(values)
    n = finite.sum(axis=0).astype(float)
    # work on (features, samples), contiguous along the samples: sorting rows is fast
    # non-finite cells sort after every finite value, so the finite ranks are 1..n
    filled = np.ascontiguousarray(np.where(finite, values, np.inf).T)
    order = np.argsort(filled, axis=1)  # ties are averaged, so their order does not matter
    srt = np.take_along_axis(filled, order, axis=1)
    cols = values.shape[0]
    valid = np.arange(cols)[None, :] < n[:, None]
    starts = np.ones(srt.shape, dtype=bool)
    starts[:, 1:] = srt[:, 1:] != srt[:, :-1]
    starts &= valid
    ends = np.ones(srt.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:] | ~valid[:, 1:]
    pos = np.broadcast_to(np.arange(cols)[None, :], srt.shape)
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, cols)[:, ::-1], axis=1)[:, ::-1]
    avg = np.where(valid, (first + last) / 2.0 + 1.0, 0.0)
    ranks_t = np.empty(filled.shape)
    np.put_along_axis(ranks_t, order, avg, axis=1)
    ranks = ranks_t.T
    # tie correction: the run lengths t of equal sorted finite values
    runs_per_feature = starts.sum(axis=1)
    run_id = (np.cumsum(starts.ravel()) - 1)[valid.ravel()]
    t = np.bincount(run_id, minlength=int(runs_per_feature.sum())).astype(float)
    feature = np.repeat(np.arange(values.shape[1]), runs_per_feature)
    tsum = np.bincount(feature, weights=t**3 - t, minlength=values.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        tie = np.where(n >= 2, 1.0 - tsum / (n**3 - n), 1.0)
    return finite, ranks, n, tie


def kruskal_columns(values, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kruskal-Wallis H test of every column of ``values`` across the groups of ``labels``.

    Parameters
    ----------
    values : array-like of shape (n_samples, n_features)
        Feature values; non-finite cells are left out of their feature's test.
    labels : array-like of shape (n_samples,)
        Group of every row (e.g. the site).

    Returns
    -------
    statistic : ndarray of shape (n_features,)
        Tie-corrected H (NaN for untestable features, see the module conventions).
    p_value : ndarray of shape (n_features,)
    n : ndarray of shape (n_features,)
        Finite cells used per feature.
    n_groups : ndarray of shape (n_features,)
        Groups with at least one finite value per feature.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [np.nan]])
    >>> h, p, n, g = kruskal_columns(x, ["a", "a", "a", "b", "b", "b"])
    >>> round(float(h[0]), 3), int(n[0]), int(g[0])
    (3.0, 5, 2)
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValidationError(f"values must be 2-dimensional; got an array of shape {arr.shape}.")
    lab = np.asarray(labels, dtype=object)
    if lab.ndim != 1 or lab.shape[0] != arr.shape[0]:
        raise ValidationError(
            f"labels must have one entry per row of values ({arr.shape[0]}); got shape {lab.shape}."
        )
    finite, ranks, n, tie = _ranks(arr)
    ssum = np.zeros(arr.shape[1])
    n_groups = np.zeros(arr.shape[1])
    for level in pd.unique(lab):
        m = lab == level
        n_i = finite[m].sum(axis=0).astype(float)
        r_i = ranks[m].sum(axis=0)
        ssum += np.where(n_i > 0, r_i**2 / np.where(n_i > 0, n_i, 1.0), 0.0)
        n_groups += n_i > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        h = (12.0 / (n * (n + 1.0)) * ssum - 3.0 * (n + 1.0)) / tie
    ok = (n_groups >= 2) & (tie > 0) & np.isfinite(h)
    h = np.where(ok, np.maximum(h, 0.0), np.nan)
    p = np.where(ok, stats.chi2.sf(np.where(ok, h, 0.0), np.maximum(n_groups - 1, 1)), np.nan)
    return h, p, n, n_groups


def spearman_columns(values, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spearman rank correlation of every column of ``values`` with ``x``.

    Parameters
    ----------
    values : array-like of shape (n_samples, n_features)
        Non-finite cells are left out of their feature's correlation (with ``x``'s value on
        that row).
    x : array-like of shape (n_samples,)
        A numeric variable (e.g. age); non-finite entries are left out everywhere.

    Returns
    -------
    rho : ndarray of shape (n_features,)
        NaN when fewer than three complete pairs remain or either side is constant.
    p_value : ndarray of shape (n_features,)
    n : ndarray of shape (n_features,)
        Complete pairs per feature.

    Examples
    --------
    >>> import numpy as np
    >>> rho, p, n = spearman_columns(np.array([[1.0, 4.0], [2.0, 3.0], [3.0, np.nan], [4.0, 1.0]]),
    ...                              [10, 20, 30, 40])
    >>> rho.tolist(), n.tolist()
    ([1.0, -1.0], [4, 3])
    """
    arr = np.asarray(values, dtype=float)
    xv = np.asarray(x, dtype=float)
    if arr.ndim != 2 or xv.ndim != 1 or xv.shape[0] != arr.shape[0]:
        raise ValidationError(
            f"spearman_columns needs values of shape (n, p) and x of shape (n,); got "
            f"{arr.shape} and {xv.shape}."
        )
    ok = np.isfinite(arr) & np.isfinite(xv)[:, None]
    rho = np.full(arr.shape[1], np.nan)
    n = ok.sum(axis=0)

    def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ra = stats.rankdata(a, axis=0)
        rb = stats.rankdata(b)
        ra = ra - ra.mean(axis=0)
        rb = rb - rb.mean()
        den = np.sqrt((ra**2).sum(axis=0) * (rb**2).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (ra * rb[:, None]).sum(axis=0) / den, np.nan)

    full = ok.all(axis=0)
    if full.any():
        rho[full] = corr(arr[:, full], xv)
    for j in np.flatnonzero(~full):
        if n[j] >= 3:
            rho[j] = corr(arr[ok[:, j], j][:, None], xv[ok[:, j]])[0]
    rho = np.clip(rho, -1.0, 1.0)
    rho[n < 3] = np.nan
    dof = np.maximum(n - 2, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = rho * np.sqrt(dof / np.maximum((1.0 - rho) * (1.0 + rho), 1e-300))
    p = np.where(np.isfinite(rho), 2.0 * stats.t.sf(np.abs(t), dof), np.nan)
    return rho, p, n


def fdr_bh(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN entries stay NaN and are not counted.

    Parameters
    ----------
    p_values : array-like of shape (n_tests,)

    Returns
    -------
    ndarray of shape (n_tests,)

    Examples
    --------
    >>> fdr_bh([0.01, 0.04, float("nan"), 0.03]).round(3).tolist()
    [0.03, 0.04, nan, 0.04]
    """
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    tested = np.isfinite(p)
    if tested.any():
        q[tested] = stats.false_discovery_control(p[tested], method="bh")
    return q


def kruskal_fdr(values, labels) -> pd.DataFrame:
    """Per-feature Kruskal-Wallis test with Benjamini-Hochberg FDR, as one tidy table.

    Parameters
    ----------
    values : DataFrame or array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,)

    Returns
    -------
    DataFrame
        One row per feature in column order: ``feature``, ``statistic`` (H), ``p_value``,
        ``q_value``, ``n`` (finite cells), ``n_groups``, ``epsilon_squared``
        (``(H - g + 1) / (n - g)``, NaN when ``n <= g``).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"f": [1.0, 2.0, 3.0, 4.0], "g": [1.0, 1.0, 1.0, 1.0]})
    >>> kruskal_fdr(df, ["a", "a", "b", "b"])[["feature", "q_value"]].round(3).to_dict("list")
    {'feature': ['f', 'g'], 'q_value': [0.121, nan]}
    """
    names = ([str(c) for c in values.columns] if isinstance(values, pd.DataFrame)
             else [f"x{j}" for j in range(np.asarray(values).shape[1])])
    h, p, n, g = kruskal_columns(values, labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        eps2 = np.where(n > g, (h - g + 1.0) / (n - g), np.nan)
    return pd.DataFrame({"feature": names, "statistic": h, "p_value": p, "q_value": fdr_bh(p),
                         "n": n.astype(int), "n_groups": g.astype(int), "epsilon_squared": eps2})
