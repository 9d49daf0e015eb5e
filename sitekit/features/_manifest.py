"""Extraction manifests: one row per case, paths relative to the manifest."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from sitekit._typing import PathLike
from sitekit.exceptions import ValidationError
from sitekit.io import read_table

__all__ = ["REQUIRED_COLUMNS", "PROVENANCE_COLUMNS", "read_manifest"]

REQUIRED_COLUMNS = ("subject_id", "site", "image", "mask")

#: Columns :func:`extract` adds after the manifest's columns, before the features.
PROVENANCE_COLUMNS = (
    "sitekit_version",
    "pyradiomics_version",
    "params_hash",
    "image_hash",
    "mask_hash",
    "label",
    "suv_conversion",
    "earl_fwhm_mm",
)

_FEATURE_PREFIXES = ("original_", "wavelet", "log-sigma", "square", "squareroot",
                     "logarithm", "exponential", "gradient", "lbp-", "diagnostics_")


def _shown(values) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:5]) + (f" and {len(values) - 5} more" if len(values) > 5 else "")


_CODE = re.compile(r"^[-+]?0\d")


def _restore_numbers(col: pd.Series) -> pd.Series:
    """A column read as text back to numbers when every cell is a plain number.

    Columns with a code-like value (a leading zero such as ``007`` or ``0000``) stay text,
    as do the required columns (ids, sites and paths are text).
    """
    if col.name in REQUIRED_COLUMNS:
        return col
    text = col.dropna().astype(str).str.strip()
    text = text[text != ""]
    if text.empty or text.str.match(_CODE).any():
        return col
    num = pd.to_numeric(text, errors="coerce")
    if num.isna().any():
        return col
    return pd.to_numeric(col.where(col.astype(str).str.strip() != ""), errors="coerce")


def read_manifest(
    manifest: PathLike | pd.DataFrame, *, base_dir: PathLike | None = None
) -> tuple[pd.DataFrame, Path]:
    """Read and check an extraction manifest.

    Parameters
    ----------
    manifest : str, path-like or pandas.DataFrame
        A CSV/TSV (or Parquet) table, or a DataFrame, with one row per case and the columns
        ``subject_id``, ``site``, ``image``, ``mask`` (paths relative to the manifest's
        directory, or absolute), optionally ``label_value`` (the mask value of the region) and
        ``suv`` (``"bw"`` to convert that row's image to body-weight SUV). Other columns are
        passed through to the features table.
    base_dir : str or path-like, optional
        Directory the relative paths start from; default: the manifest's directory (the
        current directory for a DataFrame).

    Returns
    -------
    manifest : pandas.DataFrame
        A checked copy: ``subject_id`` and ``site`` as strings, ``label_value`` as nullable
        integers, the index reset.  A manifest file is read as text, so identifiers and
        codes keep their leading zeros (``"007"`` stays ``"007"``); other columns whose every
        cell is a plain number (no leading zero) become numbers.
    base_dir : pathlib.Path

    Raises
    ------
    ValidationError
        A missing column, duplicate or empty ``subject_id``, empty ``site``/``image``/``mask``,
        an invalid ``label_value`` or ``suv``, or a column whose name collides with the
        provenance or feature columns.
    """
    if isinstance(manifest, pd.DataFrame):
        df = manifest.copy()
        where = "The manifest"
        root = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(manifest)
        # every cell as written: ids, sites and codes such as '007' keep their zeros
        df = read_table(path, text_columns="all")
        df = df.apply(_restore_numbers)
        where = f"Manifest '{path}'"
        root = Path(base_dir) if base_dir is not None else path.resolve().parent
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValidationError(
            f"{where} lacks the column(s) {', '.join(repr(c) for c in missing)}; it needs "
            f"{', '.join(REQUIRED_COLUMNS)} (paths relative to the manifest). "
            f"Found: {', '.join(map(str, df.columns))}."
        )
    clash = [c for c in df.columns if c in PROVENANCE_COLUMNS or str(c).startswith(_FEATURE_PREFIXES)]
    if clash:
        raise ValidationError(
            f"{where} has column(s) {_shown(clash)} whose names sitekit uses for provenance or "
            "features; rename them."
        )
    df = df.reset_index(drop=True)
    for col in REQUIRED_COLUMNS:
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            rows = (df.index[empty] + 2).tolist()  # +2: header line and 1-based lines
            raise ValidationError(f"{where} has empty '{col}' values (line(s) {_shown(rows)}); fill them in.")
        df[col] = df[col].astype(str).str.strip()
    dup = df["subject_id"][df["subject_id"].duplicated()].unique()
    if len(dup):
        raise ValidationError(
            f"{where} has duplicate subject_id values: {_shown(dup)}; each case needs its own id "
            "(use e.g. subject_lesion for several lesions of one subject)."
        )
    if "label_value" in df.columns:
        lab = pd.to_numeric(df["label_value"], errors="coerce")
        bad = (df["label_value"].notna() & (lab.isna() | (lab <= 0) | (lab % 1 != 0)))
        if bad.any():
            raise ValidationError(
                f"The 'label_value' column of {where[0].lower() + where[1:]} must hold positive integers; "
                f"got {_shown(df.loc[bad, 'label_value'].tolist())}."
            )
        df["label_value"] = lab.astype("Int64")
    if "suv" in df.columns:
        val = df["suv"].fillna("").astype(str).str.strip().str.lower()
        bad = ~val.isin(["", "none", "bw"])
        if bad.any():
            raise ValidationError(
                f"The 'suv' column of {where[0].lower() + where[1:]} must be 'bw', 'none' or empty; "
                f"got {_shown(df.loc[bad, 'suv'].tolist())}."
            )
    return df, root
