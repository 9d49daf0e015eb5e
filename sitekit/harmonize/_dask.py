"""ComBat on dask collections: out-of-core and on a cluster, same numbers as in memory.

:class:`~sitekit.harmonize.ComBat` hands dask arrays and dask DataFrames to this module.

* **fit** reads every partition once.  The site labels and covariates -- small, one value
  per sample -- are gathered first (reading only their columns) to build the design exactly
  as the in-memory fit does; then every row block computes, per site, the centred
  co-moments of its features and covariate columns
  (:func:`sitekit.harmonize._eb.block_comoments`), merged in a tree with Chan et al.'s
  pairwise update.  The OLS coefficients, pooled variance and the per-site sums of ``Z``
  and ``Z**2`` on which the empirical-Bayes step runs all follow from the merged
  co-moments.  When the labels are columns of the same table as ``X``, each statistics task
  reads its own rows: a plain ``read_parquet`` of local files is read with pyarrow and the
  statistics are computed on the arrow buffers (no pandas conversion); any other table has
  dask's read fused into the task.  Either way no partition is stored between two tasks.
  Only when a block holds missing cells (then every feature has its own rows) does the fit
  fall back to two more passes (``D'D``/``D'Y``, then residual moments).  No block of more
  than one partition is held at once.
* **transform** is lazy and blockwise: every partition is harmonised by the fitted model's
  in-memory ``transform``; the result is a dask collection of the same kind and partitioning.

Works with the default (threaded) scheduler and with a ``distributed.Client`` (whatever
scheduler is active when the work is computed).  Rows of ``X``, ``sites`` and ``covariates``
are matched by position.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from sitekit._dask_session import dask_client, worker_memory
from sitekit.exceptions import ValidationError

__all__ = [
    "DaskMatrix",
    "is_dask_collection",
    "fit",
    "transform",
    "transform_frame",
    "progress_callback",
]

_PROGRESS: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "sitekit_dask_progress", default=None
)


#: read_table under a session: partitions of at most worker memory / this (by row group)
_PARTITIONS_PER_WORKER_MEMORY = 8
_MIN_BLOCKSIZE = 16 << 20


def is_dask_collection(obj) -> bool:
    """True for dask arrays, DataFrames and Series (without importing dask otherwise)."""
    return type(obj).__module__.split(".")[0] == "dask" and hasattr(obj, "__dask_graph__")


@contextlib.contextmanager
def progress_callback(compute: Callable) -> Iterator[None]:
    """Route this module's computations through ``compute(list_of_collections) -> results``.

    The CLI uses it to show dask's progress (a ``ProgressBar`` on the local scheduler,
    ``distributed.progress`` on a cluster); library code never prints.
    """
    token = _PROGRESS.set(compute)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _compute(*objs):
    import warnings

    with warnings.catch_warnings():
        # the design rows of the blocks travel in the graph (n x p numbers): expected
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return _compute_now(*objs)


def _compute_now(*objs):
    import dask

    hook = _PROGRESS.get()
    if hook is None:
        return dask.compute(*objs)
    # the hook takes a flat list of collections: flatten one level of lists, rebuild after
    flat, where = [], []
    for o in objs:
        items = list(o) if isinstance(o, list | tuple) else [o]
        where.append([])
        for it in items:
            if is_dask_collection(it):
                where[-1].append(len(flat))
                flat.append(it)
            else:
                where[-1].append(it)
    results = list(hook(flat)) if flat else []
    out = []
    for o, pos in zip(objs, where):
        vals = [results[p] if isinstance(p, int) else p for p in pos]
        out.append(vals if isinstance(o, list | tuple) else vals[0])
    return tuple(out)


# --------------------------------------------------------------------------- row blocks
class _Blocks:
    """``X`` cut into row blocks, with the (small, in-memory) sites and covariates."""

    def __init__(self, X, sites, covariates):
        import dask.array as da
        import dask.dataframe as dd

        if isinstance(X, dd.DataFrame):
            self.kind = "frame"
            self._parts = None  # the delayed row blocks, made on first use (an optimize pass)
            self.columns = list(X.columns)
            dtypes = X.dtypes  # one Series (X.dtypes[c] per column rebuilds it every time)
            bad = [c for c, d in dtypes.items() if not pd.api.types.is_numeric_dtype(d)]
            if bad:
                raise ValidationError(
                    f"Feature column(s) {[str(b) for b in bad[:10]]} are not numeric; select the "
                    "feature columns of the dask DataFrame."
                )
            lengths = None
        elif isinstance(X, da.Array):
            if X.ndim != 2:
                raise ValidationError(
                    f"X must be 2-D (samples x features); got a {X.ndim}-D dask array."
                )
            self.kind = "array"
            if len(X.chunks[1]) > 1:
                X = X.rechunk({1: -1})
            if any(np.isnan(c) for c in X.chunks[0]):
                X = X.compute_chunk_sizes()
            self._parts = [b[0] for b in X.to_delayed()]
            self.columns = None
            lengths = list(X.chunks[0])
        else:
            raise ValidationError(
                f"The dask engine takes a dask Array or DataFrame; got {type(X).__name__}."
            )
        self.X = X
        self.n_features = X.shape[1] if self.kind == "array" else len(self.columns)
        self.carry = self.pieces = None
        if self.kind == "frame":
            self.carry = _carry_parts(X, sites, covariates)
            if self.carry is not None:
                self.pieces = _local_parquet_pieces(X, sites, covariates)
        # pass 0: labels and covariates are one value per sample: gather them (reading only
        # their columns); partition lengths come with them when they are partitioned like X

        todo, names = [], []
        for name, obj in (("sites", sites), ("covariates", covariates)):
            if isinstance(obj, dd.DataFrame | dd.Series):
                todo.append([obj.map_partitions(len), obj])
                names.append(name)
            elif is_dask_collection(obj):
                todo.append([None, obj])
                names.append(name)
        got = dict(zip(names, _compute(*todo))) if todo else {}
        for name, values in got.items():
            if values[0] is not None and len(values[0]) == X.npartitions and lengths is None:
                lengths = [int(v) for v in np.asarray(values[0])]
            if name == "sites":
                sites = values[-1]
            else:
                covariates = values[-1]
        if lengths is None and self.carry is not None:
            # the labels travel with the feature blocks: the fit needs no block lengths
            # (counting them would read every feature block once more)
            self._lengths = None
            n = len(sites) if sites is not None else 0
        else:
            if lengths is None:
                lengths = self._count_rows()
            self._lengths = lengths
            n = int(sum(lengths))
        self.n_samples = int(n)
        self.sites = _as_labels(sites, self.n_samples)
        self.covariates = _as_covariates(covariates, self.n_samples)

    @property
    def parts(self) -> list:
        """The row blocks as dask delayed objects, one per partition."""
        if self._parts is None:
            self._parts = list(self.X.to_delayed())
        return self._parts

    def _count_rows(self) -> list[int]:
        import dask
        from dask import delayed

        return [int(v) for v in dask.compute(*[delayed(len)(p) for p in self.parts])]

    @property
    def lengths(self) -> list[int]:
        """Rows per block (counted on first use when the labels travel with the blocks)."""
        if self._lengths is None:
            self._lengths = self._count_rows()
            if sum(self._lengths) != self.n_samples:
                raise ValidationError(
                    f"'sites' has {self.n_samples} labels but X has {sum(self._lengths)} rows."
                )
        return self._lengths

    @property
    def slices(self) -> list[slice]:
        bounds = np.cumsum([0, *self.lengths])
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


_SITE_COL = "__sitekit_site__"
_COV_PREFIX = "__sitekit_cov__"


def _local_parquet_pieces(X, sites, covariates):
    """The files behind ``X``, ``sites`` and ``covariates`` when all three are column
    selections of one plain ``dask.dataframe.read_parquet`` of local files.

    Returns ``(pieces, feature_columns, site_column, covariate_columns)`` with ``pieces`` a
    list of ``(path, row_groups or None)`` covering every row once, or None.  The fit then
    reads the files itself with pyarrow and computes on the arrow buffers (no conversion of
    each partition to pandas; row order does not matter to sums).  Anything else -- filters,
    a selection of partitions, hive partition keys, an index, remote storage, dtype or
    read options, or a dask version whose expressions look different -- gives None, and
    the fit reads through dask as for any DataFrame.
    """
    import dask.dataframe as dd

    if not isinstance(sites, dd.Series):
        return None
    try:
        selections = [(X, list(X.columns)), (sites, [sites.name])]
        if covariates is not None:
            cov = covariates.to_frame() if isinstance(covariates, dd.Series) else covariates
            selections.append((covariates, list(cov.columns)))
        roots = []
        for obj, _ in selections:
            expr = obj.expr
            if type(expr).__name__ == "Projection":
                expr = expr.frame
            if type(expr).__name__ != "ReadParquetFSSpec":
                return None
            roots.append(expr)
        root = roots[0]
        if any(r._name != root._name for r in roots[1:]):  # the same read of the same files
            return None
        if (root.operand("filters") or root.operand("_partitions") is not None
                or root.operand("index") not in (None, False) or root.operand("categories")
                or root.operand("kwargs") not in (None, {}, {"dtype_backend": None})):
            return None
        info = root._dataset_info
        if "file" not in info["fs"].protocol or info["plan"]["common_kwargs"].get("partitions"):
            return None  # remote storage, or hive partition keys (columns not in the files)
        pieces = []
        for part in info["plan"]["parts"]:
            for item in part if isinstance(part, list) else [part]:
                piece = item[0] if isinstance(item, tuple) else item
                path, row_groups, keys = piece["piece"]
                if keys:
                    return None
                pieces.append((str(path), None if row_groups is None else list(row_groups)))
        if not pieces:
            return None
        names = [c for _, cols in selections for c in cols]
        schema = set(info["schema"].names)
        if not all(isinstance(c, str) and c in schema for c in names):
            return None
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return None  # another dask version: read through dask instead
    covs = selections[2][1] if len(selections) > 2 else []
    return pieces, selections[0][1], selections[1][1][0], covs


def _arrow_comoments(path, row_groups, features, site_col, cov_cols, levels, n_sites,
                     estimator, encoding):
    """Co-moments of one Parquet file (or some of its row groups), read with pyarrow: numpy
    views of the arrow buffers, no pandas conversion of the features."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sitekit.harmonize._design import encode_sites
    from sitekit.harmonize._eb import block_comoments

    columns = list(dict.fromkeys([*features, site_col, *cov_cols]))
    with pq.ParquetFile(path, pre_buffer=True) as source:
        if row_groups is None:
            table = source.read(columns=columns)
        else:
            table = source.read_row_groups(row_groups, columns=columns)
    codes = encode_sites(table.column(site_col).to_pandas().to_numpy(), levels=levels).codes
    covs = table.select(cov_cols).to_pandas() if cov_cols else None
    Dc = estimator._covariate_design(covs, table.num_rows, encoding)
    Y = []
    for name in features:
        column = table.column(name)
        if column.null_count and not pa.types.is_floating(column.type):
            column = column.cast(pa.float64())  # nulls of int/bool columns become NaN
        Y.append(column.to_numpy())  # zero-copy for one chunk without nulls
    # inf and NaN make block_comoments return None: the two-pass route then checks the data
    return block_comoments(Y, Dc, codes, n_sites)


