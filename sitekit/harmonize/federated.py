"""Federated ComBat (d-ComBat style): sites share aggregates, never rows.

The ComBat fit needs, per feature, only sums over samples: the design cross-products
``D'D`` and ``D'Y`` (round 1, giving the regression coefficients and the grand mean) and,
per site, the count, sum and sum of squares of the regression residuals (round 2, giving the
pooled variance and the per-site sums of the standardised data ``Z`` and ``Z**2`` on which the
empirical-Bayes step runs).  Each site computes these sums on its own table
(:func:`summarize_site`), a coordinator adds them up (:func:`combine`) and, after the second
round, returns an ordinary fitted :class:`~sitekit.harmonize.ComBat` model that every site
applies to its own rows (``sitekit harmonize apply``).  The result equals ComBat fitted on the
pooled table to rounding error.

Protocol (files)::

    round 1   site:        summarize TABLE                        -> S1_<site>.npz
              coordinator: combine S1_*.npz                        -> MSG1.npz  (coefficients)
    round 2   site:        summarize TABLE --round-message MSG1    -> S2_<site>.npz
              coordinator: combine S2_*.npz --round-message MSG1   -> MODEL.npz (a ComBat model)
    apply     site:        sitekit harmonize apply TABLE --model MODEL.npz --out OUT

Privacy guards: every array of a summary has a declared meaning and axes (``feature``,
``design`` or none); no axis may have the length of the site's sample count unless it is
a declared feature/design axis of exactly that length (checked when writing and again when
combining); a site with fewer than ``min_site_size`` samples refuses to summarise;
:func:`describe_summary` lists exactly what leaves the site.

The same sufficient statistics drive the Dask engine (:mod:`sitekit.harmonize._dask`), where
the "sites" of the sums are the row blocks of a dask collection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sitekit._typing import PathLike
from sitekit._validation import check_bool, check_number
from sitekit._version import __version__
from sitekit.exceptions import (
    ConfoundingError,
    InvalidModelError,
    ModelFileError,
    PrivacyError,
    ProtocolError,
    UnknownSiteError,
    ValidationError,
    WrongModelKindError,
)
from sitekit.harmonize._combat import ComBat
from sitekit.harmonize._design import (
    _sorted_levels,
    covariate_column_names,
    covariate_matrix,
    encode_sites,
    fit_covariate_encoding,
    to_json_value,
)
from sitekit.harmonize._eb import (
    CrossProducts,
    SiteMoments,
    ols_cross_products,
    residual_moments,
    solve_ols,
)
from sitekit.harmonize._persistence import (
    ModelFile,
    read_model_file,
    register_kind,
    write_model_file,
)
from sitekit.harmonize._table import COLUMNS_KEY, check_output_path, select_features
from sitekit.io import read_table

__all__ = [
    "PROTOCOL_VERSION",
    "SiteSummary",
    "RoundMessage",
    "summarize_site",
    "combine",
    "describe_summary",
    "load_federated",
    "summarize_table",
    "combine_files",
]

#: Version of the file protocol; summaries and messages of another version are refused.
PROTOCOL_VERSION = 1
_SUMMARY_FORMAT = "sitekit-federated-summary"
_MESSAGE_FORMAT = "sitekit-federated-message"
#: ``kind`` of the files (see :mod:`sitekit.harmonize._persistence`)
SUMMARY_KIND = "federated-summary"
MESSAGE_KIND = "federated-message"

#: What each array of a summary holds, and the meaning of its axes ("feature": one entry per
#: feature; "design": one per column of the site's local design [1 | covariates];
#: "missing": one per feature with missing values, listed in the array ``missing``).
_ARRAY_SPECS = {
    1: {
        "dtd": (("design", "design"), "design cross-products D'D summed over the site's rows"),
        "dty": (("design", "feature"), "cross-products D'Y per feature (missing cells as 0)"),
        "missing": (("missing",), "indices of the features with missing values (if any)"),
        "dtd_missing": (
            ("missing", "design", "design"),
            "D'D over the rows where each of those features is observed",
        ),
    },
    2: {
        "count": (("feature",), "number of non-missing values per feature"),
        "resid_sum": (("feature",), "sum of the regression residuals per feature"),
        "resid_sumsq": (("feature",), "sum of the squared regression residuals per feature"),
        "constant_value": (
            ("feature",),
            "the feature's value where it is constant at the site (then it is also its mean), "
            "else NaN",
        ),
    },
}


# --------------------------------------------------------------------------- files
@dataclass
class _ProtocolFile:
    """A file of the protocol: JSON ``meta`` and named ``arrays``, saved as a model file."""

    meta: dict
    arrays: dict

    @property
    def round(self) -> int:
        return int(self.meta["round"])

    def save(self, path: PathLike, *, force: bool = False, key: bytes | str | None = None) -> Path:
        """Write it as a sitekit model file (arrays + JSON metadata under one checksum, no
        pickle), atomically, after checking it against the protocol.

        Parameters
        ----------
        path : str or path-like
            Output file (``.npz``).
        force : bool, default=False
            Replace an existing file.
        key : bytes or str, optional
            Shared secret of the consortium: sign the file (HMAC-SHA256).

        Returns
        -------
        pathlib.Path
        """
        self._check()
        return write_model_file(path, kind=self._kind, arrays=self.arrays, metadata=self.meta,
                                force=force, key=key)


@dataclass
class SiteSummary(_ProtocolFile):
    """What one site sends to the coordinator in one round.

    Attributes
    ----------
    meta : dict
        JSON metadata: protocol version, round, site name, sample count, feature names,
        covariate encoding (local levels), hash of the message answered (round 2).
    arrays : dict of str to ndarray
        The aggregates; their names, axes and meaning are fixed by the protocol
        (see :func:`describe_summary`).
    source : str or None
        The file it was read from.
    """

    source: str | None = None
    _kind = SUMMARY_KIND

    @property
    def site(self):
        return self.meta["site"]

    def _check(self) -> None:
        _check_privacy(self)
        _check_summary_arrays(self, "before writing")


@dataclass
class RoundMessage(_ProtocolFile):
    """What the coordinator sends back to every site after round 1.

    Attributes
    ----------
    meta : dict
        Protocol version, sites and their sample counts, features, the global covariate
        encoding and the model options.
    arrays : dict of str to ndarray
        ``beta`` (n_design_columns, n_features): the regression coefficients of the pooled
        design ``[site indicators | covariate columns]``.
    """

    _kind = MESSAGE_KIND

    def _check(self) -> None:
        _check_message(self, "the round message")

    def digest(self) -> str:
        """SHA-256 of the message content; round-2 summaries record it."""
        h = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode())
        for k in sorted(self.arrays):
            a = np.ascontiguousarray(self.arrays[k])
            h.update(k.encode())
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()


def load_federated(path: PathLike, *, key: bytes | str | None = None) -> SiteSummary | RoundMessage:
    """Read a summary or round message written by this module (also by sitekit 0.1).

    Parameters
    ----------
    path : str or path-like
        The file.
    key : bytes or str, optional
        The consortium's shared secret, if the files are signed.

    Returns
    -------
    SiteSummary or RoundMessage

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    ModelFileError
        Not a federated file, truncated, edited, wrongly signed, or with arrays that do not
        match the protocol (the subclasses of :class:`~sitekit.exceptions.ModelFileError`
        name which).
    ProtocolError
        Another protocol version.
    """
    mf = read_model_file(path, key=key)
    if mf.kind not in (SUMMARY_KIND, MESSAGE_KIND):
        raise WrongModelKindError(
            f"'{path}' holds a {mf.kind} model, not a federated summary or message; a fitted "
            "model is applied with 'sitekit harmonize apply'."
        )
    return _from_file(mf)


def _from_file(mf: ModelFile) -> SiteSummary | RoundMessage:
    p = mf.source
    meta = mf.metadata
    expected = _SUMMARY_FORMAT if mf.kind == SUMMARY_KIND else _MESSAGE_FORMAT
    if meta.get("format") != expected:
        raise mf.invalid(f"its metadata says format {meta.get('format')!r}, expected {expected!r}")
    version = meta.get("protocol_version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"'{p}' uses federated protocol version {version}, this sitekit ({__version__}) "
            f"speaks version {PROTOCOL_VERSION}; every site and the coordinator must use the "
            "same sitekit release."
        )
    try:
        if mf.kind == SUMMARY_KIND:
            summary = SiteSummary(meta=meta, arrays=dict(mf.arrays), source=str(p))
            _check_summary_arrays(summary, p)
            _check_privacy(summary, source=p)
            return summary
        message = RoundMessage(meta=meta, arrays=dict(mf.arrays))
        _check_message(message, p)
        return message
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelFileError | ProtocolError | PrivacyError):
            raise
        raise mf.invalid(f"incomplete federated metadata ({type(exc).__name__}: {exc})") from exc


register_kind(SUMMARY_KIND, _from_file)
register_kind(MESSAGE_KIND, _from_file)


def _bad(source, site, problem: str) -> InvalidModelError:
    who = f"site {site!r}" if site is not None else "an unknown site"
    return InvalidModelError(
        f"Summary of {who} ({source}): {problem}. The file was damaged or edited; ask the site "
        "to run 'sitekit federated summarize' again and resend it."
    )


def _check_summary_arrays(summary: SiteSummary, source) -> None:
    """Shapes, dtypes, finiteness and counts of every array of a summary (named on error)."""
    meta = summary.meta
    site = meta.get("site")
    rnd = meta.get("round")
    if rnd not in _ARRAY_SPECS:
        raise _bad(source, site, f"unknown round {rnd!r}")
    n = meta.get("n_samples")
    features = meta.get("features")
    if not isinstance(n, int) or n < 1 or not isinstance(features, list) or not features:
        raise _bad(source, site, f"n_samples {n!r} / features are not a summary's")
    if not isinstance(meta.get("n_design_columns"), int) or meta["n_design_columns"] < 1:
        raise _bad(source, site, f"n_design_columns {meta.get('n_design_columns')!r} is not valid")
    specs = _ARRAY_SPECS[rnd]
    extra = set(summary.arrays) - set(specs)
    if extra:
        raise _bad(source, site, f"arrays {sorted(extra)} are not part of the protocol (it was not "
                                 "written by 'sitekit federated summarize')")
    absent = [k for k in specs if k not in summary.arrays and k not in ("missing", "dtd_missing")]
    if absent:
        raise _bad(source, site, f"arrays {absent} are missing")
    if ("missing" in summary.arrays) != ("dtd_missing" in summary.arrays):
        raise _bad(source, site, "arrays 'missing' and 'dtd_missing' go together")
    lengths = _axis_lengths(summary)
    for name, arr in summary.arrays.items():
        arr = np.asarray(arr)
        axes = specs[name][0]
        expected = tuple(lengths[a] for a in axes)
        dtype = np.int64 if name == "missing" else np.float64
        if arr.shape != expected or arr.dtype != dtype:
            raise _bad(source, site, f"array '{name}' has shape {arr.shape} and dtype {arr.dtype}, "
                                     f"expected {expected} {np.dtype(dtype)}")
        finite = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, dtype=bool)
        if name != "constant_value" and not finite.all():
            raise _bad(source, site, f"array '{name}' holds {int((~finite).sum())} NaN or infinite "
                                     "value(s)")
        if name == "constant_value" and np.isinf(arr).any():
            raise _bad(source, site, "array 'constant_value' holds infinite values")
    arrays = summary.arrays
    if "missing" in arrays:
        miss = arrays["missing"]
        if miss.size and (miss.min() < 0 or miss.max() >= lengths["feature"]
                          or np.unique(miss).size != miss.size):
            raise _bad(source, site, "array 'missing' holds invalid or repeated feature indices")
    if rnd == 1:
        dtd = arrays["dtd"]
        if not np.allclose(dtd, dtd.T, rtol=1e-12, atol=1e-12 * np.abs(dtd).max()) or dtd[0, 0] != n:
            raise _bad(source, site, f"array 'dtd' is not a cross-product matrix of {n} samples "
                                     "(not symmetric, or its intercept entry is not the sample count)")
    else:
        count = arrays["count"]
        if (count < 0).any() or (count > n).any() or (count != np.round(count)).any():
            raise _bad(source, site, f"array 'count' holds values that are not counts of 0..{n} "
                                     "samples")
        if (arrays["resid_sumsq"] < 0).any():
            raise _bad(source, site, "array 'resid_sumsq' holds negative sums of squares")


def _check_message(message: RoundMessage, source) -> None:
    """The round-1 message: metadata and the finite ``beta`` of the pooled design."""
    meta = message.meta
    try:
        sites = meta["sites"]
        features = meta["features"]
        columns = meta["design_columns"]
        counts = meta["n_samples"]
    except (KeyError, TypeError):
        raise InvalidModelError(f"Round message ({source}) lacks its sites, features or design "
                                "columns; use the coordinator's original file.") from None
    if set(message.arrays) != {"beta"}:
        raise InvalidModelError(f"Round message ({source}) must hold exactly the array 'beta'; got "
                                f"{sorted(message.arrays)}.")
    beta = np.asarray(message.arrays["beta"])
    if beta.dtype != np.float64 or beta.shape != (len(columns), len(features)):
        raise InvalidModelError(
            f"Round message ({source}): array 'beta' has shape {beta.shape} and dtype {beta.dtype}, "
            f"expected ({len(columns)}, {len(features)}) float64 (design columns x features)."
        )
    if len(counts) != len(sites) or len(sites) > len(columns):
        raise InvalidModelError(f"Round message ({source}): {len(sites)} sites do not match "
                                f"{len(counts)} sample counts and {len(columns)} design columns.")
    bad = ~np.isfinite(beta)
    if bad.any():
        raise InvalidModelError(
            f"Round message ({source}): array 'beta' holds {int(bad.sum())} NaN or infinite "
            "value(s); use the coordinator's original file."
        )


def _axis_lengths(summary: SiteSummary) -> dict:
    miss = summary.arrays.get("missing")
    return {
        "feature": len(summary.meta["features"]),
        "design": summary.meta.get("n_design_columns"),
        "missing": 0 if miss is None else int(np.asarray(miss).size),
    }


def _check_privacy(summary: SiteSummary, source=None) -> None:
    """No array may have an axis of the length of the site's sample count, unless that axis
    is a declared feature/design axis which happens to have that length."""
    n = int(summary.meta["n_samples"])
    lengths = _axis_lengths(summary)
    specs = _ARRAY_SPECS[summary.round]
    where = f" in '{source}'" if source else ""
    for name, arr in summary.arrays.items():
        if name not in specs:
            raise PrivacyError(f"Array '{name}'{where} is not part of the protocol; refusing.")
        axes = specs[name][0]
        if arr.ndim != len(axes):
            raise PrivacyError(
                f"Array '{name}'{where} has {arr.ndim} axes, the protocol declares {len(axes)}."
            )
        for axis, size in zip(axes, arr.shape):
            declared = lengths[axis]
            if size == n and size != declared:
                raise PrivacyError(
                    f"Array '{name}'{where} has an axis of length {size}, the site's sample "
                    "count: it could hold one value per sample. Refusing to share it."
                )


def describe_summary(summary: SiteSummary) -> pd.DataFrame:
    """Exactly what a summary shares: one row per array.

    Returns
    -------
    pandas.DataFrame
        Columns ``array``, ``shape``, ``dtype``, ``axes``, ``description``.  The metadata
        (site name, sample count, feature names, covariate names and levels, protocol
        version) is in ``summary.meta``.
    """
    specs = _ARRAY_SPECS[summary.round]
    rows = []
    for name in sorted(summary.arrays):
        arr = summary.arrays[name]
        rows.append(
            {
                "array": name,
                "shape": "x".join(map(str, arr.shape)) or "scalar",
                "dtype": str(arr.dtype),
                "axes": ",".join(specs[name][0]),
                "description": specs[name][1],
            }
        )
    return pd.DataFrame(rows, columns=["array", "shape", "dtype", "axes", "description"])


# --------------------------------------------------------------------------- site side
def _local_covariates(covariates, encoding: dict, n: int) -> np.ndarray:
    """Covariate block in the *local* encoding: continuous as is, categorical one column per
    level present at the site (full one-hot: the reference level is only known globally)."""
    blocks = []
    for spec in encoding["columns"]:
        col = covariates[_column_lookup(covariates)[spec["name"]]]
        if spec["kind"] == "continuous":
            blocks.append(pd.to_numeric(col).to_numpy(dtype=np.float64)[:, None])
        else:
            vals = col.map(to_json_value).tolist()
            index = {lv: i for i, lv in enumerate(spec["levels"])}
            block = np.zeros((n, len(spec["levels"])))
            block[np.arange(n), [index[v] for v in vals]] = 1.0
            blocks.append(block)
    return np.hstack(blocks) if blocks else np.zeros((n, 0))


def _column_lookup(frame: pd.DataFrame) -> dict:
    return {to_json_value(c): c for c in frame.columns}


def _as_frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValidationError(f"X must be 2-D (samples x features); got {arr.ndim} dimension(s).")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def _feature_matrix(X: pd.DataFrame, features: list, site) -> np.ndarray:
    lookup = _column_lookup(X)
    missing = [f for f in features if f not in lookup]
    if missing:
        raise ValidationError(
            f"Site {site!r} lacks feature column(s) {missing[:10]} of the round message; every "
            "site must summarise the same features."
        )
    Y = X[[lookup[f] for f in features]]
    bad = [str(c) for c in Y.columns if not pd.api.types.is_numeric_dtype(Y[c])]
    if bad:
        raise ValidationError(f"Feature column(s) {bad[:10]} at site {site!r} are not numeric.")
    Y = Y.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(Y).any():
        cols = [features[j] for j in np.flatnonzero(np.isinf(Y).any(axis=0))[:10]]
        raise ValidationError(f"Feature column(s) {cols} at site {site!r} hold infinite values.")
    return Y


def _check_cells(Y: np.ndarray, covariates, encoding: dict, site, k: int, features: list) -> None:
    """The privacy rule: every released sum aggregates 0 or at least ``k`` samples.

    Checked per cell = (the whole site, or one level of a categorical covariate) x feature:
    the number of rows of the cell (a level), of observed values of each feature in it and
    of missing values of each feature in it (the difference between the sums over all rows
    and over the observed rows is a sum over the missing rows) must each be 0 or >= k.
    """
    n = Y.shape[0]
    observed = np.isfinite(Y)
    cells = [("", np.ones(n, dtype=bool))]
    fix_level = ("Merge the level into another one (recode the column the same way at every site), "
                 "drop the covariate at every site, or lower --min-cell-size (min_cell_size=) only "
                 "if your data agreement allows it. Nothing was written.")
    for spec in encoding["columns"]:
        if spec["kind"] != "categorical":
            continue
        values = covariates[_column_lookup(covariates)[spec["name"]]].map(to_json_value).to_numpy(dtype=object)
        for level in spec["levels"]:
            mask = values == level
            size = int(mask.sum())
            if 0 < size < k:
                raise PrivacyError(
                    f"Site {site!r}: covariate '{spec['name']}' level {level!r} has {size} sample(s), "
                    f"fewer than min_cell_size={k}; the summary's sums over that level would reveal "
                    f"too much about each of them. {fix_level}"
                )
            if size:
                cells.append((f" among the rows with {spec['name']}={level!r}", mask))
    for where, mask in cells:
        obs = observed[mask].sum(axis=0)
        mis = int(mask.sum()) - obs
        for counts, what, fix in (
            (obs, "observed value(s)", "leave the feature empty at this site (it then contributes "
                                       "nothing) or drop it at every site (--exclude)"),
            (mis, "missing value(s)", "fill or blank the feature for more rows at this site, or "
                                      "drop it at every site (--exclude); the sums over the "
                                      "missing rows are the difference of two released sums"),
        ):
            bad = np.flatnonzero((counts > 0) & (counts < k))
            if bad.size:
                names = ", ".join(f"'{features[j]}' ({int(counts[j])})" for j in bad[:5])
                more = f" and {bad.size - 5} more" if bad.size > 5 else ""
                raise PrivacyError(
                    f"Site {site!r}: feature(s) {names}{more} have fewer than min_cell_size={k} "
                    f"{what}{where}; a sum over so few values reveals them. Fix: {fix}, or lower "
                    "--min-cell-size (min_cell_size=) only if your data agreement allows it. "
                    "Nothing was written."
                )


def summarize_site(
    X,
    *,
    sites,
    covariates: pd.DataFrame | None = None,
    categorical: Sequence | None = None,
    continuous: Sequence | None = None,
    message: RoundMessage | None = None,
    min_site_size: int = 10,
    min_cell_size: int = 5,
) -> SiteSummary:
    """Compute one site's aggregates for a round of federated ComBat.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        The site's features (NaN = missing value).
    sites : array-like of shape (n_samples,)
        Site labels; all rows must belong to one site.
    covariates : DataFrame, optional
        Covariates of the same rows (complete, no NaN).
    categorical, continuous : sequence of str, optional
        Force covariate columns to be categorical/continuous (default: by dtype).  Every
        site must use the same choice.
    message : RoundMessage, optional
        The coordinator's round-1 message.  Without it the round-1 summary (cross-products)
        is computed; with it the round-2 summary (residual sums).
    min_site_size : int, default=10
        Sites with fewer samples refuse to take part (small sites leak more per sample).
    min_cell_size : int, default=5
        The privacy rule: every released statistic aggregates 0 or at least this many
        samples.  A categorical covariate level with fewer samples at this site, or a
        feature with fewer observed (or, if any, fewer missing) values at the site or
        within a level, is refused with a :class:`~sitekit.exceptions.PrivacyError` that
        names it, before anything is computed or written.

    Returns
    -------
    SiteSummary
        Save it with :meth:`SiteSummary.save` and send the file to the coordinator.

    Raises
    ------
    PrivacyError
        The site has fewer than ``min_site_size`` samples, or a cell breaks the
        ``min_cell_size`` rule.

    Notes
    -----
    What a summary reveals (and nothing else leaves the site):

    * round 1: the site name, its sample count, the feature and covariate names, the
      covariate levels present at the site, and per feature the sums ``D'D`` and ``D'Y`` of
      the local design ``D = [1 | covariates (continuous as is, categorical one column per
      level)]``: the count of each level, the sum and sum of squares of each continuous
      covariate (over the site and within each level), their pairwise cross-products, and
      the sum of each feature over the site and within each level, and its sum weighted by
      each continuous covariate; with missing values, the same ``D'D`` over the rows where
      each such feature is observed.
    * round 2: per feature the number of observed values, and the sum and sum of squares of
      the regression residuals over the site; for a feature constant at the site, that
      value (shared by all of its observed rows).

    Every such sum runs over 0 or at least ``min_cell_size`` samples (the rule above); the
    protocol does not protect against a coordinator who combines summaries of the *same*
    site computed on different tables (differencing), so a site summarises one table once.

    ValidationError
        Several sites in one table, non-numeric or infinite features, bad covariates.
    """
    min_site_size = check_number(min_site_size, name="min_site_size", low=2, integer=True)
    min_cell_size = check_number(min_cell_size, name="min_cell_size", low=2, integer=True)
    X = _as_frame(X)
    codes = encode_sites(sites, owner="summarize_site")
    if codes.n_sites != 1:
        raise ValidationError(
            f"A site summary covers one site; this table has {codes.n_sites} sites "
            f"{codes.levels}. Split it by site and summarise each part where it lives."
        )
    site = codes.levels[0]
    n = int(codes.codes.size)
    if n < min_site_size:
        raise PrivacyError(
            f"Site {site!r} has {n} samples, fewer than min_site_size={min_site_size}; sums over "
            "so few samples reveal too much about each one. Refusing to summarise (lower "
            "--min-site-size only if your data agreement allows it)."
        )
    if covariates is not None:
        covariates = pd.DataFrame(covariates)
        if len(covariates) != n:
            raise ValidationError(
                f"covariates have {len(covariates)} rows but X has {n}; give one row per sample."
            )
        if isinstance(X.index, pd.Index) and not covariates.index.equals(X.index):
            covariates = covariates.set_axis(X.index)
        if covariates.shape[1] == 0:
            covariates = None
    meta = {
        "format": _SUMMARY_FORMAT,
        "protocol_version": PROTOCOL_VERSION,
        "sitekit_version": __version__,
        "site": site,
        "n_samples": n,
        "min_cell_size": min_cell_size,
    }
    if message is None:
        features = [to_json_value(c) for c in X.columns]
        if len(set(features)) != len(features):
            raise ValidationError("Feature column names must be unique.")
        Y = _feature_matrix(X, features, site)
        encoding = fit_covariate_encoding(
            covariates, categorical=categorical, continuous=continuous, owner=f"site {site!r}"
        )
        _check_cells(Y, covariates, encoding, site, min_cell_size, features)
        D = np.hstack([np.ones((n, 1)), _local_covariates(covariates, encoding, n)])
        cp = ols_cross_products(Y, D)
        arrays = {"dtd": cp.dtd, "dty": cp.dty}
        if cp.missing.size:
            arrays["missing"] = cp.missing.astype(np.int64)
            arrays["dtd_missing"] = cp.dtd_missing
        meta.update(round=1, features=features, covariates=encoding, n_design_columns=D.shape[1])
    else:
        if message.round != 1:
            raise ProtocolError(f"Expected a round-1 message, got round {message.round}.")
        mmeta = message.meta
        features = mmeta["features"]
        known = {str(s): i for i, s in enumerate(mmeta["sites"])}
        if str(site) not in known:
            raise UnknownSiteError(
                f"Site {site!r} is not among the sites of the round message {mmeta['sites']}; "
                "it did not take part in round 1."
            )
        Y = _feature_matrix(X, features, site)
        encoding = mmeta["encoding"]
        cov = covariate_matrix(covariates, encoding, n_samples=n, owner=f"site {site!r}")
        _check_cells(Y, covariates, encoding, site, min_cell_size, features)
        s = known[str(site)]
        n_sites = len(mmeta["sites"])
        beta = message.arrays["beta"]
        # rows of this site: site column s plus the covariate columns
        D = np.hstack([np.ones((n, 1)), cov])
        b = np.vstack([beta[s : s + 1], beta[n_sites:]])
        mom = residual_moments(Y, D, b, np.zeros(n, dtype=np.intp), 1)
        with np.errstate(invalid="ignore"):
            constant = np.where((mom.n[0] > 0) & (mom.ymin[0] == mom.ymax[0]), mom.ymin[0], np.nan)
        arrays = {
            "count": mom.n[0],
            "resid_sum": mom.r1[0],
            "resid_sumsq": mom.r2[0],
            "constant_value": constant,
        }
        meta.update(
            round=2,
            features=features,
            message_sha256=message.digest(),
            n_design_columns=int(beta.shape[0]),
        )
    summary = SiteSummary(meta=meta, arrays=arrays)
    _check_privacy(summary)
    return summary


# --------------------------------------------------------------------------- coordinator side
def _check_same(summaries: Sequence[SiteSummary], key: str, what: str, fix: str) -> None:
    first = summaries[0]
    for s in summaries[1:]:
        if s.meta[key] != first.meta[key]:
            a, b = first.meta[key], s.meta[key]
            detail = ""
            if isinstance(a, list) and isinstance(b, list):
                only_a = [x for x in a if x not in b][:5]
                only_b = [x for x in b if x not in a][:5]
                if only_a or only_b:
                    detail = f" (only at {first.site!r}: {only_a}; only at {s.site!r}: {only_b})"
                else:
                    detail = " (same names, different order)"
            raise ProtocolError(
                f"Site {s.site!r} has different {what} from site {first.site!r}{detail}; {fix}"
            )


def _global_encoding(summaries: Sequence[SiteSummary]) -> dict:
    specs0 = summaries[0].meta["covariates"]["columns"]
    for s in summaries[1:]:
        specs = s.meta["covariates"]["columns"]
        names0 = [(c["name"], c["kind"]) for c in specs0]
        names = [(c["name"], c["kind"]) for c in specs]
        if names != names0:
            raise ProtocolError(
                f"Site {s.site!r} encodes its covariates as {names} but site "
                f"{summaries[0].site!r} as {names0} (name, kind); every site must pass the same "
                "--covariates in the same order and the same --categorical/--continuous choice."
            )
    columns = []
    for k, spec in enumerate(specs0):
        if spec["kind"] == "continuous":
            columns.append({"name": spec["name"], "kind": "continuous"})
        else:
            union = []
            for s in summaries:
                for lv in s.meta["covariates"]["columns"][k]["levels"]:
                    if lv not in union:
                        union.append(lv)
            columns.append(
                {"name": spec["name"], "kind": "categorical", "levels": _sorted_levels(union)}
            )
    return {"columns": columns}


def _embedding(local: dict, glob: dict, site_index: int, n_sites: int) -> np.ndarray:
    """Linear map from a site's local design row [1 | covariates, full one-hot] to the global
    design row [site indicators | covariates, treatment coding]."""
    p = n_sites + len(covariate_column_names(glob))
    q = 1 + sum(1 if c["kind"] == "continuous" else len(c["levels"]) for c in local["columns"])
    A = np.zeros((p, q))
    A[site_index, 0] = 1.0
    g, loc = n_sites, 1
    for lspec, gspec in zip(local["columns"], glob["columns"]):
        if gspec["kind"] == "continuous":
            A[g, loc] = 1.0
            g, loc = g + 1, loc + 1
            continue
        position = {lv: i for i, lv in enumerate(gspec["levels"])}
        for lv in lspec["levels"]:
            k = position[lv]
            if k > 0:
                A[g + k - 1, loc] = 1.0
            loc += 1
        g += len(gspec["levels"]) - 1
    return A


def _check_gram_rank(dtd: np.ndarray, names: list[str], n_sites: int) -> None:
    """Full-rank check of the pooled design from its Gram matrix ``D'D`` alone."""
    p = dtd.shape[0]
    if np.linalg.matrix_rank(dtd, hermitian=True) == p:
        return
    cov_names = names[n_sites:]
    counts = np.diag(dtd)[:n_sites]
    with_site = []
    for k, name in enumerate(cov_names):
        c = n_sites + k
        within = dtd[c, c] - np.sum(dtd[:n_sites, c] ** 2 / np.where(counts > 0, counts, 1))
        if within <= 1e-10 * max(dtd[c, c], 1e-300):
            with_site.append(name)
    if with_site:
        raise ConfoundingError(
            f"Federated ComBat: covariate column(s) {with_site} are confounded with site (constant "
            "within every site), so their effect cannot be told apart from the site effect. "
            "Remove them from --covariates at every site."
        )
    full = np.linalg.matrix_rank(dtd, hermitian=True)
    culprits = [
        name
        for k, name in enumerate(cov_names)
        if np.linalg.matrix_rank(np.delete(np.delete(dtd, n_sites + k, 0), n_sites + k, 1), hermitian=True) == full
    ]
    raise ConfoundingError(
        f"Federated ComBat: the pooled design is not of full rank; covariate column(s) {culprits} "
        "are collinear with site and/or each other. Remove one of them from --covariates."
    )


