"""Reading and writing tables and images, with named errors and atomic writes.

Tables: CSV (``.csv``), TSV (``.tsv``, ``.tab``) and Parquet (``.parquet`` or a directory of
Parquet files), chosen by suffix.  Images: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``,
``.nhdr``), MetaImage (``.mha``, ``.mhd``) and DICOM series (a directory) through SimpleITK.

Every failure to read raises a :class:`~sitekit.exceptions.SitekitError` subclass that names
the file and the problem.  Writers go through :func:`atomic_output`: the data are written to a
temporary file in the target directory and renamed into place, so an interrupted run never
leaves a half-written output, and an existing output is only replaced with ``force=True``.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import errno
import gzip
import hashlib
import locale
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from sitekit._typing import PathLike
from sitekit.exceptions import (
    CorruptFileError,
    FileError,
    MissingFileError,
    OutputExistsError,
    ValidationError,
)

__all__ = [
    "TABLE_SUFFIXES",
    "IMAGE_SUFFIXES",
    "atomic_output",
    "atomic_directory",
    "check_writable",
    "stale_temporaries",
    "remove_stale_temporaries",
    "file_hash",
    "read_table",
    "check_columns",
    "numeric_columns",
    "short_list",
    "write_table",
    "write_tables",
    "read_image",
    "write_image",
    "read_dicom_series",
    "image_suffix",
    "check_nifti_complete",
    "preserve_locale",
    "safe_filename",
    "remove_stale_temporaries",
]

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: DICOM tags copied from the first slice of a series onto the image's metadata.
_DICOM_KEYS = {
    "0008|0060": "Modality",
    "0054|1001": "Units",
    "0054|1102": "DecayCorrection",
    "0010|1030": "PatientWeight",
    "0008|0021": "SeriesDate",
    "0008|0031": "SeriesTime",
    "0008|0022": "AcquisitionDate",
    "0008|0032": "AcquisitionTime",
    "0018|1072": "RadiopharmaceuticalStartTime",
    "0018|1078": "RadiopharmaceuticalStartDateTime",
    "0018|1074": "RadionuclideTotalDose",
    "0018|1075": "RadionuclideHalfLife",
    "0020|000e": "SeriesInstanceUID",
}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def image_suffix(path: PathLike) -> str:
    """Return the image suffix of ``path`` (``".nii.gz"`` counts as one suffix)."""
    return _suffix(Path(path))


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def safe_filename(name, *, what: str = "name", option: str | None = None) -> str:
    """Return ``name`` if it can become part of a file name, else raise a named error.

    A name that becomes a file name (a site, a case id) must stay inside the output
    directory on every platform: 1-100 characters of letters, digits, ``.``, ``_``, ``+`` and
    ``-``, starting with a letter or digit, no ``..`` and no reserved device name.  Names
    are refused rather than rewritten, so two sites never collide on one file.

    Parameters
    ----------
    name : str
        The candidate name.
    what : str, default="name"
        What the name is, for the message ("site name").
    option : str, optional
        The option or column it came from, for the message (``"--site"``).

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    ValidationError
        The name holds a path separator, ``..``, a character outside the set above, or is
        empty or too long.

    Examples
    --------
    >>> from sitekit.io import safe_filename
    >>> safe_filename("site_A-2")
    'site_A-2'
    """
    text = str(name)
    where = f" (from {option})" if option else ""
    if not _SAFE_NAME.fullmatch(text) or ".." in text or text.split(".")[0].upper() in _RESERVED:
        bad = sorted({c for c in text if not (c.isascii() and (c.isalnum() or c in "._+-"))})
        why = (f"it holds {', '.join(repr(c) for c in bad)}" if bad else "it contains '..'" if ".." in text
               else "it is empty, too long, a reserved name or does not start with a letter or digit")
        raise ValidationError(
            f"The {what} {text!r}{where} cannot become a file name: {why}. Use 1-100 letters, digits, "
            "'.', '_', '+' or '-', starting with a letter or digit.")
    return text


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise MissingFileError(f"{what} '{path}' does not exist; check the path.")


@contextlib.contextmanager
def atomic_output(path: PathLike, *, force: bool = False, inputs: tuple = ()) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Parameters
    ----------
    path : str or path-like
        The final output file.
    force : bool, default=False
        Replace an existing ``path``.  Without it an existing output raises
        :class:`~sitekit.exceptions.OutputExistsError`.
    inputs : tuple of path-like, default=()
        Input files of the same run: writing over one of them is refused even with ``force``.

    Yields
    ------
    pathlib.Path
        A temporary file name in the same directory, with the same suffix as ``path``
        (writers such as SimpleITK choose the format from it).  On an exception the
        temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    _check_replaceable(target, force=force, inputs=inputs)
    if target.is_dir():
        raise OutputExistsError(f"Output '{target}' is a directory; give a file name.")
    suffix = _suffix(target)
    _check_parent(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=f".tmp{suffix}",
                                        dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            if tmp.is_file():  # mkstemp makes 0600 files; give the output the usual umask mode
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, target)
        except OSError as exc:
            if isinstance(exc, FileError) or not _is_write_error(exc, tmp):
                raise
            raise _write_error(target, exc) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


#: errno values that mean "this output cannot be written here".
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                 errno.EFBIG, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def _is_write_error(exc: OSError, tmp: Path) -> bool:
    names = {str(getattr(exc, "filename", "") or ""), str(getattr(exc, "filename2", "") or "")}
    return exc.errno in _WRITE_ERRNOS or str(tmp) in names or tmp.name in str(exc)


def _check_parent(target: Path) -> None:
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileError(
                    f"Cannot write output '{target}': '{parent}' is a file, not a folder; "
                    "choose another output path."
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise FileError(
                    f"Cannot write output '{target}': the folder '{parent}' is not writable; "
                    "choose another output path."
                )
            return


def check_writable(path: PathLike) -> Path:
    """Raise now, before any work, when ``path`` could not be written later.

    Parameters
    ----------
    path : str or path-like
        An output file or folder (it need not exist; missing folders would be created).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileError
        A parent is a file, or the nearest existing folder is not writable; the message
        names ``path``.
    """
    target = Path(path)
    _check_parent(target)
    return target


def _write_error(target: Path, exc: OSError) -> FileError:
    """A one-line error naming the user's output (never the hidden temporary file)."""
    reason = exc.strerror or type(exc).__name__
    fix = {errno.ENOSPC: "free some space or write elsewhere",
           errno.EDQUOT: "free some space or write elsewhere",
           errno.EROFS: "the file system is read-only; write elsewhere"}.get(
        exc.errno, "check that the folder exists, is writable and the name is valid")
    return FileError(f"Cannot write output '{target}': {reason}; {fix}.")