def _carry_parts(X, sites, covariates):
    """Row blocks of ``X`` with the site labels (and covariates) as extra columns.

    When ``sites``/``covariates`` are dask collections partitioned like ``X`` (columns of
    the same table), each block then holds its own labels and design rows, so the fit's
    statistics pass needs no block lengths.  Returns ``(frame, covariate_names)`` or None.
    """
    import dask.dataframe as dd

    if not isinstance(sites, dd.Series):
        return None
    if covariates is not None and not isinstance(covariates, dd.DataFrame | dd.Series):
        return None
    cov = covariates.to_frame() if isinstance(covariates, dd.Series) else covariates
    names = [] if cov is None else list(cov.columns)
    extra = {_SITE_COL: sites}
    extra.update({f"{_COV_PREFIX}{i}": cov[c] for i, c in enumerate(names)})
    try:
        combined = X.assign(**extra)
        combined.to_delayed()  # raises here when the collections are not partitioned alike
    except (ValueError, TypeError, NotImplementedError, KeyError):
        return None  # not partitioned alike: the labels are matched by position instead
    return combined, names


def _carried_labels(part, cov_names):
    """The site labels (ndarray) and covariates (DataFrame or None, with their own names)
    that travel as extra columns of a partition of :func:`_carry_parts`'s frame."""
    covs = None
    if cov_names:
        covs = part[[f"{_COV_PREFIX}{i}" for i in range(len(cov_names))]]
        covs = covs.set_axis(cov_names, axis=1)
    return part[_SITE_COL].to_numpy(), covs