def _validate_round(summaries: Sequence[SiteSummary], rnd: int) -> None:
    if not summaries:
        raise ValidationError("combine needs at least one site summary.")
    for s in summaries:
        if not isinstance(s, SiteSummary):
            raise ProtocolError(
                "combine takes site summaries; a round message goes to --round-message."
            )
    for s in summaries:
        _check_summary_arrays(s, s.source or "as given to combine")
    rounds = sorted({s.round for s in summaries})
    if rounds != [rnd]:
        raise ProtocolError(
            f"All summaries must come from the same round; got rounds {rounds}. Round-2 "
            "summaries are combined with the round-1 message (--round-message)."
        )
    names = [str(s.site) for s in summaries]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ProtocolError(f"Site(s) {dup} sent more than one summary; give each site once.")
    _check_same(
        summaries,
        "features",
        "features",
        "every site must summarise the same feature columns in the same order.",
    )


def _options(message_options: dict | None, **given) -> dict:
    """Model options: given now, else recorded in the round-1 message, else defaults."""
    defaults = {"parametric": True, "mean_only": False, "eb": True, "ref_site": None}
    out = dict(defaults)
    if message_options:
        out.update(message_options)
    for k, v in given.items():
        if v is not None:
            out[k] = v
    check_bool(out["parametric"], name="parametric", owner="combine")
    check_bool(out["mean_only"], name="mean_only", owner="combine")
    check_bool(out["eb"], name="eb", owner="combine")
    return out


