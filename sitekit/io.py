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
import gzip
import hashlib
import locale
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from sitekit._typing import PathLike
from sitekit.exceptions import (
    CorruptFileError,
    MissingFileError,
    OutputExistsError,
    ValidationError,
)

__all__ = [
    "TABLE_SUFFIXES",
    "IMAGE_SUFFIXES",
    "atomic_output",
    "atomic_directory",
    "file_hash",
    "read_table",
    "write_table",
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
    for inp in inputs:
        if Path(inp).exists() and target.exists() and os.path.samefile(inp, target):
            raise OutputExistsError(
                f"Output '{target}' is also an input of this run; choose another output path."
            )
    if target.exists() and not force:
        raise OutputExistsError(
            f"Output '{target}' already exists; pass --force (force=True) to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600 files; give the output the usual umask mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(path: PathLike, *, force: bool = False, inputs: tuple = ()) -> Iterator[Path]:
    """Like :func:`atomic_output`, for an output that is a directory (DICOM series, Parquet).

    Yields a fresh temporary directory next to ``path``; on success it replaces ``path``
    (an existing one only with ``force``), on an exception it is removed.
    """
    target = Path(path)
    for inp in inputs:
        if Path(inp).exists() and target.exists() and os.path.samefile(inp, target):
            raise OutputExistsError(
                f"Output '{target}' is also an input of this run; choose another output path."
            )
    if target.exists() and not force:
        raise OutputExistsError(
            f"Output '{target}' already exists; pass --force (force=True) to replace it."
        )
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"Output '{target}' exists and is not a directory.")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        umask = os.umask(0)  # mkdtemp makes 0700 directories
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".old",
                                        dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove the temporary folders a killed run left next to ``path``.

    :func:`atomic_directory` names its temporary (and replaced) folders
    ``.<name>.<pid>.<random>.tmp`` / ``.old``; those whose process no longer runs are
    removed, so a run killed with SIGKILL leaves nothing a rerun trips over.  A run killed
    in the instant between moving the old result set aside and the new one in has its old
    set put back.

    Parameters
    ----------
    path : str or path-like
        The final output directory.

    Returns
    -------
    list of pathlib.Path
        The folders removed.
    """
    target = Path(path)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[^/]*\.(tmp|old)")
    removed = []
    for p in target.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            if m.group(2) == "old" and (p / "x").exists() and not target.exists():
                os.replace(p / "x", target)  # killed between moving the old set out and the new one in
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


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
def read_table(path: PathLike, **kwargs) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet table chosen by suffix.

    Parameters
    ----------
    path : str or path-like
        ``.csv``, ``.tsv``/``.tab`` or ``.parquet`` file, or a directory of Parquet files.
    **kwargs
        Passed to :func:`pandas.read_csv` or :func:`pandas.read_parquet`.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    CorruptFileError
        The file is empty, cannot be parsed, or has an unknown suffix.
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
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(p, **kwargs)
        else:
            sep = "," if suffix == ".csv" else "\t"
            df = pd.read_csv(p, sep=sep, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise CorruptFileError(f"Table '{p}' could not be read as {suffix[1:].upper()}: {exc}") from exc
    if df.shape[1] == 0:
        raise CorruptFileError(f"Table '{p}' has no columns.")
    return df


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
    suffix = _suffix(p)
    if suffix not in TABLE_SUFFIXES:
        raise ValidationError(
            f"Output table '{p}' has an unknown suffix '{suffix}'; use one of {', '.join(TABLE_SUFFIXES)}."
        )
    with atomic_output(p, force=force) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=index)
        else:
            df.to_csv(tmp, sep="," if suffix == ".csv" else "\t", index=index)
    return p


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
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
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
