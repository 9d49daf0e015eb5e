"""The numerical core of ComBat as pure numpy functions on sufficient statistics.

Everything here is vectorised over features; the only Python loops run over sites
(a handful) or over row chunks of the data matrix (to bound memory).  The functions take
and return plain arrays so that other engines can reuse them unchanged:

* a local fit (:class:`sitekit.harmonize.ComBat`) calls them on one in-memory matrix;
* an out-of-core / cluster fit computes the same sums block by block and adds them up;
* a federated fit lets every site compute its own sums and sends only those.

The pipeline, for samples x features data ``Y`` (n x F), design ``D`` (n x p, see
:mod:`sitekit.harmonize._design`) and sites ``0..K-1``:

1. :func:`ols_cross_products` -- ``D'D`` and ``D'Y`` (NaN cells count as absent: features
   with missing cells get their own ``D'D``).  Sums over row blocks or over sites add up.
2. :func:`solve_ols` -- ``B = (D'D)^-1 D'Y`` per feature (p x F).
3. :func:`residual_moments` -- per site and feature: n, sum R, sum R^2 of the residuals
   ``R = Y - D B``.  Again additive over row blocks/sites.
4. :func:`pooled_variance` and :func:`standardized_moments` -- ``sigma^2`` per feature and
   the per-site sufficient statistics of ``Z = (Y - alpha - C beta) / sigma``:
   ``n``, ``s1 = sum Z``, ``s2 = sum Z^2`` and the centred ``m2 = sum (Z - mean Z)^2``.
5. :func:`fit_eb` -- gamma/delta hat, priors, and gamma/delta star (parametric,
   non-parametric, mean-only or no EB), from ``(n, s1, s2)`` alone.
6. :func:`adjust` -- apply the fitted location/scale to a data matrix, chunk by chunk.

Shapes: per-site-and-feature arrays are (K, F); per-site priors are (K,); per-feature
arrays are (F,).  Cells that cannot be estimated (no sample of that site has the feature)
hold NaN in the ``*_hat`` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sitekit.exceptions import NumericalError

__all__ = [
    "CrossProducts",
    "EBFit",
    "ols_cross_products",
    "solve_ols",
    "SiteMoments",
    "residual_moments",
    "site_moments_complete",
    "pooled_variance",
    "standardized_moments",
    "estimate_priors",
    "fit_eb",
    "parametric_eb",
    "nonparametric_eb",
    "support_inclusion",
    "adjust",
    "row_chunks",
    "extreme_scale",
    "add_moments",
    "SiteCoMoments",
    "block_comoments",
    "merge_comoments",
    "comoments_to_moments",
]

#: float64 cells per row block of the streaming passes (2 MB: the block and its temporaries
#: stay in cache, so several numpy operations on a block cost about one pass over memory)
_BLOCK_CELLS = 1 << 18
#: cells per row block of the cross-products pass (views, no temporaries: big blocks, 32 MB)
_NONPAR_BLOCK_CELLS = 4_000_000
#: cells per block of the features x features matrices of the non-parametric EB (2 MB: the
#: block and its temporaries stay in cache, ~3x faster than 32 MB blocks)
_PAIR_BLOCK_CELLS = 1 << 18
#: floor of |gamma| in the relative convergence test of the parametric iteration
_GAMMA_EPS = 1e-8


def row_chunks(n_rows: int, n_cols: int, block_cells: int = _BLOCK_CELLS):
    """Yield ``slice`` objects covering ``range(n_rows)`` in blocks of about ``block_cells`` cells."""
    step = max(1, block_cells // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


# --------------------------------------------------------------------------- OLS
@dataclass
class CrossProducts:
    """Cross-products of a design ``D`` (n x p) and data ``Y`` (n x F).

    Attributes
    ----------
    dtd : ndarray of shape (p, p)
        ``D'D`` over all rows (used by features without missing cells).
    dty : ndarray of shape (p, F)
        ``D'Y`` with missing cells counted as 0.
    missing : ndarray of int, shape (k,)
        Indices of the features that have missing cells.
    dtd_missing : ndarray of shape (k, p, p)
        ``D'D`` over the observed rows of each of those features.

    Two ``CrossProducts`` of disjoint row sets add up (``a + b``): this is how a block-wise
    or federated engine combines them (the ``missing`` sets are merged).
    """

    dtd: np.ndarray
    dty: np.ndarray
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    dtd_missing: np.ndarray | None = None

    def __add__(self, other: CrossProducts) -> CrossProducts:
        p, F = self.dty.shape
        missing = np.union1d(self.missing, other.missing).astype(np.intp)
        dtd_missing = np.empty((missing.size, p, p))
        for cp, out in ((self, 0), (other, 1)):
            pos = np.searchsorted(missing, cp.missing)
            block = np.broadcast_to(cp.dtd, (missing.size, p, p)).copy()
            if cp.missing.size:
                block[pos] = cp.dtd_missing
            if out == 0:
                dtd_missing[...] = block
            else:
                dtd_missing += block
        return CrossProducts(self.dtd + other.dtd, self.dty + other.dty, missing, dtd_missing)


def ols_cross_products(Y: np.ndarray, D: np.ndarray, *, observed: np.ndarray | None = None) -> CrossProducts:
    """Compute ``D'D`` and ``D'Y`` treating NaN cells of ``Y`` as absent.

    Parameters
    ----------
    Y : ndarray of shape (n, F)
        Data, NaN for missing cells.
    D : ndarray of shape (n, p)
        Design.
    observed : ndarray of bool, shape (F,), optional
        ``True`` for features known to have no missing cell (skips the NaN scan).

    Returns
    -------
    CrossProducts
    """
    n, F = Y.shape
    p = D.shape[1]
    has_nan = np.zeros(F, dtype=bool)
    dty = np.zeros((p, F))
    for sl in row_chunks(n, F, _NONPAR_BLOCK_CELLS):  # views, no temporaries: big blocks
        block = Y[sl]
        part = D[sl].T @ block
        # a NaN cell propagates into its column of D'Y (every row has a site indicator),
        # so the NaN scan is only needed for the columns whose product came out NaN
        col_nan = np.isnan(part).any(axis=0)
        if col_nan.any():
            cols = np.flatnonzero(col_nan)
            sub = block[:, cols]
            nan = np.isnan(sub)
            has_nan[cols] |= nan.any(axis=0)
            sub[nan] = 0.0
            part[:, cols] = D[sl].T @ sub
        dty += part
    missing = np.flatnonzero(has_nan)
    dtd_missing = None
    if missing.size:
        pairs = (D[:, :, None] * D[:, None, :]).reshape(n, p * p)
        dtd_missing = np.zeros((missing.size, p * p))
        for sl in row_chunks(n, missing.size):
            obs = ~np.isnan(Y[sl][:, missing])
            dtd_missing += obs.T.astype(np.float64) @ pairs[sl]
        dtd_missing = dtd_missing.reshape(missing.size, p, p)
    return CrossProducts(D.T @ D, dty, missing, dtd_missing)


def solve_ols(cp: CrossProducts) -> np.ndarray:
    """Least-squares coefficients ``B = (D'D)^-1 D'Y`` per feature, shape (p, F).

    A design column that is all zero on a feature's observed rows (a site without any
    observation of that feature) gets coefficient 0: it is dropped for that feature and
    the other coefficients are those of the reduced design.
    """
    B = np.linalg.solve(cp.dtd, cp.dty) if cp.dty.size else np.zeros_like(cp.dty)
    if cp.missing.size:
        A = cp.dtd_missing.copy()
        diag = np.einsum("kii->ki", A)
        empty = diag == 0
        if empty.any():
            k, j = np.nonzero(empty)
            A[k, j, j] = 1.0  # D'Y is 0 there, so the coefficient solves to 0
        B[:, cp.missing] = np.linalg.solve(A, cp.dty[:, cp.missing].T[..., None])[..., 0].T
    return B


@dataclass
class SiteMoments:
    """Per-site sums of the residuals ``R = Y - D B``, each of shape (K, F).

    Attributes
    ----------
    n : observed (non-NaN) cells per site and feature.
    r1, r2 : sum of R and of R^2 over the observed cells.
    ymin, ymax : smallest and largest observed raw value (NaN where none); a feature is
        constant within a site exactly when ``ymin == ymax`` there.
    scale : ndarray of shape (F,), optional
        Powers of two: ``r1`` and ``r2`` are the sums of ``R / scale`` and ``(R / scale)^2``
        (``None`` means 1 everywhere).  Features of extreme magnitude (beyond about
        ``1e120`` or below ``1e-120``) are summed scaled, so that squares neither overflow
        nor underflow; powers of two make the scaling exact.

    Moments of disjoint row sets add up (``n``, ``r1``, ``r2`` after bringing them to one
    ``scale``, see :func:`add_moments`; ``ymin``/``ymax`` combine with ``np.fmin``/``np.fmax``).
    """

    n: np.ndarray
    r1: np.ndarray
    r2: np.ndarray
    ymin: np.ndarray
    ymax: np.ndarray
    scale: np.ndarray | None = None

    def scales(self) -> np.ndarray:
        """The per-feature scale, ones when none was needed."""
        return np.ones(self.n.shape[1]) if self.scale is None else self.scale


#: features whose largest magnitude is beyond 2**400 (~2.6e120) or below 2**-400 are summed
#: scaled by a power of two (squares of 2**512 overflow, of 2**-537 underflow)
_EXTREME_EXP = 400


def extreme_scale(ymin: np.ndarray, ymax: np.ndarray) -> np.ndarray:
    """Per-feature power-of-two scale for features of extreme magnitude (1 elsewhere).

    Parameters
    ----------
    ymin, ymax : ndarray of shape (K, F) or (F,)
        Smallest and largest observed values (NaN where none).

    Returns
    -------
    ndarray of shape (F,)
        ``2**e`` with ``|y| / 2**e`` in [0.5, 1) for the largest ``|y|`` of a feature whose
        magnitude is beyond ``2**400`` or below ``2**-400`` (and not 0); 1 elsewhere.
    """
    with np.errstate(invalid="ignore"):
        big = np.fmax(np.abs(ymin), np.abs(ymax))
        if big.ndim == 2:
            big = np.fmax.reduce(big, axis=0) if big.shape[0] else np.zeros(big.shape[1])
    big = np.nan_to_num(big, nan=0.0)
    _, e = np.frexp(big)
    extreme = (e > _EXTREME_EXP) | ((big > 0) & (e < -_EXTREME_EXP))
    return np.where(extreme, np.ldexp(1.0, e), 1.0)


def add_moments(a: SiteMoments, b: SiteMoments) -> SiteMoments:
    """Moments of the union of two disjoint row sets (brought to a common scale first)."""
    if a.scale is None and b.scale is None:
        return SiteMoments(a.n + b.n, a.r1 + b.r1, a.r2 + b.r2,
                           np.fmin(a.ymin, b.ymin), np.fmax(a.ymax, b.ymax))
    sa, sb = a.scales(), b.scales()
    s = np.maximum(sa, sb)
    fa, fb = sa / s, sb / s  # powers of two: exact
    return SiteMoments(
        a.n + b.n, a.r1 * fa + b.r1 * fb, a.r2 * fa**2 + b.r2 * fb**2,
        np.fmin(a.ymin, b.ymin), np.fmax(a.ymax, b.ymax), s,
    )


def _rescale_extreme(mom: SiteMoments, compute) -> SiteMoments:
    """Redo the sums of the extreme-magnitude features of ``mom`` on scaled data.

    ``compute(cols, scale)`` returns the moments of the columns ``cols`` of the data divided
    by ``scale`` (shape (len(cols),)); only those columns are copied.
    """
    scale = extreme_scale(mom.ymin, mom.ymax)
    cols = np.flatnonzero(scale != 1.0)
    if not cols.size:
        return mom
    sub = compute(cols, scale[cols])
    r1, r2 = mom.r1.copy(), mom.r2.copy()
    r1[:, cols] = sub.r1
    r2[:, cols] = sub.r2
    return SiteMoments(mom.n, r1, r2, mom.ymin, mom.ymax, scale)


def _site_rows(codes: np.ndarray, site: int):
    idx = np.flatnonzero(codes == site)
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1), idx.size
    return idx, idx.size


def residual_moments(
    Y: np.ndarray,
    D: np.ndarray,
    B: np.ndarray,
    codes: np.ndarray,
    n_sites: int,
    *,
    missing: np.ndarray | None = None,
) -> SiteMoments:
    """Per site and feature: count, sum and sum of squares of ``R = Y - D B`` (NaN skipped).

    Parameters
    ----------
    Y : ndarray of shape (n, F)
    D : ndarray of shape (n, p)
        Design whose first ``n_sites`` columns are the site indicators (as built by
        :func:`sitekit.harmonize._design.design_matrix`); the fitted value of a row of site
        ``i`` is then ``B[i] + D[row, n_sites:] @ B[n_sites:]``.
    B : ndarray of shape (p, F)
    codes : ndarray of int, shape (n,)
        Site code of each row, ``0 <= code < n_sites``.
    n_sites : int
    missing : ndarray of int, optional
        Features that have NaN cells (``CrossProducts.missing``); when given, the NaN scan is
        limited to them.  ``None`` scans every feature.

    Returns
    -------
    SiteMoments
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        mom = _residual_moments(Y, D, B, codes, n_sites, missing=missing)

    def scaled(cols, scale):
        Ys = Y[:, cols] / scale
        miss = None if missing is None else np.flatnonzero(np.isin(cols, missing))
        return _residual_moments(Ys, D, B[:, cols] / scale, codes, n_sites, missing=miss)

    return _rescale_extreme(mom, scaled)