def combine(
    summaries: Sequence[SiteSummary],
    *,
    message: RoundMessage | None = None,
    parametric: bool | None = None,
    mean_only: bool | None = None,
    eb: bool | None = None,
    ref_site=None,
    tol: float = 1e-4,
    max_iter: int = 1000,
):
    """Combine the site summaries of one round.

    Parameters
    ----------
    summaries : sequence of SiteSummary
        One per site, all of the same round.
    message : RoundMessage, optional
        Required with round-2 summaries: the round-1 message the sites answered (its
        digest must match the one each summary records).
    parametric, mean_only, eb : bool, optional
        ComBat options (default: as recorded in the round-1 message, else ComBat's
        defaults ``True, False, True``).
    ref_site : optional
        Reference site (its rows come back unchanged).
    tol, max_iter : float, int
        Convergence of the parametric EB iteration.

    Returns
    -------
    RoundMessage or ComBat
        After round 1 the message every site needs for round 2; after round 2 a fitted
        :class:`~sitekit.harmonize.ComBat` equal to one fitted on the pooled table.

    Raises
    ------
    ProtocolError
        Mixed rounds, duplicate sites, different features or covariate encodings, a
        message that does not match, a site missing from round 2.
    ConfoundingError
        Covariates confounded with site in the pooled design.
    """
    summaries = list(summaries)
    first_round = summaries[0].round if summaries and isinstance(summaries[0], SiteSummary) else 1
    _validate_round(summaries, first_round)
    if first_round == 1:
        if message is not None:
            raise ProtocolError(
                "Round-1 summaries are combined without a message; --round-message belongs to "
                "the round-2 combine."
            )
        return _combine_round1(summaries, parametric, mean_only, eb, ref_site)
    if message is None:
        raise ProtocolError(
            "Round-2 summaries need the round-1 message they answered: pass it as message= "
            "(--round-message MSG.npz)."
        )
    return _combine_round2(summaries, message, parametric, mean_only, eb, ref_site, tol, max_iter)