def _check_replaceable(target: Path, *, force: bool, inputs) -> None:
    """Refuse an output that is one of the run's inputs, or that exists without ``force``."""
    for inp in inputs:
        if Path(inp).exists() and target.exists() and os.path.samefile(inp, target):
            raise OutputExistsError(
                f"Output '{target}' is also an input of this run; choose another output path."
            )
    if target.exists() and not force:
        raise OutputExistsError(
            f"Output '{target}' already exists; pass --force (force=True) to replace it."
        )


@contextlib.contextmanager
def atomic_directory(path: PathLike, *, force: bool = False, inputs: tuple = ()) -> Iterator[Path]:
    """Like :func:`atomic_output`, for an output that is a directory (DICOM series, Parquet).

    Yields a fresh temporary directory next to ``path``; on success it replaces ``path``
    (an existing one only with ``force``), on an exception it is removed.
    """
    target = Path(path)
    _check_replaceable(target, force=force, inputs=inputs)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"Output '{target}' exists and is not a directory.")
    _check_parent(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise _write_error(target, exc) from exc
    try:
        try:
            yield tmp
            umask = os.umask(0)  # mkdtemp makes 0700 directories
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".old",
                                            dir=target.parent))
                os.replace(target, old / "x")
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            if isinstance(exc, FileError) or not (exc.errno in _WRITE_ERRNOS or str(tmp) in str(exc)):
                raise
            raise _write_error(target, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _temp_prefix(target: Path) -> str:
    """Prefix of the temporaries of an atomic write of ``target``: ``.<name>.<pid>.``."""
    return f".{target.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def stale_temporaries(path: PathLike) -> list[Path]:
    """Temporary files and folders that an interrupted atomic write of ``path`` left behind.

    :func:`atomic_output` and :func:`atomic_directory` write to
    ``.<name>.<pid>.<random>.tmp*`` next to ``path`` (a replaced result set goes to
    ``.<name>.<pid>.<random>.old`` for an instant) and rename on success; a run killed with
    SIGKILL cannot remove its temporary.  Temporaries of a process that still runs are not
    stale and are not listed.

    Parameters
    ----------
    path : str or path-like
        The final output (file or folder).

    Returns
    -------
    list of pathlib.Path
    """
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{target.name}.") + r"(?:(\d+)\.)?[A-Za-z0-9_]+\.(tmp|old)")
    found = []
    for q in parent.iterdir():
        m = pattern.match(q.name)
        if not m:
            continue
        pid = int(m.group(1)) if m.group(1) else None
        if pid is not None and (pid == os.getpid() or _pid_alive(pid)):
            continue
        found.append(q)
    return sorted(found)


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove what :func:`stale_temporaries` finds; returns what was removed.

    A run killed in the instant between moving an old result set aside and moving the new
    one in has its old set put back.
    """
    target = Path(path)
    found = stale_temporaries(target)
    for q in found:
        if q.name.endswith(".old") and (q / "x").exists() and not target.exists():
            os.replace(q / "x", target)  # killed between moving the old set out and the new one in
        if q.is_dir() and not q.is_symlink():
            shutil.rmtree(q, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                q.unlink()
    return found


def file_hash(path: PathLike, *, algorithm: str = "sha256") -> str:
    """Hex digest of a file, or of all files of a directory (sorted by name).

    Parameters
    ----------
    path : str or path-like
        A file or a directory (e.g. a DICOM series).
    algorithm : str, default="sha256"
        Any algorithm of :mod:`hashlib`.
    """
    p = Path(path)
    _check_exists(p, "File")
    h = hashlib.new(algorithm)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def preserve_locale() -> Iterator[None]:
    """Restore the process locale after a block that calls into GDCM.

    SimpleITK's DICOM writer (GDCM) switches the C locale to ``"C"`` to format decimal
    strings and does not restore ``LC_CTYPE``; afterwards Python's default text encoding is
    ASCII, so any later ``open()``/``read_text()`` of non-ASCII text fails.  Wrap every
    DICOM write in this.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        try:
            locale.setlocale(locale.LC_ALL, saved)
        except locale.Error:  # a composite string glibc will not take back: restore by category
            for part in saved.split(";"):
                name, _, value = part.partition("=")
                cat = getattr(locale, name, None)
                if cat is not None and value:
                    with contextlib.suppress(locale.Error):
                        locale.setlocale(cat, value)


# --------------------------------------------------------------------------- tables
def short_list(values, *, n: int = 5) -> str:
    """``"a, b, c, d, e and 195 more"``: a few values of a long list, for messages.

    Parameters
    ----------
    values : iterable
        The values (shown with ``str``).
    n : int, default=5
        How many to show.

    Returns
    -------
    str

    Examples
    --------
    >>> short_list(range(8), n=3)
    '0, 1, 2 and 5 more (8 in all)'
    """
    shown = [str(v) for v in values]
    if len(shown) <= n:
        return ", ".join(shown)
    return ", ".join(shown[:n]) + f" and {len(shown) - n} more ({len(shown)} in all)"


def _header_fields(p: Path, sep: str, encoding: str | None) -> list[str]:
    """The header row of a CSV/TSV, parsed with ``sep`` (quotes respected)."""
    with open(p, newline="", encoding=encoding or "utf-8-sig") as fh:
        first = next(csv.reader(fh, delimiter=sep), [])
    return [f.strip() for f in first]


def _check_header(p: Path, sep: str, encoding: str | None) -> None:
    """Refuse duplicated headers and a CSV that is separated by another character."""
    try:
        fields = _header_fields(p, sep, encoding)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CorruptFileError(f"Table '{p}' could not be read: {exc}") from exc
    if len(fields) == 1:
        line = fields[0]
        for other, name in ((";", "semicolon"), ("\t", "tab"), (",", "comma"), ("|", "pipe")):
            if other != sep and line.count(other) >= 1:
                shown = line if len(line) <= 60 else line[:57] + "..."
                hint = (" (a semicolon-separated export often uses decimal commas too: "
                        "read it with sep=';', decimal=','; CLI: --sep ';' --decimal ,)") \
                    if other == ";" else ""
                raise CorruptFileError(
                    f"Table '{p}' looks {name}-separated (header '{shown}'), but "
                    f"{_suffix(p)} files are read with {_SEP_NAMES[sep]}s; save it with "
                    f"{_SEP_NAMES[sep]}s or pass sep={other!r} (CLI: --sep {other!r}){hint}."
                )
    seen: dict[str, int] = {}
    for f in fields:
        seen[f] = seen.get(f, 0) + 1
    dup = [f"'{f}' ({k}x)" for f, k in seen.items() if k > 1]
    if dup:
        raise CorruptFileError(
            f"Table '{p}' has duplicated column name(s) {short_list(dup)}; every column needs "
            "its own name (rename or remove the copies)."
        )


def _raise_long_row(p: Path, sep: str, encoding: str | None) -> None:
    with open(p, newline="", encoding=encoding or "utf-8-sig") as fh:
        rows = csv.reader(fh, delimiter=sep)
        n = len(next(rows, []))
        for line, row in enumerate(rows, start=2):
            if len(row) > n:
                raise CorruptFileError(
                    f"Table '{p}' has {len(row)} fields on line {line} but {n} column names in "
                    "its header; fix the row (a stray separator, or a missing column name)."
                )
    raise CorruptFileError(f"Table '{p}' has rows with more fields than its header has names.")


_SEP_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def read_table(
    path: PathLike,
    *,
    text_columns: Iterable[str] | None = None,
    sep: str | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table chosen by suffix.

    Parameters
    ----------
    path : str or path-like
        ``.csv``, ``.tsv``/``.tab`` or ``.parquet`` file, or a directory of Parquet files.
    text_columns : iterable of str, optional
        Columns read as text, exactly as written: site labels and identifiers such as
        ``01`` or ``007`` keep their leading zeros (read as numbers, ``"01"`` would become
        ``1``).  Names absent from the table are ignored (the caller checks presence).
        Pass ``text_columns="all"`` to read every column as text.
    sep : str, optional
        Field separator of a CSV/TSV; default ``","`` for ``.csv``, a tab for ``.tsv``.
    **kwargs
        Passed to :func:`pandas.read_csv` (e.g. ``decimal=","``) or
        :func:`pandas.read_parquet`.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    CorruptFileError
        The file is empty, cannot be parsed, has an unknown suffix, repeats a column name
        (pandas would silently rename the copy ``name.1``), or is separated by another
        character than expected (a semicolon-separated ``.csv``: the message says so).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("site,id,x\\n01,007,1.5\\n")
    >>> df = read_table(p, text_columns=["site", "id"])
    >>> df["site"].tolist(), df["id"].tolist(), df["x"].tolist()
    (['01'], ['007'], [1.5])
    """
    p = Path(path)
    _check_exists(p, "Table")
    suffix = _suffix(p)
    if p.is_dir():
        suffix = ".parquet"
    if suffix not in TABLE_SUFFIXES:
        raise CorruptFileError(
            f"Table '{p}' has an unknown suffix '{suffix}'; use one of {', '.join(TABLE_SUFFIXES)}."
        )
    if p.is_file() and p.stat().st_size == 0:
        raise CorruptFileError(f"Table '{p}' is empty (0 bytes).")
    all_text = isinstance(text_columns, str) and text_columns == "all"
    text = [] if text_columns is None or all_text else list(text_columns)
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(p, **kwargs)
            for col in (list(df.columns) if all_text else text):
                if col in df.columns:
                    df[col] = df[col].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
        else:
            sep = sep if sep is not None else ("," if suffix == ".csv" else "\t")
            _check_header(p, sep, kwargs.get("encoding"))
            if all_text:
                kwargs["dtype"] = str
            elif text:
                dtype = kwargs.get("dtype")
                dtype = dict(dtype) if isinstance(dtype, Mapping) else {}
                kwargs["dtype"] = {**{c: str for c in text}, **dtype}
            df = pd.read_csv(p, sep=sep, **kwargs)
            if "index_col" not in kwargs and not isinstance(df.index, pd.RangeIndex):
                # pandas silently turns surplus leading fields into an index
                _raise_long_row(p, sep, kwargs.get("encoding"))
    except FileError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise CorruptFileError(f"Table '{p}' could not be read as {suffix[1:].upper()}: {reason}") from exc
    if df.shape[1] == 0:
        raise CorruptFileError(f"Table '{p}' has no columns.")
    return df


def check_columns(df: pd.DataFrame, columns: Iterable[str], *, source: str, what: str = "column") -> None:
    """Raise when a named column is not in ``df``, with a "did you mean" hint.

    Parameters
    ----------
    df : pandas.DataFrame
    columns : iterable of str
        The names that must be present.
    source : str
        How to name the table in the message, e.g. ``"Table 'x.csv'"``.
    what : str, default="column"
        How to name the columns (``"--site-col"``, ``"[data] site"``).

    Raises
    ------
    ValidationError
        Lists the missing names, the closest existing ones and a few of the table's
        columns (never all of a wide table).
    """
    have = [str(c) for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if not missing:
        return
    hints = []
    for m in missing:
        close = difflib.get_close_matches(str(m), have, n=1)
        if close:
            hints.append(f"'{m}' -> did you mean '{close[0]}'?")
    hint = (" " + " ".join(hints)) if hints else ""
    raise ValidationError(
        f"{source} has no {what} {short_list(repr(m) for m in missing)}.{hint} Its "
        f"{len(have)} columns: {short_list(have, n=8)}."
    )


_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+(\.\d{3})*,\d+\s*$")


def numeric_columns(
    df: pd.DataFrame,
    columns: Iterable[str],
    *,
    source: str,
    first_line: int = 2,
    decimal_fix: str = "read the file with decimal=',' (CLI: --decimal ,)",
) -> pd.DataFrame:
    """Return ``df[columns]`` as float64, refusing any cell that is not a number.

    Empty cells stay missing (NaN); a cell such as ``"n/a"``, ``"<0.1"`` or ``"2,5"`` raises
    instead of silently turning the column into text (which would then be skipped or passed
    through unharmonised).

    Parameters
    ----------
    df : pandas.DataFrame
    columns : iterable of str
        The columns that must be numeric (features).
    source : str
        How to name the table in the message, e.g. ``"Table 'x.csv'"``.
    first_line : int, default=2
        File line of the first data row (2: a CSV with one header line), used to name the
        line of a bad value.
    decimal_fix : str, optional
        How the caller's user reads a file with decimal commas (named in the message).

    Returns
    -------
    pandas.DataFrame
        The columns as float64, same index.

    Raises
    ------
    ValidationError
        Names the column, the line and the value, how many cells are bad, and for decimal
        commas (``"2,5"``) the fix (``decimal=","`` / ``--decimal ,``, or fix the file).

    Examples
    --------
    >>> import pandas as pd
    >>> numeric_columns(pd.DataFrame({"x": ["1.5", None]}), ["x"], source="t")["x"].tolist()
    [1.5, nan]
    """
    out = {}
    for col in columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s.astype("float64")
            continue
        if pd.api.types.is_numeric_dtype(s):
            out[col] = s.astype("float64")
            continue
        text = s.astype(object)
        filled = text.notna() & (text.astype(str).str.strip() != "")
        num = pd.to_numeric(text.where(filled), errors="coerce")
        bad = filled & num.isna()
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            value = text.iloc[pos]
            n_bad = int(bad.sum())
            more = f" ({n_bad} such cells in the column)" if n_bad > 1 else ""
            if isinstance(value, str) and _DECIMAL_COMMA.match(value):
                fix = (f"it looks like a decimal comma: {decimal_fix}, or write the numbers "
                       "with a decimal point")
            else:
                fix = "fix or empty the cell, or leave the column out of the features"
            raise ValidationError(
                f"{source}: feature column '{col}' holds a value that is not a number, "
                f"{value!r} on line {pos + first_line}{more}; {fix}."
            )
        out[col] = num.astype("float64")
    return pd.DataFrame(out, index=df.index)


def _table_suffix(p: Path) -> str:
    suffix = _suffix(p)
    if suffix not in TABLE_SUFFIXES:
        raise ValidationError(
            f"Output table '{p}' has an unknown suffix '{suffix}'; use one of {', '.join(TABLE_SUFFIXES)}."
        )
    return suffix


def _dump_table(df: pd.DataFrame, tmp: Path, suffix: str, index: bool) -> None:
    if suffix == ".parquet":
        df.to_parquet(tmp, index=index)
    else:
        df.to_csv(tmp, sep="," if suffix == ".csv" else "\t", index=index)


def write_table(df: pd.DataFrame, path: PathLike, *, force: bool = False, index: bool = False) -> Path:
    """Write ``df`` atomically as CSV, TSV or Parquet (by suffix).

    Parameters
    ----------
    df : pandas.DataFrame
    path : str or path-like
    force : bool, default=False
        Replace an existing file.
    index : bool, default=False
        Write the index as well.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    p = Path(path)
    suffix = _table_suffix(p)
    with atomic_output(p, force=force) as tmp:
        _dump_table(df, tmp, suffix, index)
    return p


def write_tables(tables: Mapping[PathLike, pd.DataFrame], *, force: bool = False) -> list[Path]:
    """Write several tables that belong together: all are written in full, then renamed.

    Every table goes to a temporary file first; only when all are complete are they renamed
    into place, in the order given (put the table whose presence marks a finished run
    last).  An error or interrupt before that leaves every target as it was.

    Parameters
    ----------
    tables : mapping of path -> pandas.DataFrame
    force : bool, default=False
        Replace existing files.

    Returns
    -------
    list of pathlib.Path
    """
    paths = [Path(p) for p in tables]
    suffixes = [_table_suffix(p) for p in paths]
    with contextlib.ExitStack() as stack:
        # entered in reverse so that the contexts exit (rename) in the given order
        tmps = {}
        for p, suffix in reversed(list(zip(paths, suffixes, strict=True))):
            tmps[p] = (stack.enter_context(atomic_output(p, force=force)), suffix)
        for p, df in zip(paths, tables.values(), strict=True):
            tmp, suffix = tmps[p]
            _dump_table(df, tmp, suffix, False)
    return paths


# --------------------------------------------------------------------------- images
def read_dicom_series(directory: PathLike, *, series_uid: str | None = None) -> sitk.Image:
    """Read a DICOM series directory as a float64 image with per-slice rescale applied.

    Selected header fields of the first slice (Modality, Units, PatientWeight, dose and
    times, ...) are copied onto the image's metadata under their DICOM tag (``"0054|1001"``).

    Parameters
    ----------
    directory : str or path-like
        A directory holding one DICOM series (or several, with ``series_uid``).
    series_uid : str, optional
        The SeriesInstanceUID to read when the directory holds several series.
    """
    d = Path(directory)
    _check_exists(d, "DICOM directory")
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(d))
    if not ids:
        raise CorruptFileError(f"Directory '{d}' holds no readable DICOM series.")
    if series_uid is None:
        if len(ids) > 1:
            raise CorruptFileError(
                f"Directory '{d}' holds {len(ids)} DICOM series ({', '.join(ids)}); "
                "pass series_uid to choose one."
            )
        series_uid = ids[0]
    elif series_uid not in ids:
        raise CorruptFileError(f"Series '{series_uid}' is not in '{d}'; found: {', '.join(ids)}.")
    files = reader.GetGDCMSeriesFileNames(str(d), series_uid)
    _check_unlisted_slices(d, ids, reader)
    _check_slice_positions(d, files)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOn()
    reader.SetOutputPixelType(sitk.sitkFloat64)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        bad = _unreadable_files(files)
        which = f" (unreadable slice file(s): {', '.join(bad)})" if bad else ""
        raise CorruptFileError(f"DICOM series in '{d}' could not be read{which}: {_first_line(exc)}; "
                               "export the series again.") from exc
    image = _undo_monochrome1(image, reader, len(files))
    for key in _DICOM_KEYS:
        if reader.HasMetaDataKey(0, key):
            image.SetMetaData(key, reader.GetMetaData(0, key).strip())
    return image


_SLICE_SUFFIXES = (".dcm", ".dicom", ".ima")


def _looks_like_slice(path: Path) -> bool:
    """A file that should have been part of a series: a DICOM suffix, a DICOM preamble, or a
    bare / numeric-suffixed name with a digit in it (``IM0001``, ``1.2.840.113619.2.55``);
    README-like files and DICOMDIR are not."""
    if path.name.startswith(".") or not path.is_file() or path.name.upper() == "DICOMDIR":
        return False
    suffix = path.suffix.lower()
    if suffix in _SLICE_SUFFIXES:
        return True
    if (suffix == "" or suffix[1:].isdigit()) and any(c.isdigit() for c in path.name):
        return True
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"
    return False


def _check_unlisted_slices(directory: Path, ids, reader: sitk.ImageSeriesReader) -> None:
    """Refuse a series directory holding slice files that GDCM could not parse (they are
    silently left out of the series, which then reads as a shorter volume)."""
    listed = {Path(f).name for uid in ids for f in reader.GetGDCMSeriesFileNames(str(directory), uid)}
    bad = sorted(p.name for p in directory.iterdir() if p.name not in listed and _looks_like_slice(p))
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CorruptFileError(
            f"DICOM directory '{directory}' holds {len(bad)} file(s) that are not readable DICOM slices: "
            f"{shown}. Replace them with intact copies (export the series again) or move them out.")


def _unreadable_files(files) -> list[str]:
    bad = []
    for f in files:
        try:
            r = sitk.ImageFileReader()
            r.SetFileName(f)
            r.Execute()
        except RuntimeError:
            bad.append(Path(f).name)
    return bad


def _check_slice_positions(directory: Path, files) -> None:
    """Refuse a series whose slices are not evenly spaced along the slice normal.

    A missing slice would otherwise be read as a shorter volume with the remaining slices
    re-spaced (ITK only warns), which moves every structure beyond the gap.
    """
    n = len(files)
    if n < 3:
        return
    pos, cosines = [], []
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        try:
            r.ReadImageInformation()
        except RuntimeError as exc:
            raise CorruptFileError(f"DICOM slice '{f}' could not be read: {_first_line(exc)}; replace it "
                                   "with an intact copy or export the series again.") from exc
        try:
            pos.append([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
            cosines = [float(v) for v in r.GetMetaData("0020|0037").split("\\")]
        except (RuntimeError, ValueError):
            return  # no positions to check (e.g. secondary captures); ITK's spacing stands
    pos = np.asarray(pos, float)
    if pos.shape != (n, 3) or len(cosines) != 6:
        return
    normal = np.cross(cosines[:3], cosines[3:])
    depth = pos @ normal
    gaps = np.diff(depth)
    step = float(np.median(gaps))
    if abs(step) < 1e-6:
        raise CorruptFileError(f"DICOM series in '{directory}': the slices do not advance along the slice "
                               "normal (duplicate positions); export the series again.")
    off = np.flatnonzero(np.abs(gaps - step) > 0.01 * abs(step) + 1e-3)
    if off.size:
        k = int(off[0])
        names = Path(files[k]).name, Path(files[k + 1]).name
        kind = "a gap" if abs(gaps[k]) > abs(step) else "uneven spacing"
        missing = int(round(gaps[k] / step)) - 1 if abs(gaps[k]) > abs(step) else 0
        what = f" ({missing} slice(s) missing)" if missing > 0 else ""
        raise CorruptFileError(
            f"DICOM series in '{directory}' has {kind}{what}: slices '{names[0]}' and '{names[1]}' are "
            f"{abs(gaps[k]):.3g} mm apart where the others are {abs(step):.3g} mm apart "
            f"({off.size} such place(s)); restore the missing slice(s) or export the series again.")


def _undo_monochrome1(image: sitk.Image, reader: sitk.ImageSeriesReader, n_slices: int) -> sitk.Image:
    """Give MONOCHROME1 slices their stored values back.

    GDCM turns MONOCHROME1 into MONOCHROME2 by inverting the stored value
    (``top - raw``, ``top`` the largest value of the bit depth) before the rescale, which is
    right for display and wrong for quantitative images (a PET scan's background would read
    as its hottest region).  Here ``slope * raw + intercept`` is recovered per slice.
    """

    def tag(k: int, key: str, default: str) -> str:
        return reader.GetMetaData(k, key).strip() if reader.HasMetaDataKey(k, key) else default

    arr = None
    for k in range(n_slices):
        if tag(k, "0028|0004", "MONOCHROME2").upper() != "MONOCHROME1":
            continue
        if arr is None:
            arr = sitk.GetArrayFromImage(image)
        slope = float(tag(k, "0028|1053", "1") or 1)
        intercept = float(tag(k, "0028|1052", "0") or 0)
        bits = int(tag(k, "0028|0101", "16") or 16)
        top = (1 << (bits - 1)) - 1 if tag(k, "0028|0103", "0") == "1" else (1 << bits) - 1
        # GDCM returned slope * (top - raw) + intercept
        arr[k] = slope * top + 2.0 * intercept - arr[k]
    if arr is None:
        return image
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    out.SetMetaData("0028|0004", "MONOCHROME2")
    return out


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages put the useful part last ("... : reason")
    return lines[-1] if lines else type(exc).__name__


def read_image(path: PathLike) -> sitk.Image:
    """Read an image: NIfTI, NRRD, MetaImage, or a DICOM series directory.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    SimpleITK.Image

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    CorruptFileError
        Empty, truncated, corrupt or not an image.
    """
    p = Path(path)
    _check_exists(p, "Image")
    if p.is_dir():
        return read_dicom_series(p)
    if p.stat().st_size == 0:
        raise CorruptFileError(f"Image '{p}' is empty (0 bytes).")
    suffix = _suffix(p)
    if suffix in TABLE_SUFFIXES or suffix in (".json", ".toml", ".yaml", ".txt"):
        raise CorruptFileError(f"'{p}' is a {suffix[1:]} file, not an image; give a NIfTI, NRRD or DICOM path.")
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise CorruptFileError(f"Image '{p}' could not be read: {_first_line(exc)}") from exc
    if suffix in (".nii", ".nii.gz"):
        check_nifti_complete(p, image)
        image = _restore_nifti_nan(p, image)
    return image


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def _restore_nifti_nan(path: Path, image: sitk.Image) -> sitk.Image:
    """Put back the NaN voxels of a floating-point NIfTI that ITK's reader turned into 0.

    ITK's NIfTI reader replaces NaN by 0, so a scan with undefined voxels reads as one with
    cold voxels.  The voxel data are read again from the file and every NaN position is
    set to NaN in the image (scalar images; other images are returned unchanged).
    """
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() not in (sitk.sitkFloat32,
                                                                                 sitk.sitkFloat64):
        return image
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(540)
            hdr = _nifti_layout(head)
            if hdr is None:
                return image
            dtype, offset, n = hdr
            if n != image.GetNumberOfPixels():
                return image
            fh.seek(offset)
            raw = np.frombuffer(fh.read(n * dtype.itemsize), dtype=dtype, count=n)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise CorruptFileError(f"Image '{path}' could not be read: {exc}.") from exc
    nan = np.isnan(raw)
    if not nan.any():
        return image
    arr = sitk.GetArrayFromImage(image)
    arr.reshape(-1)[nan] = np.nan
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    for key in image.GetMetaDataKeys():
        out.SetMetaData(key, image.GetMetaData(key))
    return out


def _nifti_layout(head: bytes):
    """(dtype, data offset, number of voxels) of a floating-point NIfTI-1/2 header, else None."""
    for order in ("<", ">"):
        if len(head) >= 348 and np.frombuffer(head[:4], order + "i4")[0] == 348:
            dims = np.frombuffer(head[40:56], order + "i2")
            code = int(np.frombuffer(head[70:72], order + "i2")[0])
            offset = int(np.frombuffer(head[108:112], order + "f4")[0])
            break
        if len(head) >= 540 and np.frombuffer(head[:4], order + "i4")[0] == 540:
            dims = np.frombuffer(head[16:80], order + "i8")
            code = int(np.frombuffer(head[12:14], order + "i2")[0])
            offset = int(np.frombuffer(head[168:176], order + "i8")[0])
            break
    else:
        return None
    if code not in _NIFTI_FLOAT_TYPES or not 1 <= dims[0] <= 7:
        return None
    n = int(np.prod(dims[1:int(dims[0]) + 1], dtype=np.int64))
    return np.dtype(order + _NIFTI_FLOAT_TYPES[code]), max(offset, 348), n


_NIFTI_HEADER_BYTES = 348


def check_nifti_complete(path: PathLike, image: sitk.Image) -> None:
    """Raise if a NIfTI file holds fewer bytes than its header promises.

    ITK reads a truncated ``.nii``/``.nii.gz`` without complaint and fills the missing voxels
    with zeros, which gives plausible but wrong numbers downstream.  For ``.nii`` the file
    size tells; for ``.nii.gz`` the uncompressed size in the gzip trailer (4 bytes at the end)
    must match, and only when it does not (a truncated file ends in arbitrary bytes, or the
    file has several gzip members) is the stream decompressed to decide.

    Raises
    ------
    CorruptFileError
        The file is truncated or not valid gzip.
    """
    p = Path(path)
    need = _NIFTI_HEADER_BYTES + (
        image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel() * image.GetSizeOfPixelComponent()
    )
    size = p.stat().st_size
    if p.name.lower().endswith(".gz"):
        with open(p, "rb") as fh:
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
        isize = int.from_bytes(tail, "little") if len(tail) == 4 else -1
        if need < 2**32 and need <= isize <= need + (1 << 20):
            return
        have = _inflated_size(p)  # exact answer for the unusual cases
    else:
        have = size
    if have < need:
        raise CorruptFileError(
            f"Image '{p}' is truncated: it holds {have} bytes of data, a NIfTI of size "
            f"{image.GetSize()} needs at least {need}; copy or export it again."
        )


def _inflated_size(path: Path) -> int:
    """Uncompressed size of a (multi-member) gzip file; raises if the stream ends early."""
    inflate = zlib.decompressobj(wbits=31)
    total = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            data = chunk
            while data:
                if inflate.eof:  # another gzip member follows
                    data, inflate = inflate.unused_data + data, zlib.decompressobj(wbits=31)
                try:
                    total += len(inflate.decompress(data))
                except zlib.error as exc:
                    raise CorruptFileError(f"Image '{path}' is corrupt: {exc}.") from exc
                data = inflate.unused_data if inflate.eof else b""
    if not inflate.eof:
        raise CorruptFileError(
            f"Image '{path}' is truncated (the gzip stream ends early); copy or export it again."
        )
    return total


def write_image(image: sitk.Image, path: PathLike, *, force: bool = False, compress: bool = True) -> Path:
    """Write ``image`` atomically as NIfTI, NRRD or MetaImage (by suffix).

    Parameters
    ----------
    image : SimpleITK.Image
    path : str or path-like
        Output file; the suffix chooses the format.
    force : bool, default=False
        Replace an existing file.
    compress : bool, default=True
        Compress where the format allows it.
    """
    p = Path(path)
    suffix = _suffix(p)
    if suffix not in IMAGE_SUFFIXES:
        raise ValidationError(
            f"Output image '{p}' has an unknown suffix '{suffix}'; use one of {', '.join(IMAGE_SUFFIXES)}."
        )
    if suffix in (".mhd", ".nhdr"):
        _write_detached(image, p, force=force, compress=compress)
        return p
    with atomic_output(p, force=force) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return p


def _write_detached(image: sitk.Image, path: Path, *, force: bool, compress: bool) -> None:
    """Write a header + data-file format (MetaImage ``.mhd``, NRRD ``.nhdr``) under its final
    names: both files are written in a temporary folder, then the data file and last the
    header are moved into place (the header names its data file, so it must not be a
    temporary name)."""
    if path.exists() and not force:
        raise OutputExistsError(f"Output '{path}' already exists; pass --force (force=True) to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        sitk.WriteImage(image, str(tmp / path.name), compress)
        files = sorted(tmp.iterdir(), key=lambda f: f.name == path.name)  # header last
        for f in files:
            if f.name != path.name and (path.parent / f.name).exists() and not force:
                raise OutputExistsError(f"Output '{path.parent / f.name}' (the data file of '{path.name}') already "
                                        "exists; pass --force (force=True) to replace it.")
        umask = os.umask(0)
        os.umask(umask)
        for f in files:
            os.chmod(f, 0o666 & ~umask)
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