def _carry_comoments(part, features, cov_names, levels, n_sites, estimator, encoding):
    from sitekit.harmonize._design import encode_sites
    from sitekit.harmonize._eb import block_comoments

    sites, covs = _carried_labels(part, cov_names)
    codes = encode_sites(sites, levels=levels).codes
    if covs is not None:
        covs = covs.reset_index(drop=True)
    Dc = estimator._covariate_design(covs, len(part), encoding)
    # inf and NaN make block_comoments return None: the two-pass route then checks the block
    return block_comoments(_as_matrix(part[features], check_inf=False), Dc, codes, n_sites)


def _as_labels(sites, n: int) -> np.ndarray:
    if sites is None:
        raise ValidationError("ComBat needs 'sites': one site label per sample.")
    values = sites.to_numpy() if isinstance(sites, pd.Series | pd.Index) else np.asarray(sites)
    values = values.ravel()
    if values.size != n:
        raise ValidationError(f"'sites' has {values.size} labels but X has {n} rows.")
    return values


def _as_covariates(covariates, n: int) -> pd.DataFrame | None:
    if covariates is None:
        return None
    frame = covariates.to_frame() if isinstance(covariates, pd.Series) else pd.DataFrame(covariates)
    if len(frame) != n:
        raise ValidationError(f"'covariates' has {len(frame)} rows but X has {n}.")
    return frame.reset_index(drop=True)