def _combine_round1(summaries, parametric, mean_only, eb, ref_site) -> RoundMessage:
    site_levels = encode_sites([s.site for s in summaries], owner="combine").levels
    order = {str(lv): i for i, lv in enumerate(site_levels)}
    n_sites = len(site_levels)
    glob = _global_encoding(summaries)
    names = [f"site[{s}]" for s in site_levels] + covariate_column_names(glob)
    features = summaries[0].meta["features"]
    total = None
    for s in summaries:
        A = _embedding(s.meta["covariates"], glob, order[str(s.site)], n_sites)
        miss = s.arrays.get("missing", np.zeros(0, dtype=np.intp)).astype(np.intp)
        dm = s.arrays.get("dtd_missing")
        cp = CrossProducts(
            dtd=A @ s.arrays["dtd"] @ A.T,
            dty=A @ s.arrays["dty"],
            missing=miss,
            dtd_missing=None if dm is None else np.einsum("pa,kab,qb->kpq", A, dm, A),
        )
        total = cp if total is None else total + cp
    _check_gram_rank(total.dtd, names, n_sites)
    beta = solve_ols(total)
    counts = {str(s.site): int(s.meta["n_samples"]) for s in summaries}
    opts = _options(None, parametric=parametric, mean_only=mean_only, eb=eb, ref_site=ref_site)
    if opts["ref_site"] is not None:
        opts["ref_site"] = _match_site(opts["ref_site"], site_levels)
    meta = {
        "format": _MESSAGE_FORMAT,
        "protocol_version": PROTOCOL_VERSION,
        "sitekit_version": __version__,
        "round": 1,
        "sites": site_levels,
        "n_samples": [counts[str(lv)] for lv in site_levels],
        "features": features,
        "encoding": glob,
        "design_columns": names,
        "options": opts,
    }
    return RoundMessage(meta=meta, arrays={"beta": beta})