def _residual_moments(Y, D, B, codes, n_sites, *, missing=None) -> SiteMoments:
    N, F = Y.shape
    n = np.zeros((n_sites, F))
    r1 = np.zeros((n_sites, F))
    r2 = np.zeros((n_sites, F))
    ymin = np.full((n_sites, F), np.nan)
    ymax = np.full((n_sites, F), np.nan)
    Dc, Bc = D[:, n_sites:], B[n_sites:]
    has_cov = Dc.shape[1] > 0
    step = next(iter(row_chunks(N, F))).stop if N else 0
    buf = np.empty((step, F))
    gather = np.empty((step, F), dtype=Y.dtype)
    for i in range(n_sites):
        rows, size = _site_rows(codes, i)
        if size == 0:
            continue
        if isinstance(rows, slice):
            chunks = [slice(rows.start + c.start, rows.start + c.stop) for c in row_chunks(size, F)]
        else:
            chunks = [rows[c] for c in row_chunks(size, F)]
        for rs in chunks:
            if isinstance(rs, slice):
                Yb = Y[rs]
            else:
                Yb = np.take(Y, rs, axis=0, out=gather[: rs.size], mode="clip")
            np.fmin(ymin[i], np.fmin.reduce(Yb, axis=0), out=ymin[i])
            np.fmax(ymax[i], np.fmax.reduce(Yb, axis=0), out=ymax[i])
            R = np.subtract(Yb, B[i], out=buf[: Yb.shape[0]])
            if has_cov:
                R -= Dc[rs] @ Bc
            cnt = R.shape[0]
            if missing is None:
                nan = np.isnan(R)
                has = nan.any()
            else:
                has = missing.size > 0
                if has:
                    nan_m = np.isnan(R[:, missing])
                    has = nan_m.any()
            if has:
                if missing is None:
                    n[i] += cnt - nan.sum(axis=0)
                    R[nan] = 0.0
                else:
                    n[i] += cnt
                    n[i, missing] -= nan_m.sum(axis=0)
                    sub = R[:, missing]
                    sub[nan_m] = 0.0
                    R[:, missing] = sub
            else:
                n[i] += cnt
            r1[i] += R.sum(axis=0)
            r2[i] += np.einsum("ij,ij->j", R, R)
    return SiteMoments(n, r1, r2, ymin, ymax)