def _float_dtype(dtypes) -> type:
    """float32 when every feature column is float32 (kept end to end), else float64."""
    dtypes = list(dtypes)
    return np.float32 if dtypes and all(d == np.float32 for d in dtypes) else np.float64


_INF_MESSAGE = "X holds infinite values; ComBat accepts NaN for missing values but not inf."


def _as_matrix(block, *, check_inf: bool = True) -> np.ndarray:
    """The float matrix of a row block (float32 kept); refuses inf unless ``check_inf`` is
    False (:func:`~sitekit.harmonize._eb.block_comoments` finds inf itself, saving a pass)."""
    if isinstance(block, pd.DataFrame):
        dtype = _float_dtype(block.dtypes)
        if all(d == dtype for d in block.dtypes):
            Y = block.to_numpy(dtype=dtype)  # plain float columns: no NaN conversion pass
        else:
            Y = block.to_numpy(dtype=dtype, na_value=np.nan)
    else:
        Y = np.asarray(block)
        Y = Y if Y.dtype in (np.float64, np.float32) else Y.astype(np.float64)
    if not check_inf:
        return Y
    with np.errstate(over="ignore", invalid="ignore"):
        suspect = not np.isfinite(Y.sum(dtype=np.float64))  # cheap; inf or NaN somewhere
    if suspect and np.isinf(Y).any():
        raise ValidationError(_INF_MESSAGE)
    return Y


def _block_cross_products(block, D):
    from sitekit.harmonize._eb import ols_cross_products

    return ols_cross_products(_as_matrix(block), D)


def _block_comoments(block, Dc, codes, n_sites):
    from sitekit.harmonize._eb import block_comoments

    return block_comoments(_as_matrix(block, check_inf=False), Dc, codes, n_sites)


def _block_moments(block, D, codes, beta, n_sites, missing):
    from sitekit.harmonize._eb import residual_moments

    return residual_moments(_as_matrix(block), D, beta, codes, n_sites, missing=missing)