def _match_site(site, levels: list):
    for lv in levels:
        if lv == site or str(lv) == str(site):
            return lv
    raise UnknownSiteError(f"Reference site {site!r} is not one of the sites {levels}.")


def _combine_round2(summaries, message, parametric, mean_only, eb, ref_site, tol, max_iter):
    if not isinstance(message, RoundMessage) or message.round != 1:
        raise ProtocolError("The round message must be the coordinator's round-1 message.")
    _check_message(message, "the round message")
    digest = message.digest()
    stale = [s.site for s in summaries if s.meta.get("message_sha256") != digest]
    if stale:
        raise ProtocolError(
            f"Summaries of site(s) {stale} answer a different round-1 message than the one given; "
            "every site must summarise with the same --round-message."
        )
    mmeta = message.meta
    if summaries[0].meta["features"] != mmeta["features"]:
        raise ProtocolError("The round-2 summaries' features differ from the round message's.")
    levels = mmeta["sites"]
    got = {str(s.site): s for s in summaries}
    absent = [lv for lv in levels if str(lv) not in got]
    extra = [s.site for s in summaries if str(s.site) not in {str(lv) for lv in levels}]
    if absent or extra:
        raise ProtocolError(
            f"Round 2 must have one summary from each site of round 1 {levels}; missing "
            f"{absent}, unexpected {extra}."
        )
    ordered = [got[str(lv)] for lv in levels]
    n = np.vstack([s.arrays["count"] for s in ordered])
    const = np.vstack([s.arrays["constant_value"] for s in ordered])
    # sites share no minimum/maximum (single values); a constant feature is flagged by its
    # value, every other cell gets an interval that can never look constant
    moments = SiteMoments(
        n=n,
        r1=np.vstack([s.arrays["resid_sum"] for s in ordered]),
        r2=np.vstack([s.arrays["resid_sumsq"] for s in ordered]),
        ymin=np.where(np.isnan(const), np.where(n > 0, -np.inf, np.nan), const),
        ymax=np.where(np.isnan(const), np.where(n > 0, np.inf, np.nan), const),
    )
    opts = _options(mmeta.get("options"), parametric=parametric, mean_only=mean_only, eb=eb, ref_site=ref_site)
    if opts["ref_site"] is not None:
        opts["ref_site"] = _match_site(opts["ref_site"], levels)

    model = ComBat(
        parametric=opts["parametric"],
        mean_only=opts["mean_only"],
        eb=opts["eb"],
        ref_site=opts["ref_site"],
        tol=tol,
        max_iter=max_iter,
    )
    return fit_from_moments(
        model,
        sites=levels,
        site_counts=np.asarray(mmeta["n_samples"]),
        encoding=mmeta["encoding"],
        features=mmeta["features"],
        n_features=len(mmeta["features"]),
        beta=message.arrays["beta"],
        moments=moments,
    )


