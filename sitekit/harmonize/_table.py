"""Harmonise feature *tables* (CSV, TSV, Parquet): the library side of ``sitekit harmonize``.

Three workflows, one per command, each one function call:

* :func:`fit_table` - read a table, choose the feature columns, fit ComBat / CovBat /
  NestedComBat, save the model;
* :func:`apply_table` - read a table, harmonise it with a saved model (optionally adapting
  the model to sites it has not seen), write the table;
* :func:`harmonize_table` - both, writing the harmonised table, the model and the
  diagnostics as one result set.

Output paths have one meaning everywhere: ``out`` is the harmonised **table** (``.csv``,
``.tsv`` or ``.parquet``), ``model_path`` the model file (``.npz``), ``diagnostics_path``
the diagnostics (``.json``).  :func:`harmonize_table` puts the model and diagnostics beside
the table by default (``<table stem>.model.npz``, ``<table stem>.diagnostics.json``).  A
path whose form contradicts what would be written there (a folder for a table, a ``.csv``
for a model) is refused before any work.

Feature columns: without ``features`` every numeric column is used except the site,
covariate and batch columns, and except columns that look like identifiers or labels
(named ``id``/``*_id``, binary, integer-valued with few levels, or integer-valued and
unique per row; a table read lazily on a dask cluster is judged by name only); those are listed in :attr:`FeatureSelection.left_out` with the reason.
``features`` may use glob patterns (``original_firstorder_*``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sitekit._json import dumps
from sitekit._typing import PathLike
from sitekit.exceptions import FileError, OutputExistsError, ValidationError
from sitekit.harmonize import _dask
from sitekit.harmonize._combat import ComBat
from sitekit.harmonize._covbat import CovBat
from sitekit.harmonize._diagnostics import harmonization_diagnostics
from sitekit.harmonize._nested import NestedComBat
from sitekit.harmonize._persistence import load
from sitekit.io import TABLE_SUFFIXES, numeric_columns, read_table

__all__ = [
    "FeatureSelection",
    "HarmonizeResult",
    "select_features",
    "fit_table",
    "apply_table",
    "harmonize_table",
    "dask_cluster",
]

#: model-file metadata key under which the column choices of a fit are recorded
COLUMNS_KEY = "cli"
METHODS = ("combat", "covbat", "nested")
_LABEL_LEVELS = 10  # integer-valued columns with at most this many values look like labels


@dataclass(frozen=True)
class FeatureSelection:
    """The feature columns chosen from a table, and the numeric columns left out.

    Attributes
    ----------
    features : list of str
        The columns harmonised.
    left_out : dict of str to str
        Numeric columns not in the default selection, with the reason (binary, label-like,
        id-like).
    """

    features: list
    left_out: dict = field(default_factory=dict)

    def describe(self, limit: int = 8) -> list[str]:
        """Lines that say which columns are harmonised and which were left out, and why."""
        shown = ", ".join(map(str, self.features[:limit]))
        more = f" and {len(self.features) - limit} more" if len(self.features) > limit else ""
        lines = [f"Harmonising {len(self.features)} feature column(s): {shown}{more}"]
        if self.left_out:
            items = [f"{c} ({why})" for c, why in list(self.left_out.items())[:limit]]
            extra = f" and {len(self.left_out) - limit} more" if len(self.left_out) > limit else ""
            lines.append("Left out of the default selection: " + ", ".join(items) + extra
                         + "; name them in --features (features=) to harmonise them.")
        return lines


def _id_like(name) -> bool:
    low = str(name).lower()
    return low in ("id", "index") or low.endswith("_id") or low.endswith("id") and low[:-2].endswith("_")


def _looks_numeric(col: pd.Series) -> bool:
    """A text column whose filled cells are mostly numbers (decimal commas included): a
    feature column broken by a few bad cells, not a label column."""
    text = col.dropna().astype(str).str.strip()
    text = text[text != ""]
    if text.empty:
        return False
    parsed = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
    return bool(parsed.notna().mean() >= 0.5)


def _left_out_reason(col: pd.Series) -> str | None:
    """Why a numeric column is not a feature by default (None: it is one)."""
    if _id_like(col.name):
        return "id-like name"
    values = col.dropna()
    if values.empty:
        return None
    uniq = pd.unique(values)
    if len(uniq) <= 2 and len(values) > 2:
        return f"binary: {', '.join(str(v) for v in sorted(uniq))}"
    arr = values.to_numpy(dtype=float)
    integer = pd.api.types.is_integer_dtype(col) or bool(np.all(arr == np.round(arr)))
    if integer and len(uniq) <= _LABEL_LEVELS and len(values) > 2 * len(uniq):
        return f"integer with {len(uniq)} values: label-like"
    if integer and len(uniq) == len(values) and len(values) > _LABEL_LEVELS:
        return "integer, unique per row: id-like"
    return None


def _match(df: pd.DataFrame, patterns: Sequence[str], option: str) -> list:
    cols = [str(c) for c in df.columns]
    out: list = []
    for pat in patterns:
        hits = [c for c in cols if fnmatch.fnmatchcase(c, pat)] if any(ch in pat for ch in "*?[") else \
            ([pat] if pat in cols else [])
        if not hits:
            raise ValidationError(
                f"{option} '{pat}' matches no column of the table; its columns are "
                f"{cols[:15]}{' ...' if len(cols) > 15 else ''}."
            )
        out += [h for h in hits if h not in out]
    return out


def select_features(df: pd.DataFrame, *, reserved: Sequence = (), features: Sequence[str] | None = None,
                    exclude: Sequence[str] = ()) -> FeatureSelection:
    """Choose the feature columns of a table.

    Parameters
    ----------
    df : DataFrame
        The table.
    reserved : sequence of str, default=()
        Site, covariate and batch columns (never features).
    features : sequence of str, optional
        Column names or glob patterns (``original_glcm_*``); default: every numeric column
        that is not reserved, excluded, id-like or label-like.
    exclude : sequence of str, default=()
        Column names or glob patterns that are not features.

    Returns
    -------
    FeatureSelection

    Raises
    ------
    ValidationError
        A name or pattern that matches no column, a chosen column that is not numeric,
        a reserved column among the features, or no feature column at all.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"site": ["a", "b"] * 3, "outcome": [0, 1] * 3,
    ...                    "glcm_x": [0.1, 0.5, 0.3, 0.2, 0.9, 0.4]})
    >>> sel = select_features(df, reserved=["site"])
    >>> sel.features, sel.left_out
    (['glcm_x'], {'outcome': 'binary: 0, 1'})
    """
    missing = [c for c in reserved if c not in df.columns]
    if missing:
        raise ValidationError(
            f"Column(s) {missing} are not in the table; its columns are {list(df.columns)[:20]}."
        )
    skip = set(map(str, reserved)) | set(_match(df, list(exclude), "--exclude"))
    lookup = {str(c): c for c in df.columns}
    if features:
        chosen = _match(df, list(features), "--features")
        clash = [c for c in chosen if c in set(map(str, reserved))]
        if clash:
            raise ValidationError(f"Column(s) {clash} are the site, a covariate or a batch column; "
                                  "they cannot also be features. Remove them from --features.")
        chosen = [c for c in chosen if c not in skip]
        bad = [c for c in chosen if not pd.api.types.is_numeric_dtype(df[lookup[c]])
               or pd.api.types.is_bool_dtype(df[lookup[c]])]
        broken = [lookup[c] for c in bad if not _dask.is_dask_collection(df)
                  and _looks_numeric(df[lookup[c]])]
        if broken:  # mostly numbers: name the bad cell (or the decimal commas)
            numeric_columns(df, broken, source="The table")
        if bad:
            raise ValidationError(f"Feature column(s) {bad[:10]} are not numeric; fix the values "
                                  "(decimal points, no text) or leave them out of --features.")
        left: dict = {}
    else:
        chosen, left = [], {}
        lazy = _dask.is_dask_collection(df)  # a cluster table: judged by name and dtype only
        for name, col in df.items():
            if str(name) in skip or pd.api.types.is_bool_dtype(col):
                continue
            if not pd.api.types.is_numeric_dtype(col):
                if _id_like(name):
                    left[str(name)] = "id-like name"  # read as text: codes keep leading zeros
                elif not lazy and _looks_numeric(col):
                    # a feature column with a bad cell must not pass through unharmonized
                    numeric_columns(df, [name], source="The table")
                continue
            why = ("id-like name" if _id_like(name) else None) if lazy else _left_out_reason(col)
            if why:
                left[str(name)] = why
            else:
                chosen.append(str(name))
    if not chosen:
        raise ValidationError(
            "The table has no numeric feature columns besides the site, covariates and "
            f"id/label-like columns {list(left)[:10]}; name them with --features."
        )
    return FeatureSelection(chosen, left)


def _make_model(method: str, *, batch_cols, n_components, target_site, smooth, ref_site, **params):
    if method not in METHODS:
        raise ValidationError(f"The 'method' must be one of {METHODS}. Got {method!r} instead.")
    if smooth is not None:
        params["smooth"] = smooth
    if method == "nested":
        if not batch_cols:
            raise ValidationError("method='nested' needs batch_cols (--batch-cols vendor,recon).")
        if ref_site is not None or target_site is not None:
            raise ValidationError("ref_site/target_site do not apply to method='nested'.")
        return NestedComBat(batch_cols=list(batch_cols), **params)
    if batch_cols:
        raise ValidationError("batch_cols (--batch-cols) are for method='nested'.")
    if n_components is not None and method != "covbat":
        raise ValidationError("n_components (--n-components) is for method='covbat'.")
    if method == "covbat":
        if target_site is not None:
            raise ValidationError("target_site is not available with method='covbat'; use ref_site.")
        extra = {} if n_components is None else {"n_components": n_components}
        return CovBat(ref_site=ref_site, **params, **extra)
    return ComBat(ref_site=ref_site, target_site=target_site, **params)


@dataclass
class HarmonizeResult:
    """What a table workflow produced.

    Attributes
    ----------
    model : ComBat, CovBat or NestedComBat
        The fitted (or loaded, or adapted) model.
    selection : FeatureSelection or None
        The feature columns (``fit_table`` / ``harmonize_table``).
    n_rows : int
        Rows of the input table.
    paths : dict of str to pathlib.Path
        What was written: ``table``, ``model``, ``diagnostics`` (as applicable).
    new_sites : list
        Sites (or batch levels) the model was adapted to (``apply_table(adapt=True)``).
    diagnostics : dict or None
        The diagnostics written by :func:`harmonize_table`.
    """

    model: object
    selection: FeatureSelection | None
    n_rows: int
    paths: dict = field(default_factory=dict)
    new_sites: list = field(default_factory=list)
    diagnostics: dict | None = None


# --------------------------------------------------------------------------- paths
def check_output_path(path: PathLike, *, kind: str, option: str, force: bool,
                      inputs: Sequence[PathLike] = ()) -> Path:
    """Refuse, before any work, an output whose form contradicts what will be written, an
    existing output without ``force``, or an output that is an input."""
    p = Path(path)
    suffix = p.suffix.lower()
    wanted = {"table": TABLE_SUFFIXES, "model": (".npz",), "diagnostics": (".json",)}[kind]
    if str(path).endswith(("/", os.sep)) or (p.exists() and p.is_dir() and suffix != ".parquet"):
        raise ValidationError(
            f"{option} '{path}' is a folder, but a {kind} file is written there; give a file path "
            f"ending in {' or '.join(wanted)} (e.g. {p / ('harmonized.csv' if kind == 'table' else 'model.npz')})."
        )
    if suffix not in wanted:
        raise ValidationError(
            f"{option} '{path}' does not end in {' or '.join(wanted)}, but a {kind} is written there; "
            f"give a path such as '{p.with_suffix(wanted[0]).name}'."
        )
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FileError(f"{option} '{path}': '{parent}' is a file, not a folder; choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileError(f"{option} '{path}': the folder '{parent}' is not writable; choose another "
                        "path or fix its permissions.")
    for inp in inputs:
        if p.exists() and Path(inp).exists() and os.path.samefile(inp, p):
            raise OutputExistsError(f"{option} '{p}' is also an input of this run; choose another path.")
    if p.exists() and not force:
        raise OutputExistsError(f"{option} '{p}' already exists; pass --force (force=True) to replace it.")
    return p


def _beside(out: Path, suffix: str) -> Path:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(stem + suffix)


# --------------------------------------------------------------------------- reading / fitting
def _read(table: PathLike, *, text_columns: Sequence = (), sep: str | None = None,
          decimal: str = "."):
    """The table; site, batch and id-like columns of a CSV/TSV are read as text, so codes such
    as ``01`` or ``007`` keep their leading zeros and never become numeric features."""
    if _dask.active_session() is not None and Path(table).suffix.lower() not in (".csv", ".tsv", ".tab"):
        return _dask.read_table(table)  # a lazy dask DataFrame for Parquet inside dask_cluster()
    csv_options = {"sep": sep, "decimal": decimal} if sep or decimal != "." else {}
    is_csv = Path(table).suffix.lower() in (".csv", ".tsv", ".tab")
    header = read_table(table, nrows=0, **csv_options) if is_csv else None
    text = [c for c in text_columns if c]
    if header is not None:
        text += [str(c) for c in header.columns if _id_like(c)]
    return read_table(table, text_columns=text or None, **(csv_options if is_csv else {}))


def _columns(values) -> list:
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    return list(values)


def _fit(df, *, method="combat", site_col=None, covariates=(), categorical=(), continuous=(),
         features=None, exclude=(), batch_cols=(), smooth=None, target_site=None,
         n_components=None, ref_site=None, **params):
    """Choose the features of ``df`` and fit; return (model, selection, covariate columns)."""
    covs = _columns(covariates)
    smooth_names = list(smooth) if smooth is not None else []
    for c in _columns(categorical) + _columns(continuous) + smooth_names:
        if c not in covs:
            covs.append(c)
    batch_cols = _columns(batch_cols)
    if method != "nested" and not site_col:
        raise ValidationError("The site column is required (--site-col, site_col=); only "
                              "method='nested' uses batch columns instead.")
    reserved = [*(batch_cols if method == "nested" else [site_col]), *covs]
    selection = select_features(df, reserved=reserved, features=features, exclude=_columns(exclude))
    model = _make_model(method, batch_cols=batch_cols, n_components=n_components,
                        target_site=target_site, smooth=smooth, ref_site=ref_site,
                        categorical=_columns(categorical) or None,
                        continuous=_columns(continuous) or None, **params)
    X = df[selection.features]
    cov_df = df[covs] if covs else None
    if isinstance(model, NestedComBat):
        model.fit(X, batches=df[batch_cols], covariates=cov_df)
    else:
        model.fit(X, sites=df[site_col], covariates=cov_df)
    return model, selection, covs


def _record(site_col, covs) -> dict:
    return {COLUMNS_KEY: {"site_col": site_col, "covariates": list(covs)}}


def fit_table(table: PathLike, *, model_path: PathLike, force: bool = False,
              key: bytes | str | None = None, sep: str | None = None, decimal: str = ".",
              **fit_options) -> HarmonizeResult:
    """Fit a harmoniser on a table and save it.

    Parameters
    ----------
    table : str or path-like
        CSV, TSV or Parquet table (a Parquet directory inside :func:`dask_cluster`).
    model_path : str or path-like
        Output model file (``.npz``).
    force : bool, default=False
        Replace an existing model file.
    key : bytes or str, optional
        Sign the model file (HMAC-SHA256).
    sep : str, optional
        Field separator of a CSV table (default: ``","`` for ``.csv``, a tab for ``.tsv``).
    decimal : str, default="."
        Decimal mark of a CSV table (``","`` for decimal commas).
    **fit_options
        ``site_col`` (required unless ``method="nested"``); ``covariates``,
        ``categorical``, ``continuous`` (covariate columns whose effects are kept, the
        latter two forcing a type); ``features`` and ``exclude`` (column names or glob
        patterns, see :func:`select_features`); ``method`` (``"combat"`` (default),
        ``"covbat"`` or ``"nested"``); ``batch_cols`` (``method="nested"``); and the
        estimator's parameters (``ref_site``, ``target_site``, ``smooth``,
        ``n_components``, ``parametric``, ``mean_only``, ``eb``, ``tol`` ...).

    Returns
    -------
    HarmonizeResult
    """
    model_path = check_output_path(model_path, kind="model", option="--model", force=force,
                                   inputs=(table,))
    df = _read(table, text_columns=[fit_options.get("site_col"), *_columns(fit_options.get("batch_cols"))],
               sep=sep, decimal=decimal)
    model, selection, covs = _fit(df, **fit_options)
    model.save(model_path, force=force, metadata=_record(fit_options.get("site_col"), covs), key=key)
    return HarmonizeResult(model, selection, len(df), {"model": model_path})


def _covariate_names(model) -> list:
    base = model.combat_ if isinstance(model, CovBat) else model.steps_[0] \
        if isinstance(model, NestedComBat) else model
    names = [c["name"] for c in base.covariate_encoding_["columns"]]
    return names + [n for n in (getattr(base, "smooth_", None) or {}) if n not in names]


def _new_sites(df, model, site_col) -> list:
    if isinstance(model, NestedComBat):
        new = []
        for col, step in zip(model.order_, model.steps_):
            known = {str(s) for s in step.sites_}
            new += [f"{col}={v}" for v in df[col].astype(str).unique() if v not in known]
        return new
    known = {str(s) for s in model.sites_}
    return [v for v in df[site_col].astype(str).unique() if v not in known]


def _batch_columns(model) -> list:
    return list(model.batch_cols_) if isinstance(model, NestedComBat) else []


def _transform(df, model, site_col, covs):
    feats = [str(f) for f in model.feature_names_in_]
    ids = list(model.batch_cols_) if isinstance(model, NestedComBat) else [site_col]
    missing = [c for c in [*ids, *feats, *covs] if c not in df.columns]
    if missing:
        raise ValidationError(
            f"Column(s) {missing} that the model needs are not in the table; its columns are "
            f"{list(df.columns)[:20]}."
        )
    if _dask.is_dask_collection(df):  # lazy, one task per partition
        return _dask.transform_frame(model, df, site_col=site_col, covariate_cols=covs, features=feats)
    cov_df = df[covs] if covs else None
    if isinstance(model, NestedComBat):
        harmonised = model.transform(df[feats], batches=df[ids], covariates=cov_df)
    else:
        harmonised = model.transform(df[feats], sites=df[site_col], covariates=cov_df)
    out = df.copy()
    out[feats] = harmonised
    return out


def _adapt(df, model, site_col, covs):
    feats = [str(f) for f in model.feature_names_in_]
    cov_df = df[covs] if covs else None
    if isinstance(model, NestedComBat):
        return model.adapt(df[feats], batches=df[model.batch_cols_], covariates=cov_df)
    known = {str(s) for s in model.sites_}
    rows = ~df[site_col].astype(str).isin(known)
    return model.adapt(df.loc[rows, feats], sites=df.loc[rows, site_col],
                       covariates=None if cov_df is None else cov_df.loc[rows])


def apply_table(table: PathLike, *, model: PathLike, out: PathLike, site_col: str | None = None,
                covariates=None, adapt: bool = False, model_out: PathLike | None = None,
                force: bool = False, key: bytes | str | None = None, sep: str | None = None,
                decimal: str = ".") -> HarmonizeResult:
    """Harmonise a table with a saved model; every other column passes through in order.

    Parameters
    ----------
    table : str or path-like
        The table to harmonise.
    model : str or path-like
        A model file (any harmoniser; see :func:`sitekit.harmonize.load`).
    out : str or path-like
        The harmonised table (``.csv``, ``.tsv`` or ``.parquet``).
    site_col : str, optional
        Site column (default: the one recorded in the model file).
    covariates : sequence of str, optional
        Covariate columns (default: the ones recorded in the model file).
    adapt : bool, default=False
        Estimate sites (batch levels) the model has not seen from their own rows
        (:meth:`ComBat.adapt`).
    model_out : str or path-like, optional
        With ``adapt``: save the adapted model here.
    force : bool, default=False
        Replace existing outputs.
    key : bytes or str, optional
        The key of a signed model file (also signs ``model_out``).
    sep : str, optional
        Field separator of a CSV table (default: ``","`` for ``.csv``, a tab for ``.tsv``).
    decimal : str, default="."
        Decimal mark of a CSV table (``","`` for decimal commas).

    Returns
    -------
    HarmonizeResult
    """
    if model_out is not None and not adapt:
        raise ValidationError("model_out (--model-out) saves the adapted model; it needs adapt "
                              "(--adapt).")
    out = check_output_path(out, kind="table", option="--out", force=force, inputs=(table, model))
    if model_out is not None:
        model_out = check_output_path(model_out, kind="model", option="--model-out", force=force,
                                      inputs=(table, model))
        if Path(model_out).resolve() == Path(out).resolve():
            raise ValidationError("--out and --model-out name the same file; give two paths.")
    fitted = load(model, key=key)
    if not isinstance(fitted, ComBat | CovBat | NestedComBat):
        raise ValidationError(f"'{model}' holds a {type(fitted).__name__}, not a harmonisation "
                              "model; give a file written by 'sitekit harmonize fit' or 'run'.")
    recorded = fitted.file_metadata_.get("extra", {}).get(COLUMNS_KEY, {})
    site_col = site_col or recorded.get("site_col")
    if not site_col and not isinstance(fitted, NestedComBat):
        raise ValidationError(f"Model '{model}' does not record its site column; pass --site-col.")
    covs = _columns(covariates) if covariates else list(recorded.get("covariates", _covariate_names(fitted)))
    if not hasattr(fitted, "feature_names_in_"):
        raise ValidationError(f"Model '{model}' was fitted without column names; fit it from a table.")
    df = _read(table, text_columns=[site_col, *_batch_columns(fitted)], sep=sep, decimal=decimal)
    new: list = []
    if adapt:
        new = _new_sites(df, fitted, site_col)
        if new:
            fitted = _adapt(df, fitted, site_col, covs)
    result = _transform(df, fitted, site_col, covs)
    paths = {"table": _dask.write_table(result, out, force=force)}
    if model_out is not None:
        fitted.save(model_out, force=force, metadata=_record(site_col, covs), key=key)
        paths["model"] = Path(model_out)
    return HarmonizeResult(fitted, None, len(df), paths, new)


# --------------------------------------------------------------------------- result set
@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the result set is moved into place (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _staging(out: Path) -> Path:
    """The staging folder of a result set: a fixed hidden name beside the table, so that a run
    killed before it could clean up leaves nothing a rerun trips over (it is removed first)."""
    return out.with_name(f".{out.name}.sitekit-run.tmp")


def _replace(src: Path, dst: Path, trash: Path) -> None:
    if dst.is_dir():
        os.replace(dst, trash / ("old-" + dst.name))
    os.replace(src, dst)


def harmonize_table(table: PathLike, *, out: PathLike, model_path: PathLike | None = None,
                    diagnostics_path: PathLike | None = None, force: bool = False,
                    key: bytes | str | None = None, sep: str | None = None, decimal: str = ".",
                    **fit_options) -> HarmonizeResult:
    """Fit a harmoniser on a table and harmonise it, writing one result set.

    The result set is the harmonised table ``out``, the model (``model_path``, default
    ``<out stem>.model.npz`` beside the table) and the diagnostics (``diagnostics_path``,
    default ``<out stem>.diagnostics.json``), which record the SHA-256 of the other two.
    Everything is computed first and written into a hidden staging folder beside ``out``;
    the files are then moved into place with interrupts held, diagnostics last, after the
    old diagnostics are removed.  An interrupted run therefore leaves the old set or the
    new one (a set without its diagnostics file is not a result set for ``sitekit
    report``), and its leftover staging folder is removed by the next run.

    Parameters
    ----------
    table : str or path-like
        CSV, TSV or Parquet table.
    out : str or path-like
        The harmonised table (``.csv``, ``.tsv`` or ``.parquet``).
    model_path, diagnostics_path : str or path-like, optional
        Where the model (``.npz``) and diagnostics (``.json``) go.
    force : bool, default=False
        Replace an existing result set.
    key : bytes or str, optional
        Sign the model file (HMAC-SHA256).
    sep : str, optional
        Field separator of a CSV table (default: ``","`` for ``.csv``, a tab for ``.tsv``).
    decimal : str, default="."
        Decimal mark of a CSV table (``","`` for decimal commas).
    **fit_options
        As in :func:`fit_table` (``site_col``, ``covariates``, ``features``, ``method`` ...).

    Returns
    -------
    HarmonizeResult

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, pandas as pd
    >>> from sitekit.harmonize import harmonize_table
    >>> rng = np.random.default_rng(0)
    >>> folder = tempfile.mkdtemp()
    >>> df = pd.DataFrame({"site": np.repeat(["a", "b"], 30), "age": rng.uniform(20, 80, 60),
    ...                    "f1": rng.normal(size=60), "f2": rng.normal(size=60)})
    >>> df.to_csv(os.path.join(folder, "features.csv"), index=False)
    >>> res = harmonize_table(os.path.join(folder, "features.csv"), site_col="site",
    ...                       covariates=["age"], out=os.path.join(folder, "harmonized.csv"))
    >>> sorted(os.listdir(folder))
    ['features.csv', 'harmonized.csv', 'harmonized.diagnostics.json', 'harmonized.model.npz']
    """
    inputs = (table,)
    out = check_output_path(out, kind="table", option="--out", force=force, inputs=inputs)
    model_path = check_output_path(model_path or _beside(out, ".model.npz"), kind="model",
                                   option="--model", force=force, inputs=inputs)
    diagnostics_path = check_output_path(diagnostics_path or _beside(out, ".diagnostics.json"),
                                         kind="diagnostics", option="--diagnostics", force=force,
                                         inputs=inputs)
    targets = [Path(out).resolve(), Path(model_path).resolve(), Path(diagnostics_path).resolve()]
    if len(set(targets)) != 3:
        raise ValidationError("The table, model and diagnostics paths must differ.")
    df = _read(table, text_columns=[fit_options.get("site_col"), *_columns(fit_options.get("batch_cols"))],
               sep=sep, decimal=decimal)
    model, selection, covs = _fit(df, **fit_options)
    site_col = fit_options.get("site_col")
    result = _transform(df, model, site_col, covs)
    stage = _staging(out)
    shutil.rmtree(stage, ignore_errors=True)  # what a killed run left behind
    stage.mkdir(parents=True)
    try:
        staged = {"table": stage / ("table" + out.suffix), "model": stage / "model.npz",
                  "diagnostics": stage / "diagnostics.json"}
        _dask.write_table(result, staged["table"], force=True)
        model.save(staged["model"], force=True, metadata=_record(site_col, covs), key=key)
        diag = harmonization_diagnostics(
            model, input_path=table, site_col=site_col, covariates=covs, features=selection.features,
            outputs={"table": staged["table"], "model": staged["model"]},
        )
        diag["outputs"] = {"table": out.name, "model": Path(model_path).name}
        staged["diagnostics"].write_text(dumps(diag, indent=1), encoding="utf-8")
        with _signals_deferred():
            if Path(diagnostics_path).exists():
                Path(diagnostics_path).unlink()  # the old set stops being a result set first
            _replace(staged["model"], Path(model_path), stage)
            _replace(staged["table"], out, stage)
            _replace(staged["diagnostics"], Path(diagnostics_path), stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    paths = {"table": out, "model": Path(model_path), "diagnostics": Path(diagnostics_path)}
    return HarmonizeResult(model, selection, len(df), paths, diagnostics=diag)


# --------------------------------------------------------------------------- dask
@contextlib.contextmanager
def dask_cluster(*, scheduler: str | None = None, workers: int | None = None,
                 compute: Callable | None = None) -> Iterator[object]:
    """Run the table workflows on a dask cluster for the duration of the block.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    workers : int, optional
        Start a local cluster of this many worker processes instead.
    compute : callable, optional
        ``compute(client, collections) -> results``: how computations run (the CLI passes
        one that shows dask's progress); default ``dask.compute``.

    Yields
    ------
    distributed.Client
    """
    with _dask.session(scheduler=scheduler, workers=workers) as client:
        if compute is None:
            yield client
            return
        with _dask.progress_callback(lambda objs: compute(client, objs)):
            yield client