def _add(a, b):
    from sitekit.harmonize._eb import SiteCoMoments, SiteMoments, add_moments, merge_comoments

    if a is None or b is None:  # a block with missing cells: no one-pass result
        return None
    if isinstance(a, SiteCoMoments):
        return merge_comoments(a, b)
    if isinstance(a, SiteMoments):
        return add_moments(a, b)
    return a + b


def _tree_sum(parts: list):
    from dask import delayed

    add = delayed(_add, pure=True)
    while len(parts) > 1:
        parts = [
            add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


# --------------------------------------------------------------------------- fit / transform
class DaskMatrix:
    """A (n_samples, n_features) data matrix held as dask row blocks.

    :meth:`ComBat._fit_arrays` builds the design exactly as for an in-memory matrix and
    asks this object for the data pass (:meth:`coefficients_and_moments`); everything
    else of the fit (validation, warnings, empirical Bayes) is shared code.
    """

    def __init__(self, blocks: _Blocks):
        self._blocks = blocks
        self.shape = (blocks.n_samples, blocks.n_features)

    def coefficients_and_moments(self, D: np.ndarray, codes: np.ndarray, n_sites: int, *,
                                 levels: list | None = None, estimator=None,
                                 encoding: dict | None = None):
        """One pass over the data: per-site centred co-moments of every row block, merged.

        The OLS coefficients and the per-site residual moments follow from the merged
        co-moments (:func:`sitekit.harmonize._eb.comoments_to_moments`), so each partition
        is read once.  If a block holds missing cells (each feature then has its own rows),
        the fit falls back to two passes: ``D'D``, ``D'Y`` -> OLS coefficients, then the
        residual moments.

        Parameters
        ----------
        D : ndarray of shape (n_samples, p)
            The full design (small: one row of p numbers per sample).
        codes : ndarray of shape (n_samples,)
        n_sites : int
        levels, estimator, encoding : optional
            The site levels, the estimator and its covariate encoding: with them, blocks
            that carry their own labels build their own design rows (no block lengths
            needed).

        Returns
        -------
        B : ndarray of shape (p, n_features)
        moments : sitekit.harmonize._eb.SiteMoments
        """
        from dask import delayed

        from sitekit.harmonize._eb import comoments_to_moments, solve_ols

        b = self._blocks
        if b.pieces is not None and estimator is not None:
            pieces, features, site_col, cov_cols = b.pieces
            est = delayed(estimator, pure=True)
            parts = [
                delayed(_arrow_comoments, pure=True)(
                    path, groups, features, site_col, cov_cols, levels, n_sites, est, encoding
                )
                for path, groups in pieces
            ]
        elif b.carry is not None and estimator is not None:
            frame, cov_names = b.carry
            # map_partitions, not to_delayed: the statistics run in the task that reads the
            # partition (dask fuses them), so no partition is held between two tasks
            stats = frame.map_partitions(
                _carry_comoments, b.columns, cov_names, levels, n_sites, estimator, encoding,
                meta=pd.Series(dtype=object), enforce_metadata=False,
            )
            parts = list(stats.to_delayed())
        else:
            Dc = D[:, n_sites:]
            parts = [
                delayed(_block_comoments, pure=True)(x, Dc[sl], codes[sl], n_sites)
                for x, sl in zip(b.parts, b.slices)
            ]
        (cm,) = _compute(_tree_sum(parts))
        self.passes = 1
        if cm is not None:
            return comoments_to_moments(cm)
        self.passes = 3
        parts = [
            delayed(_block_cross_products, pure=True)(x, D[sl])
            for x, sl in zip(b.parts, b.slices)
        ]
        (cp,) = _compute(_tree_sum(parts))
        beta = solve_ols(cp)
        beta_d = delayed(beta, pure=True)
        missing = delayed(cp.missing, pure=True)
        parts = [
            delayed(_block_moments, pure=True)(x, D[sl], codes[sl], beta_d, n_sites, missing)
            for x, sl in zip(b.parts, b.slices)
        ]
        (moments,) = _compute(_tree_sum(parts))
        return beta, moments


def fit(estimator, X, *, sites, covariates=None):
    """Fit ``estimator`` (a ComBat) on a dask array or DataFrame by map-reduce.

    Parameters
    ----------
    estimator : ComBat
        Its parameters are used as in :meth:`ComBat.fit`.
    X : dask.array.Array or dask.dataframe.DataFrame of shape (n_samples, n_features)
        Features (NaN = missing).
    sites : array-like or dask Series/Array of shape (n_samples,)
        Site labels, matched to the rows of ``X`` by position.
    covariates : DataFrame or dask DataFrame, optional
        Covariates, matched by position.

    Returns
    -------
    ComBat
        ``estimator``, fitted; identical (to rounding) to an in-memory fit on the same data.
    """
    from sitekit.harmonize._design import encode_sites

    estimator._check_params()
    blocks = _Blocks(X, sites, covariates)
    if blocks.columns is not None:
        counts = Counter(blocks.columns)
        dup = sorted({str(c) for c, k in counts.items() if k > 1})
        if dup:
            raise ValidationError(
                f"ComBat: X has duplicate column name(s) {dup}; rename them so every feature "
                "has its own name."
            )
    if blocks.columns is not None and all(isinstance(c, str) for c in blocks.columns):
        estimator.feature_names_in_ = np.asarray(blocks.columns, dtype=object)
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
    estimator.n_features_in_ = blocks.n_features
    codes = encode_sites(blocks.sites)
    state = estimator._fit_arrays(DaskMatrix(blocks), codes, blocks.covariates)
    estimator._set_state(state)
    return estimator


def _transform_carried(part, features, cov_names, model):
    sites, covs = _carried_labels(part, cov_names)
    return model.transform(part[features], sites=sites, covariates=covs)


def _transform_block(model, block, sites, covariates):
    if covariates is not None and isinstance(block, pd.DataFrame):
        covariates = covariates.set_axis(block.index)
    return model.transform(block, sites=sites, covariates=covariates)


def transform(estimator, X, *, sites, covariates=None):
    """Harmonise a dask array or DataFrame lazily, block by block.

    Returns
    -------
    dask.array.Array or dask.dataframe.DataFrame
        Same kind, shape and partitioning as ``X``; nothing is computed until asked.
    """
    import dask.array as da
    import dask.dataframe as dd
    from dask import delayed

    blocks = _Blocks(X, sites, covariates)
    if blocks.carry is not None:
        # the labels travel with the rows: one task per partition reads and harmonises it
        # (no row counts needed, no partition stored between two tasks)
        frame, cov_names = blocks.carry
        meta = blocks.X._meta.astype(_float_dtype(blocks.X._meta.dtypes))
        return frame.map_partitions(
            _transform_carried, blocks.columns, cov_names, estimator, meta=meta,
        )
    model = delayed(estimator, pure=True)
    out = []
    for x, sl in zip(blocks.parts, blocks.slices):
        cov = None if blocks.covariates is None else blocks.covariates.iloc[sl]
        out.append(delayed(_transform_block, pure=True)(model, x, blocks.sites[sl], cov))
    if blocks.kind == "frame":
        meta = blocks.X._meta.astype(_float_dtype(blocks.X._meta.dtypes))
        divisions = blocks.X.divisions
        return dd.from_delayed(out, meta=meta, divisions=divisions, verify_meta=False)
    return da.concatenate(
        [
            da.from_delayed(o, shape=(length, blocks.n_features),
                            dtype=_float_dtype([blocks.X.dtype]))
            for o, length in zip(out, blocks.lengths)
        ],
        axis=0,
    )


def _harmonize_partition(part: pd.DataFrame, model, site_col, covariate_cols, features):
    covs = part[covariate_cols] if covariate_cols else None
    harmonised = model.transform(part[features], sites=part[site_col].to_numpy(), covariates=covs)
    # one concatenation instead of a column-by-column assignment (the partition itself is
    # never modified); reorder only when the features are not already the last columns
    chosen = set(features)
    rest = [c for c in part.columns if c not in chosen]
    out = pd.concat([part[rest], harmonised], axis=1)
    return out if list(out.columns) == list(part.columns) else out[list(part.columns)]


def transform_frame(estimator, frame, *, site_col, covariate_cols, features):
    """Harmonise the feature columns of a dask DataFrame that also holds sites, covariates
    and pass-through columns (all kept, in order); lazy, one task per partition."""
    meta = frame._meta.copy()
    dtype = _float_dtype(meta[list(features)].dtypes)
    for f in features:
        meta[f] = meta[f].astype(dtype)
    return frame.map_partitions(
        _harmonize_partition,
        estimator,
        site_col,
        list(covariate_cols or []),
        list(features),
        meta=meta,
    )


# --------------------------------------------------------------------------- sessions, files
_SESSION: contextvars.ContextVar = contextvars.ContextVar("sitekit_dask_session", default=None)


@contextlib.contextmanager
def session(*, scheduler: str | None = None, workers: int | None = None, memory_limit="auto"):
    """Run the dask engine on a cluster for the duration of the block.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running dask scheduler (``tcp://host:8786``).
    workers : int, optional
        Without ``scheduler``: start a ``LocalCluster`` with this many worker processes
        (one thread each; default 2), closed at the end of the block.
    memory_limit : str or float, default="auto"
        Memory limit per worker of the local cluster.

    Yields
    ------
    distributed.Client
        The client, also the default scheduler inside the block; :func:`read_table` returns
        lazy dask DataFrames for Parquet inputs while it is active.
    """
    with dask_client(scheduler=scheduler, workers=workers, memory_limit=memory_limit) as client:
        token = _SESSION.set(client)
        try:
            yield client
        finally:
            _SESSION.reset(token)


def active_session():
    """The client of the enclosing :func:`session`, or None."""
    return _SESSION.get()


def _is_parquet(path) -> bool:
    from pathlib import Path

    p = Path(path)
    return p.is_dir() or p.suffix.lower() == ".parquet"


def read_table(path, **kwargs):
    """:func:`sitekit.io.read_table`, but a lazy dask DataFrame for a Parquet file or
    directory when a :func:`session` is active.

    Partitions are sized from the workers' memory: row groups are split or kept so that a
    partition holds at most 1/8 of the smallest worker's memory limit (a partition is held
    several times over while it is harmonised); pass ``blocksize=`` to choose yourself.
    """
    from sitekit import io

    if active_session() is None or not _is_parquet(path):
        return io.read_table(path, **kwargs)
    from pathlib import Path

    import dask.dataframe as dd

    from sitekit.exceptions import CorruptFileError, MissingFileError

    if not Path(path).exists():
        raise MissingFileError(f"Table '{path}' does not exist; check the path.")
    memory = worker_memory(active_session())
    if memory and "blocksize" not in kwargs:
        # a partition is held a few times over while it is harmonised (arrow table, numpy
        # matrix, output, Parquet encoder): split files by row group to 1/8 of a worker
        kwargs["blocksize"] = max(_MIN_BLOCKSIZE, memory // _PARTITIONS_PER_WORKER_MEMORY)
    try:
        return dd.read_parquet(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"Table '{path}' could not be read as Parquet: {exc}") from exc


def part_name(i: int) -> str:
    """File name of partition ``i`` of a written Parquet directory: zero-padded, so that
    every reader (pandas/pyarrow sort names as text) sees the rows in their input order."""
    return f"part.{i:06d}.parquet"


def write_table(df, path, *, force: bool = False, index: bool = False):
    """:func:`sitekit.io.write_table`; a dask DataFrame is written partition by partition
    as a Parquet directory (into a temporary directory renamed into place at the end)."""
    from pathlib import Path

    from sitekit import io
    from sitekit.exceptions import OutputExistsError

    if not is_dask_collection(df):
        return io.write_table(df, path, force=force, index=index)
    target = Path(path)
    if target.exists() and not force:
        raise OutputExistsError(f"Output '{target}' already exists; pass --force to replace it.")
    if target.suffix.lower() not in ("", ".parquet"):
        raise ValidationError(
            f"Output '{target}': a table harmonised on a cluster is written as a Parquet "
            "directory; give a path without suffix or ending in .parquet."
        )
    with io.atomic_directory(target, force=force) as tmp:
        _compute(df.to_parquet(tmp, write_index=index, compute=False, name_function=part_name))
    return target