# --------------------------------------------------------------------------- shared finish
def fit_from_moments(
    estimator,
    *,
    sites: list,
    site_counts: np.ndarray,
    encoding: dict,
    features: list | None,
    n_features: int,
    beta: np.ndarray,
    moments,
    extra_names: Sequence[str] = (),
):
    """Finish a ComBat fit from pooled sufficient statistics and set the fitted state.

    This is the part of :meth:`ComBat.fit` after the data pass: grand mean, pooled variance,
    features left unchanged (with the same warnings), standardised per-site sums and the
    empirical-Bayes step (:func:`sitekit.harmonize._eb.fit_eb`).

    Parameters
    ----------
    estimator : ComBat
        Receives the fitted state.
    sites : list
        Site names in the model's (sorted) order.
    site_counts : ndarray of shape (n_sites,)
        Samples per site.
    encoding : dict
        Covariate encoding (:func:`sitekit.harmonize._design.fit_covariate_encoding`).
    features : list or None
        Feature names (set as ``feature_names_in_`` when all are strings).
    n_features : int
    beta : ndarray of shape (n_sites + n_covariate_columns, n_features)
        OLS coefficients of the pooled design.
    moments : SiteMoments-like
        ``n, r1, r2, ymin, ymax`` of shape (n_sites, n_features).
    extra_names : sequence of str
        Names of extra design columns (after the covariate columns).

    Returns
    -------
    ComBat
        ``estimator``, fitted.
    """
    estimator._check_params()
    counts = np.asarray(site_counts, dtype=np.int64)
    ref = estimator._reference_index(list(sites), counts)
    if features is not None and all(isinstance(f, str) for f in features):
        estimator.feature_names_in_ = np.asarray(features, dtype=object)
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
    estimator.n_features_in_ = int(n_features)
    columns = covariate_column_names(encoding) + list(extra_names)
    estimator._set_state(
        estimator._finish_fit(list(sites), counts, ref, beta, moments, encoding, columns)
    )
    return estimator