def site_moments_complete(
    Y: np.ndarray, codes: np.ndarray, n_sites: int, *, block_cells: int = _BLOCK_CELLS
) -> tuple[np.ndarray, SiteMoments] | None:
    """One-pass fit for the common case: no covariates and no missing cells.

    With a design of site indicators only, the OLS coefficients are the site means and the
    residuals are deviations from them, so a single pass over the data gives everything:
    per site and feature the count, mean, centred sum of squares (merged over row blocks
    with Chan et al.'s pairwise update, numerically stable) and the extremes.

    Parameters
    ----------
    Y : ndarray of shape (n, F)
    codes : ndarray of int, shape (n,)
    n_sites : int
    block_cells : int
        Cells per row block (the blocks are merged pairwise).

    Returns
    -------
    (site_means, SiteMoments) or None
        ``site_means`` (n_sites, F) are the OLS coefficients ``B``; ``SiteMoments`` as from
        :func:`residual_moments` (``r1`` is 0: residuals sum to zero within each site).
        ``None`` if a NaN cell is met (use the general path).
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        got = _site_moments_complete(Y, codes, n_sites, block_cells)
    if got is None:
        return None
    mean, mom = got
    scaled_means = {}

    def scaled(cols, scale):
        sub_mean, sub = _site_moments_complete(Y[:, cols] / scale, codes, n_sites, block_cells)
        scaled_means["m"] = (cols, sub_mean * scale)
        return sub

    mom = _rescale_extreme(mom, scaled)
    if scaled_means:  # the means of the rescaled features, summed without overflow
        cols, m = scaled_means["m"]
        mean[:, cols] = m
    return mean, mom


def _site_moments_complete(Y, codes, n_sites, block_cells):
    N, F = Y.shape
    n = np.zeros((n_sites, F))
    mean = np.zeros((n_sites, F))
    m2 = np.zeros((n_sites, F))
    ymin = np.full((n_sites, F), np.nan)
    ymax = np.full((n_sites, F), np.nan)
    step = next(iter(row_chunks(N, F, block_cells))).stop if N else 0
    buf = np.empty((step, F))
    gather = np.empty((step, F), dtype=Y.dtype)
    for i in range(n_sites):
        rows, size = _site_rows(codes, i)
        if size == 0:
            continue
        if isinstance(rows, slice):
            chunks = [slice(rows.start + c.start, rows.start + c.stop)
                      for c in row_chunks(size, F, block_cells)]
        else:
            chunks = [rows[c] for c in row_chunks(size, F, block_cells)]
        count = 0.0
        for rs in chunks:
            if isinstance(rs, slice):
                Yb = Y[rs]
            else:
                Yb = np.take(Y, rs, axis=0, out=gather[: rs.size], mode="clip")
            nb = Yb.shape[0]
            mb = Yb.sum(axis=0, dtype=np.float64) / nb
            if np.isnan(mb).any():
                return None
            R = np.subtract(Yb, mb, out=buf[:nb])
            m2b = np.einsum("ij,ij->j", R, R)
            np.fmin(ymin[i], np.fmin.reduce(Yb, axis=0), out=ymin[i])
            np.fmax(ymax[i], np.fmax.reduce(Yb, axis=0), out=ymax[i])
            total = count + nb
            delta = mb - mean[i]
            mean[i] += delta * (nb / total)
            m2[i] += m2b + delta**2 * (count * nb / total)
            count = total
        n[i] = count
    return mean, SiteMoments(n, np.zeros_like(m2), m2, ymin, ymax)


@dataclass
class SiteCoMoments:
    """Per-site centred co-moments of data ``Y`` and covariate columns ``Dc`` (one pass).

    For site ``i`` (rows ``j`` of that site): ``n``; the means ``ymean`` of ``Y / scale`` and
    ``dmean`` of ``Dc``; ``cyy = sum (y - ymean)^2`` (F,), ``cdy = sum (d - dmean)(y - ymean)``
    (q x F) and ``cdd = sum (d - dmean)(d - dmean)'`` (q x q); ``ymin``/``ymax`` of the raw
    values.  ``Y``-quantities are in units of ``scale`` (powers of two per feature, see
    :class:`SiteMoments`).  Two disjoint row sets merge exactly with Chan et al.'s pairwise
    update (:func:`merge_comoments`), so a single pass over row blocks gives everything the
    fit needs (:func:`comoments_to_moments`): by Frisch-Waugh the covariate effects are the
    within-site regression ``(sum_i cdd_i)^-1 sum_i cdy_i`` and the site levels
    ``ymean_i - dmean_i' beta``.

    Attributes
    ----------
    n : ndarray of shape (K,)
    ymean, cyy, ymin, ymax : ndarray of shape (K, F)
    dmean : ndarray of shape (K, q)
    cdy : ndarray of shape (K, q, F)
    cdd : ndarray of shape (K, q, q)
    scale : ndarray of shape (F,)
    """

    n: np.ndarray
    ymean: np.ndarray
    dmean: np.ndarray
    cyy: np.ndarray
    cdy: np.ndarray
    cdd: np.ndarray
    ymin: np.ndarray
    ymax: np.ndarray
    scale: np.ndarray


#: block_comoments works on groups of features whose rows fit in ~4 MB (in cache)
_GROUP_ELEMENTS = 1 << 19


def block_comoments(Y: np.ndarray, Dc: np.ndarray, codes: np.ndarray, n_sites: int) -> SiteCoMoments | None:
    """Co-moments of one row block without missing cells (``None`` if it has a NaN or an
    infinite cell).

    Parameters
    ----------
    Y : ndarray of shape (n, F), or a sequence of F arrays of shape (n,)
        float64 or float32 (sums are accumulated in float64); C or Fortran order (a pandas
        partition read from Parquet is Fortran-ordered and is used without a copy), or the
        columns one by one (numpy views of arrow buffers).
    Dc : ndarray of shape (n, q)
        Covariate (and extra) design columns, without the site indicators.
    codes : ndarray of int, shape (n,)
    n_sites : int

    Notes
    -----
    One read of ``Y``: features are taken in groups whose rows fit in the cache, copied
    (as float64, exact for float32) into a reused buffer with the rows grouped by site, and
    every statistic of the group (minimum, maximum, mean, centred sums of squares and
    cross-products) is computed there with exact two-pass centring.  No array of the
    block's size is allocated: on a dask worker, whose allocator returns freed memory to
    the system, every large fresh allocation costs page faults.
    """
    columns = None if isinstance(Y, np.ndarray) else list(Y)
    N = len(codes)
    F = Y.shape[1] if columns is None else len(columns)
    q = Dc.shape[1]
    K = n_sites
    n = np.bincount(codes, minlength=K).astype(np.float64) if N else np.zeros(K)
    ymean = np.zeros((K, F))
    dmean = np.zeros((K, q))
    cyy = np.zeros((K, F))
    cdy = np.zeros((K, q, F))
    cdd = np.zeros((K, q, q))
    ymin = np.full((K, F), np.nan)
    ymax = np.full((K, F), np.nan)
    scale = np.ones(F)
    if N == 0 or F == 0:
        return SiteCoMoments(n, ymean, dmean, cyy, cdy, cdd, ymin, ymax, scale)
    # rows grouped by site: site i holds rows bounds[i]:bounds[i + 1] of the buffer
    order = None if np.all(codes[1:] >= codes[:-1]) else np.argsort(codes, kind="stable")
    bounds = np.r_[0, np.cumsum(n.astype(np.intp))]
    sites = [i for i in range(K) if n[i] > 0]
    dcs = {}
    for i in sites:
        rows = slice(bounds[i], bounds[i + 1]) if order is None else order[bounds[i]:bounds[i + 1]]
        d = Dc[rows]
        dmean[i] = d.mean(axis=0)
        dcs[i] = d - dmean[i]
        cdd[i] = dcs[i].T @ dcs[i]
    g = int(max(1, min(F, _GROUP_ELEMENTS // N)))
    copied = np.empty((N, g))
    grouped = copied if order is None else np.empty((N, g))
    for j0 in range(0, F, g):
        j1 = min(F, j0 + g)
        w = j1 - j0
        if columns is None:
            np.copyto(copied[:, :w], Y[:, j0:j1])
        else:
            for k in range(w):
                copied[:, k] = columns[j0 + k]
        G = grouped[:, :w]
        if order is not None:
            np.take(copied[:, :w], order, axis=0, out=G, mode="clip")
        for i in sites:
            Gs = G[bounds[i]:bounds[i + 1]]
            np.minimum.reduce(Gs, axis=0, out=ymin[i, j0:j1])
            np.maximum.reduce(Gs, axis=0, out=ymax[i, j0:j1])
        if np.isinf(ymin[:, j0:j1]).any() or np.isinf(ymax[:, j0:j1]).any():
            return None  # inf: the caller's two-pass route checks the block and refuses it
        sc = extreme_scale(ymin[:, j0:j1], ymax[:, j0:j1])
        scale[j0:j1] = sc
        if (sc != 1.0).any():
            G /= sc
        for i in sites:
            Gs = G[bounds[i]:bounds[i + 1]]
            mu = Gs.sum(axis=0) / n[i]
            if np.isnan(mu).any():  # a missing cell: the caller takes the two-pass route
                return None
            Gs -= mu
            ymean[i, j0:j1] = mu
            cyy[i, j0:j1] = np.einsum("ij,ij->j", Gs, Gs)
            if q:
                cdy[i, :, j0:j1] = dcs[i].T @ Gs
    return SiteCoMoments(n, ymean, dmean, cyy, cdy, cdd, ymin, ymax, scale)


def merge_comoments(a: SiteCoMoments, b: SiteCoMoments) -> SiteCoMoments:
    """Co-moments of the union of two disjoint row sets (Chan et al.'s update, per site)."""
    s = np.maximum(a.scale, b.scale)
    fa, fb = a.scale / s, b.scale / s  # powers of two: exact
    na, nb = a.n[:, None], b.n[:, None]
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        wb = np.where(n > 0, nb / np.where(n > 0, n, 1), 0.0)
        wab = np.where(n > 0, na * nb / np.where(n > 0, n, 1), 0.0)
    ya, yb = a.ymean * fa, b.ymean * fb
    dy = yb - ya
    dd = b.dmean - a.dmean
    ymean = ya + dy * wb
    dmean = a.dmean + dd * wb
    cyy = a.cyy * fa**2 + b.cyy * fb**2 + dy**2 * wab
    cdy = a.cdy * fa + b.cdy * fb + (dd * wab)[:, :, None] * dy[:, None, :]
    cdd = a.cdd + b.cdd + (dd * wab)[:, :, None] * dd[:, None, :]
    return SiteCoMoments(
        n[:, 0], ymean, dmean, cyy, cdy, cdd, np.fmin(a.ymin, b.ymin), np.fmax(a.ymax, b.ymax), s
    )


def comoments_to_moments(cm: SiteCoMoments) -> tuple[np.ndarray, SiteMoments]:
    """OLS coefficients ``B`` (K + q, F) and residual :class:`SiteMoments` from co-moments.

    The design is ``[site indicators | Dc]`` (full rank is checked by the caller).  Residual
    sums of squares come from the within-site quadratic form ``cyy - 2 beta' cdy + beta'
    cdd beta``; ``r1`` is 0 (residuals sum to zero within each site).
    """
    K, F = cm.ymean.shape
    q = cm.dmean.shape[1]
    if q:
        beta_s = np.linalg.solve(cm.cdd.sum(axis=0), cm.cdy.sum(axis=0))  # (q, F), scaled
        level_s = cm.ymean - cm.dmean @ beta_s
        r2 = (cm.cyy - 2 * np.einsum("kqf,qf->kf", cm.cdy, beta_s)
              + np.einsum("qf,kqr,rf->kf", beta_s, cm.cdd, beta_s))
        r2 = np.maximum(r2, 0.0)
    else:
        beta_s = np.zeros((0, F))
        level_s = cm.ymean
        r2 = cm.cyy
    with np.errstate(over="ignore"):
        B = np.vstack([level_s * cm.scale, beta_s * cm.scale])
    n = np.repeat(cm.n[:, None], F, axis=1)
    scale = None if (cm.scale == 1.0).all() else cm.scale
    return B, SiteMoments(n, np.zeros((K, F)), r2, cm.ymin, cm.ymax, scale)


def pooled_variance(n: np.ndarray, r1: np.ndarray, r2: np.ndarray, *, ref: int | None = None) -> np.ndarray:
    """Pooled residual variance per feature (denominator: the number of observed cells).

    ``sigma^2_g = sum_sites sum_j R^2 / sum_sites n`` (as ``sva::ComBat`` on complete data:
    mean of squared residuals over all samples), or over the reference site only.
    ``r1`` is accepted for symmetry with :func:`residual_moments` (it is ~0 at the OLS fit).
    """
    if ref is not None:
        num, den = r2[ref], n[ref]
    else:
        num, den = r2.sum(axis=0), n.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def standardized_moments(
    n: np.ndarray, r1: np.ndarray, r2: np.ndarray, offset: np.ndarray, var: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums of ``Z = (R + offset) / sigma`` per site and feature from residual sums.

    Parameters
    ----------
    n, r1, r2 : ndarray of shape (K, F)
        From :func:`residual_moments`.
    offset : ndarray of shape (K, F)
        ``B_site - alpha``: the site's fitted level minus the grand mean.
    var : ndarray of shape (F,)
        Pooled variance.

    Returns
    -------
    s1, s2, m2 : ndarray of shape (K, F)
        ``sum Z``, ``sum Z^2`` and the centred ``sum (Z - mean Z)^2`` (computed without
        cancellation; pass it to :func:`fit_eb` as ``m2`` when available).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(var)
        s1 = (r1 + n * offset) / sd
        s2 = (r2 + 2 * offset * r1 + n * offset**2) / var
        m2 = np.maximum(r2 - np.where(n > 0, r1**2 / np.where(n > 0, n, 1), 0.0), 0.0) / var
    return s1, s2, m2


# --------------------------------------------------------------------------- EB
@dataclass
class EBFit:
    """Result of :func:`fit_eb`; per-site-and-feature arrays are (K, F), priors (K,).

    Attributes
    ----------
    n : per-cell sample counts.
    gamma_hat, delta_hat : per-cell location (mean of Z) and scale (variance of Z, ddof=1);
        NaN where not estimable (n == 0, or n < 2 for delta; delta_hat is 1 under mean-only).
    gamma_star, delta_star : the (EB-shrunk) estimates used to adjust.
    gamma_bar, tau2 : normal prior of gamma per site (mean, variance over features).
    a_prior, b_prior : inverse-gamma prior of delta per site (NaN when not used).
    n_iter : parametric iterations per site (0 when not iterated).
    eb_used : whether EB shrinkage was applied to each site (False when the priors could not
        be estimated, e.g. fewer than two features).
    mean_only_site : whether each site was fitted location-only (``mean_only`` or < 2 samples).
    converged : whether each site's parametric iteration met ``tol`` within ``max_iter``.
    """

    n: np.ndarray
    gamma_hat: np.ndarray
    delta_hat: np.ndarray
    gamma_star: np.ndarray
    delta_star: np.ndarray
    gamma_bar: np.ndarray
    tau2: np.ndarray
    a_prior: np.ndarray
    b_prior: np.ndarray
    n_iter: np.ndarray
    eb_used: np.ndarray
    mean_only_site: np.ndarray
    converged: np.ndarray


def estimate_priors(gamma_hat: np.ndarray, delta_hat: np.ndarray, use: np.ndarray):
    """Method-of-moments hyper-priors per site over the features where ``use`` is True.

    ``gamma ~ N(gamma_bar, tau2)``; ``delta ~ InvGamma(a, b)`` with mean V and variance S2
    of ``delta_hat``: ``a = (2 S2 + V^2) / S2``, ``b = (V S2 + V^3) / S2`` (as ``sva``).

    Returns
    -------
    gamma_bar, tau2, a_prior, b_prior : ndarray of shape (K,)
        NaN where fewer than two usable features.
    """

    def _mean_var(x, m):
        cnt = m.sum(axis=1)
        x0 = np.where(m, x, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = x0.sum(axis=1) / cnt
            var = (np.where(m, x - mean[:, None], 0.0) ** 2).sum(axis=1) / (cnt - 1)
        mean[cnt < 1] = np.nan
        var[cnt < 2] = np.nan
        return mean, var

    gmask = use & np.isfinite(gamma_hat)
    dmask = use & np.isfinite(delta_hat)
    gamma_bar, tau2 = _mean_var(gamma_hat, gmask)
    V, S2 = _mean_var(delta_hat, dmask)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (2 * S2 + V**2) / S2
        b = (V * S2 + V**3) / S2
    return gamma_bar, tau2, a, b


def parametric_eb(
    n, s1, s2, gamma_hat, delta_hat, gamma_bar, tau2, a, b, *, tol=1e-4, max_iter=1000
):
    """Parametric EB for one site, vectorised over its features.

    Iterates ``gamma* = (n tau2 gamma_hat + delta* gamma_bar) / (n tau2 + delta*)`` and
    ``delta* = (0.5 sum (Z - gamma*)^2 + b) / (n/2 + a - 1)`` from ``gamma* = gamma_hat``,
    ``delta* = delta_hat`` until ``max(|d gamma| / (|gamma| + 1e-8), |d delta| / delta)
    <= tol`` (sva divides by the signed gamma, which lets negative gammas stop early).
    ``sum (Z - g)^2 = s2 - 2 g s1 + n g^2`` needs only the sufficient statistics.

    Parameters
    ----------
    n, s1, s2, gamma_hat, delta_hat : ndarray of shape (F,)
    gamma_bar, tau2, a, b : float
    tol : float
    max_iter : int

    Returns
    -------
    gamma_star, delta_star : ndarray of shape (F,)
    n_iter : int
    converged : bool
    """
    g_old, d_old = gamma_hat.copy(), delta_hat.copy()
    it, change = 0, np.inf
    if gamma_hat.size == 0:
        return g_old, d_old, 0, True
    while change > tol and it < max_iter:
        g_new = (tau2 * n * gamma_hat + d_old * gamma_bar) / (tau2 * n + d_old)
        sum2 = s2 - 2 * g_new * s1 + n * g_new**2
        d_new = (0.5 * sum2 + b) / (n / 2 + a - 1)
        change = max(
            np.max(np.abs(g_new - g_old) / (np.abs(g_old) + _GAMMA_EPS)),
            np.max(np.abs(d_new - d_old) / d_old),
        )
        g_old, d_old = g_new, d_new
        it += 1
    return g_old, d_old, it, bool(change <= tol)


def support_inclusion(n, gamma_hat, delta_hat, size: int) -> np.ndarray:
    """Inclusion probabilities of a site's features in the sampled prior support.

    Features in sparse regions of the ``(gamma_hat, log delta_hat)`` plane are drawn with
    higher probability than those in dense ones: an outlying target's likelihood weights
    concentrate on the few features that resemble it, and a uniform sample holds too few of
    them.  The plane is scaled as the log-likelihood weights are (``gamma`` by
    ``sqrt(n / (2 delta))``, ``log delta`` by ``sqrt(n / 4)``, at the site's median ``n``
    and ``delta``) and cut into a grid of cells; a feature's probability is
    ``min(1, c / count of its cell)``, with ``c`` set so that the probabilities sum to
    ``size``.

    Parameters
    ----------
    n, gamma_hat, delta_hat : ndarray of shape (F,)
        Only usable features.
    size : int
        Expected support size, ``1 <= size <= F``.

    Returns
    -------
    ndarray of shape (F,)
        Probabilities in ``(0, 1]`` summing to ``size``.
    """
    F = gamma_hat.size
    if size >= F:
        return np.ones(F)
    nm, dm = float(np.median(n)), float(np.median(delta_hat))
    coords = (gamma_hat * np.sqrt(nm / (2 * dm)), np.log(delta_hat) * np.sqrt(nm / 4))
    bins = int(np.clip(np.sqrt(F / 10), 4, 64))
    cell = np.zeros(F, dtype=np.intp)
    for x in coords:
        lo, hi = np.quantile(x, [0.001, 0.999])
        idx = np.floor((x - lo) / max(hi - lo, 1e-300) * bins).astype(np.intp)
        cell = cell * (bins + 2) + np.clip(idx + 1, 0, bins + 1)  # outside the range: edge cells
    _, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
    dens = counts[inverse].astype(float)
    # sum(min(1, c / dens)) = size is piecewise linear and increasing in c: solve exactly
    d_sorted = np.sort(dens)
    # with c in [d_sorted[j-1], d_sorted[j]): j features have probability 1, the rest c / dens
    inv_tail = np.cumsum((1.0 / d_sorted)[::-1])[::-1]  # sum of 1/dens from j on
    cs = (size - np.arange(F)) / inv_tail
    c = cs[np.argmax(cs <= d_sorted)]  # the first j that is consistent (exists: size < F)
    return np.minimum(1.0, c / dens)


def _np_logw(n, mean, m2, g, log2pid, inv2d):
    """Log weights ``(B, S)`` of support features (g, delta) for targets (n, mean, m2)."""
    nb = n[:, None]
    L = mean[:, None] - g
    L *= L
    L *= nb
    L += m2[:, None]
    L *= inv2d
    L += (0.5 * nb) * log2pid
    np.negative(L, out=L)
    return L


def nonparametric_eb(
    n, s1, m2, gamma_hat, delta_hat, *, support: np.ndarray | None = None,
    inclusion: np.ndarray | None = None, block_cells: int = _PAIR_BLOCK_CELLS,
):
    """Non-parametric EB for one site, vectorised over its features, in the log domain.

    For target feature g, the weight of every other feature g' is the Gaussian likelihood of
    the site's values of g under ``N(gamma_hat_g', delta_hat_g')``:
    ``log w = -n_g/2 log(2 pi delta_g') - (m2_g + n_g (mean_g - gamma_g')^2) / (2 delta_g')``;
    ``gamma*_g`` and ``delta*_g`` are the ``w``-weighted means of ``gamma_hat`` and
    ``delta_hat`` over ``g' != g`` (log-sum-exp, so no underflow at any sample size).

    Parameters
    ----------
    n, s1, m2, gamma_hat, delta_hat : ndarray of shape (F,)
        Only usable features (finite ``gamma_hat`` and ``delta_hat``, ``n >= 1``).
    support : ndarray of int, optional
        ``None``: every feature weighs every other one, the exact method, O(F^2).  Else a
        random subset of feature indices, each feature drawn independently with probability
        ``inclusion``: the weighted sums become a Monte Carlo estimate at cost O(F S), S the
        expected support size.  Each target's S/2 nearest features in ``gamma_hat`` order
        on each side are summed exactly; the sum over the other features is estimated from
        the support members among them, each weighted by ``1 / inclusion`` (Horvitz-Thompson,
        unbiased for each sum), so the result is a Monte Carlo estimate of the exact
        posterior means, equal to them when every feature is in the support.
    inclusion : ndarray of shape (F,), optional
        The probabilities with which ``support`` was drawn (see `support_inclusion`);
        ``None``: uniform, ``support.size / F``.

    Returns
    -------
    gamma_star, delta_star : ndarray of shape (F,)
    """
    F = gamma_hat.size
    g_star = np.empty(F)
    d_star = np.empty(F)
    if F < 2:
        return gamma_hat.copy(), delta_hat.copy()
    mean = s1 / n
    log2pid = np.log(2 * np.pi * delta_hat)
    inv2d = 0.5 / delta_hat
    if support is None:
        for sl in row_chunks(F, F, block_cells):
            rows = np.arange(sl.start, sl.stop)
            L = _np_logw(n[sl], mean[sl], m2[sl], gamma_hat, log2pid, inv2d)
            L[rows - sl.start, rows] = -np.inf
            L -= L.max(axis=1, keepdims=True)
            np.exp(L, out=L)
            total = L.sum(axis=1)
            g_star[sl] = (L @ gamma_hat) / total
            d_star[sl] = (L @ delta_hat) / total
        return g_star, d_star

    support = np.asarray(support, dtype=np.intp)
    if inclusion is None:
        inclusion = np.full(F, support.size / F)
    size = max(support.size, int(round(float(inclusion.sum()))))
    half = max(1, min(size // 2, (F - 1) // 2))
    width = 2 * half + 1
    order = np.argsort(gamma_hat, kind="stable")
    rank = np.empty(F, dtype=np.intp)
    rank[order] = np.arange(F)
    support = support[np.argsort(rank[support], kind="stable")]  # in gamma order
    r_sup = rank[support]
    # log w = -(n A_j + (m2 + n c^2) inv_j - 2 n c (inv g)_j) with c = mean - centre: a sum
    # of three products (for the sampled part one rank-3 matrix product); centring keeps
    # the expansion of (mean - g)^2 free of cancellation
    centre = float(np.median(gamma_hat))
    gc = gamma_hat - centre
    A = 0.5 * log2pid + inv2d * gc**2
    IG = inv2d * gc
    c = mean - centre
    U = np.stack([n, m2 + n * c**2, -2.0 * n * c, np.ones(F)], axis=1)  # (F, 4)
    # Horvitz-Thompson: a member drawn with probability p stands for 1/p features
    V = np.stack([A[support], inv2d[support], IG[support], np.log(inclusion[support])])
    g_sup, d_sup = gamma_hat[support], delta_hat[support]
    # the sorted arrays, seen as overlapping windows: a target's neighbourhood is one row
    windows = [np.lib.stride_tricks.sliding_window_view(x[order], width)
               for x in (A, inv2d, IG, gamma_hat, delta_hat)]
    for sl in row_chunks(F, width + support.size, block_cells):
        r_t = rank[sl]
        k = r_t.size
        u = U[sl]
        # exact part: the neighbourhood in gamma order (shifted at the ends), self excluded
        lo = np.clip(r_t - half, 0, F - width)
        wa, wi, wig, wg, wd = (w[lo] for w in windows)
        La = wa * u[:, :1]
        La += wi * u[:, 1:2]
        La += wig * u[:, 2:3]
        np.negative(La, out=La)
        La[np.arange(k), r_t - lo] = -np.inf
        # sampled part: the support members outside the neighbourhood
        Lb = u @ V
        np.negative(Lb, out=Lb)
        first = np.searchsorted(r_sup, lo)  # members inside it form one run of the sorted support
        stop = np.searchsorted(r_sup, lo + width)
        for j in np.flatnonzero(stop > first):
            Lb[j, first[j]:stop[j]] = -np.inf
        top = np.maximum(La.max(axis=1), Lb.max(axis=1, initial=-np.inf))[:, None]
        La -= top
        Lb -= top
        np.exp(La, out=La)
        np.exp(Lb, out=Lb)
        total = La.sum(axis=1) + Lb.sum(axis=1)
        g_star[sl] = (np.einsum("ij,ij->i", La, wg) + Lb @ g_sup) / total
        d_star[sl] = (np.einsum("ij,ij->i", La, wd) + Lb @ d_sup) / total
    return g_star, d_star


def fit_eb(
    n: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    *,
    m2: np.ndarray | None = None,
    use: np.ndarray | None = None,
    parametric: bool = True,
    mean_only: bool = False,
    eb: bool = True,
    ref: int | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    prior_features: int | None = None,
    rng: np.random.Generator | None = None,
) -> EBFit:
    """Location/scale estimates and their empirical-Bayes shrinkage from sufficient statistics.

    Parameters
    ----------
    n, s1, s2 : ndarray of shape (K, F)
        Per site and feature: number of observed samples, ``sum Z`` and ``sum Z^2`` of the
        standardised data.
    m2 : ndarray of shape (K, F), optional
        Centred ``sum (Z - mean Z)^2``; more precise than ``s2 - s1^2/n`` (used if given).
    use : ndarray of bool, shape (F,) or (K, F), optional
        Features (cells) that enter the priors and get adjusted; e.g. ``False`` for constant
        features.  Cells with ``n == 0`` are never used.
    parametric, mean_only, eb : bool
        Parametric or non-parametric EB; location only (``delta* = 1``); ``eb=False`` keeps
        the per-site estimates unshrunk.
    ref : int, optional
        Reference site: its ``gamma* = 0`` and ``delta* = 1``.
    tol, max_iter : float, int
        Convergence of the parametric iteration.
    prior_features : int, optional
        Non-parametric EB: expected size of the random subset of a site's usable features
        that forms the prior's support (drawn with ``rng`` per site, features in sparse
        regions more often, see `support_inclusion`); ``None`` or at least the number of
        usable features: all of them (exact).
    rng : numpy.random.Generator, optional
        Source of the subsets (required with ``prior_features``).

    Returns
    -------
    EBFit

    Notes
    -----
    A site with fewer than two observed samples of a feature has no ``delta_hat`` there; a
    site with fewer than two samples overall is fitted location-only (``delta* = 1``,
    ``gamma* = (tau2 gamma_hat + gamma_bar) / (tau2 + 1)`` as sva's mean-only rule).
    Other cells with ``n == 1`` (missing values) get the same location-only rule.
    When a site's priors cannot be estimated (fewer than two usable features, or zero
    spread), its estimates are left unshrunk and ``eb_used`` is False for it.
    """
    n = np.asarray(n, dtype=np.float64)
    s1 = np.asarray(s1, dtype=np.float64)
    s2 = np.asarray(s2, dtype=np.float64)
    K, F = n.shape
    use = np.ones((K, F), dtype=bool) if use is None else np.broadcast_to(use, (K, F))
    use = use & (n > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma_hat = np.where(n > 0, s1 / np.where(n > 0, n, 1), np.nan)
        if m2 is None:
            m2 = np.maximum(s2 - np.where(n > 0, s1 * gamma_hat, 0.0), 0.0)
        m2 = np.where(n > 0, m2, np.nan)
        delta_hat = np.where(n > 1, m2 / np.where(n > 1, n - 1, 1), np.nan)
    site_n = n.max(axis=1)
    mean_only_site = np.full(K, bool(mean_only)) | (site_n < 2)
    cell_mean_only = mean_only_site[:, None] | (n < 2)
    delta_hat = np.where(cell_mean_only & (n > 0), 1.0, delta_hat)
    dmask = use & ~cell_mean_only
    gamma_bar, tau2, _, _ = estimate_priors(gamma_hat, delta_hat, use)
    _, _, a, b = estimate_priors(gamma_hat, delta_hat, dmask)

    gamma_star = np.where(use, gamma_hat, 0.0)
    delta_star = np.where(use, delta_hat, 1.0)
    n_iter = np.zeros(K, dtype=np.int64)
    eb_used = np.zeros(K, dtype=bool)
    converged = np.ones(K, dtype=bool)
    for i in range(K):
        if i == ref:
            continue
        u = use[i]
        mo = cell_mean_only[i] & u
        full = u & ~cell_mean_only[i]
        if not eb or not u.any():
            continue
        # the parametric priors must be estimable; the non-parametric EB needs only two
        # usable features (each is weighted against the others)
        prior_ok = np.isfinite(tau2[i]) and tau2[i] > 0
        scale_ok = not full.any() or (np.isfinite(a[i]) and np.isfinite(b[i]) and a[i] > 0)
        if u.sum() < 2 or (parametric and not (prior_ok and scale_ok)):
            continue
        eb_used[i] = True
        if parametric:
            if mo.any():
                gamma_star[i, mo] = (tau2[i] * gamma_hat[i, mo] + gamma_bar[i]) / (tau2[i] + 1)
                delta_star[i, mo] = 1.0
            if full.any():
                g, d, it, ok = parametric_eb(
                    n[i, full], s1[i, full], m2[i, full] + s1[i, full] * gamma_hat[i, full],
                    gamma_hat[i, full], delta_hat[i, full], gamma_bar[i], tau2[i], a[i], b[i],
                    tol=tol, max_iter=max_iter,
                )
                gamma_star[i, full], delta_star[i, full] = g, d
                n_iter[i], converged[i] = it, ok
        else:
            m = int(u.sum())
            support = inclusion = None
            if prior_features is not None and prior_features < m:
                inclusion = support_inclusion(n[i, u], gamma_hat[i, u], delta_hat[i, u],
                                              int(prior_features))
                support = np.flatnonzero(rng.random(m) < inclusion)
            g, d = nonparametric_eb(
                n[i, u], s1[i, u], m2[i, u], gamma_hat[i, u], delta_hat[i, u], support=support,
                inclusion=inclusion,
            )
            gamma_star[i, u] = g
            delta_star[i, u] = np.where(mo[u], 1.0, d)
    if ref is not None:
        gamma_star[ref] = 0.0
        delta_star[ref] = 1.0
    if mean_only:
        delta_star[:] = 1.0
    if not eb:
        a[:] = np.nan
        b[:] = np.nan
    return EBFit(
        n=n, gamma_hat=gamma_hat, delta_hat=delta_hat, gamma_star=gamma_star,
        delta_star=delta_star, gamma_bar=gamma_bar, tau2=tau2, a_prior=a, b_prior=b,
        n_iter=n_iter, eb_used=eb_used, mean_only_site=mean_only_site, converged=converged,
    )


# --------------------------------------------------------------------------- apply
def adjust(
    Y: np.ndarray,
    codes: np.ndarray,
    *,
    grand_mean: np.ndarray,
    var_pooled: np.ndarray,
    gamma_star: np.ndarray,
    delta_star: np.ndarray,
    keep: np.ndarray,
    C: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Apply fitted location/scale estimates to ``Y``, row block by row block.

    ``Y* = sigma (Z - gamma*) / sqrt(delta*) + m`` with ``m = alpha + C beta`` and
    ``Z = (Y - m) / sigma``, computed as ``Y* = s Y + (1 - s) m - sigma gamma* s`` with
    ``s = 1 / sqrt(delta*)``.  Cells where ``keep`` is True (reference site, constant
    features, cells never observed in fit) come back bit-identical.  NaN stays NaN.

    Parameters
    ----------
    Y : ndarray of shape (n, F)
    codes : ndarray of int, shape (n,)
        Site code of each row.
    grand_mean, var_pooled : ndarray of shape (F,)
    gamma_star, delta_star, keep : ndarray of shape (K, F)
    C : ndarray of shape (n, q), optional
        Covariate (and extra) design columns of the rows.
    beta : ndarray of shape (q, F), optional
        Their effects.
    out : ndarray of shape (n, F), optional
        Output buffer (may be ``Y`` itself for an in-place update).

    Returns
    -------
    ndarray of shape (n, F)
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # guarded below
        scale = np.where(keep, 1.0, 1.0 / np.sqrt(delta_star))
        shift = np.where(keep, 0.0, (1.0 - scale) * grand_mean - np.sqrt(var_pooled) * gamma_star * scale)
    one_minus = 1.0 - scale
    covs = C is not None and beta is not None and C.shape[1] > 0
    if out is None:
        out = np.empty(Y.shape, dtype=np.float32 if Y.dtype == np.float32 else np.float64)
    N, F = Y.shape
    step = next(iter(row_chunks(N, F))).stop if N else 0
    buf = np.empty((step, F))
    buf2 = np.empty((step, F)) if covs else None
    # float32 output: compute the block in float64, round once on the way out
    acc = np.empty((step, F)) if out.dtype != np.float64 else None
    bad = np.zeros(F, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for sl in row_chunks(N, F):
            c = codes[sl]
            k = c.size
            blk = np.take(scale, c, axis=0, out=buf[:k], mode="clip")
            o = out[sl] if acc is None else acc[:k]
            np.multiply(Y[sl], blk, out=o)
            o += np.take(shift, c, axis=0, out=buf[:k], mode="clip")
            if covs:
                m = np.matmul(C[sl], beta, out=buf2[:k])
                m *= np.take(one_minus, c, axis=0, out=buf[:k], mode="clip")
                o += m
            if acc is not None:
                out[sl] = o
                o = out[sl]
            # guard: never a NaN or inf where the input was finite (the block is in cache)
            if not np.isfinite(o.sum()):  # a sum that overflows only triggers the exact look
                bad |= (~np.isfinite(o) & np.isfinite(Y[sl])).any(axis=0)
    if bad.any():
        raise NumericalError(
            "ComBat produced non-finite values for finite input in feature(s) at column "
            f"position(s) {np.flatnonzero(bad)[:10].tolist()}",
            features=np.flatnonzero(bad),
        )
    return out