# --------------------------------------------------------------------------- file workflows
def summarize_table(
    table: PathLike,
    *,
    site_col: str,
    out: PathLike,
    covariates: Sequence[str] = (),
    categorical: Sequence[str] = (),
    continuous: Sequence[str] = (),
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    message: PathLike | None = None,
    min_site_size: int = 10,
    min_cell_size: int = 5,
    force: bool = False,
    key: bytes | str | None = None,
):
    """One site's round of federated ComBat on a table file: summarise and write the summary.

    Parameters
    ----------
    table : str or path-like
        The site's table (one site).
    site_col : str
        Its site column.
    out : str or path-like
        The summary file to send to the coordinator (``.npz``).
    covariates, categorical, continuous : sequence of str, default=()
        Covariate columns (the same at every site).
    features : sequence of str, optional
        Feature columns or glob patterns (round 1; round 2 uses the message's features).
    exclude : sequence of str, default=()
        Columns that are not features.
    message : str or path-like, optional
        The coordinator's round-1 message (makes the round-2 summary).
    min_site_size, min_cell_size : int
        The privacy rule (see :func:`summarize_site`); checked before anything is written.
    force : bool, default=False
        Replace an existing ``out``.
    key : bytes or str, optional
        The consortium's shared secret: signs ``out`` and checks ``message``.

    Returns
    -------
    tuple of (SiteSummary, FeatureSelection or None)
    """
    out = check_output_path(out, kind="model", option="--out", force=force,
                            inputs=(table,) + ((message,) if message else ()))
    df = read_table(table)
    covs = list(covariates)
    msg = None
    selection = None
    if site_col not in df.columns:
        raise ValidationError(f"Site column '{site_col}' is not in '{table}'; its columns are "
                              f"{list(df.columns)[:20]}.")
    if message is not None:
        msg = load_federated(message, key=key)
        if not isinstance(msg, RoundMessage):
            raise ProtocolError(f"'{message}' is a site summary, not the coordinator's round message.")
        X = df
    else:
        selection = select_features(df, reserved=[site_col, *covs], features=features, exclude=exclude)
        X = df[selection.features]
    summary = summarize_site(
        X, sites=df[site_col].to_numpy(), covariates=df[covs] if covs else None,
        categorical=list(categorical) or None, continuous=list(continuous) or None, message=msg,
        min_site_size=min_site_size, min_cell_size=min_cell_size,
    )
    # column names (not data), so that the final model can be applied without options
    summary.meta["columns"] = {"site_col": site_col, "covariates": covs}
    summary.save(out, force=force, key=key)
    return summary, selection


def combine_files(
    summaries: Sequence[PathLike],
    *,
    out: PathLike,
    message: PathLike | None = None,
    parametric: bool | None = None,
    mean_only: bool | None = None,
    eb: bool | None = None,
    ref_site=None,
    force: bool = False,
    key: bytes | str | None = None,
):
    """The coordinator's step on files: read and check the summaries, combine, write.

    Parameters
    ----------
    summaries : sequence of str or path-like
        The site summary files of one round.
    out : str or path-like
        The round-1 message (after round 1) or the ComBat model (after round 2), ``.npz``.
    message : str or path-like, optional
        The round-1 message, for round-2 summaries.
    parametric, mean_only, eb, ref_site
        As in :func:`combine`.
    force : bool, default=False
        Replace an existing ``out``.
    key : bytes or str, optional
        The consortium's shared secret: checks the inputs and signs ``out``.

    Returns
    -------
    RoundMessage or ComBat
    """
    out = check_output_path(out, kind="model", option="--out", force=force,
                            inputs=tuple(summaries) + ((message,) if message else ()))
    loaded = [load_federated(p, key=key) for p in summaries]
    msg = load_federated(message, key=key) if message else None
    result = combine(loaded, message=msg, parametric=parametric, mean_only=mean_only, eb=eb,
                     ref_site=ref_site)
    if isinstance(result, RoundMessage):
        result.save(out, force=force, key=key)
        return result
    columns = [s.meta.get("columns") for s in loaded]
    same = columns[0] is not None and all(c == columns[0] for c in columns)
    result.save(out, force=force, metadata={COLUMNS_KEY: columns[0]} if same else None, key=key)
    return result
