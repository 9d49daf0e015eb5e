"""The harmonising Gaussian post-filter and the calibration result file.

``sitekit earl calibrate --out DIR`` writes ``DIR/calibration.json``::

    {
      "format": "sitekit-earl-calibration",
      "version": 1,
      "standard": "EARL1",
      "standard_version": "...",
      "sites": {
        "site_A": {"smallest_fwhm_mm": 4.5, "centre_fwhm_mm": 6.2, "chosen_fwhm_mm": 6.2,
                   "chosen": "centre", "reachable": true, "note": "..."},
        "site_B": {"smallest_fwhm_mm": null, "centre_fwhm_mm": null, "chosen_fwhm_mm": null,
                   "chosen": "centre", "reachable": false, "note": "EARL2 MAX ... cannot be met"}
      }
    }

:func:`read_calibration` returns ``{site: chosen_fwhm_mm}`` for the extraction step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sitekit._typing import PathLike
from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError

__all__ = [
    "CALIBRATION_FORMAT",
    "CALIBRATION_VERSION",
    "FWHM_TO_SIGMA",
    "apply_filter",
    "gaussian_filter_array",
    "read_calibration",
    "read_calibration_file",
]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
CALIBRATION_FORMAT = "sitekit-earl-calibration"
CALIBRATION_VERSION = 1

_INT_TYPES = {
    sitk.sitkUInt8: np.uint8, sitk.sitkInt8: np.int8, sitk.sitkUInt16: np.uint16,
    sitk.sitkInt16: np.int16, sitk.sitkUInt32: np.uint32, sitk.sitkInt32: np.int32,
    sitk.sitkUInt64: np.uint64, sitk.sitkInt64: np.int64,
}


#: Largest post-filter FWHM accepted (mm).  Harmonising filters are 0-15 mm; a filter of
#: 50 mm already blurs a 37 mm sphere into the background, and a kernel of metres would run for
#: hours (issue 15 item 12).
MAX_FWHM_MM = 50.0


def _fwhm_triplet(fwhm) -> np.ndarray:
    try:
        arr = np.atleast_1d(np.asarray(fwhm, dtype=float))
    except (TypeError, ValueError):
        arr = np.array([np.nan])
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValidationError(
            f"The 'fwhm' parameter of apply_filter must be a finite number >= 0 (mm) or three of them "
            f"(x, y, z). Got {fwhm!r} instead."
        )
    if np.any(arr > MAX_FWHM_MM):
        raise ValidationError(
            f"The 'fwhm' parameter of apply_filter is {float(arr.max()):g} mm, above the largest accepted "
            f"{MAX_FWHM_MM:g} mm (harmonising filters are 0-15 mm); check the value and its unit (mm).")
    return arr


def gaussian_filter_array(array: np.ndarray, spacing_xyz, fwhm) -> np.ndarray:
    """Gaussian-filter a (z, y, x) array given the voxel spacing (x, y, z) in mm.

    Parameters
    ----------
    array : ndarray of shape (nz, ny, nx)
    spacing_xyz : sequence of 3 float
        Voxel size along x, y, z (SimpleITK order).
    fwhm : float or sequence of 3 float
        Filter FWHM in mm (isotropic, or per axis x, y, z).

    Returns
    -------
    ndarray of float64
        The filtered array; edges are handled by repeating the border value.
    """
    f = _fwhm_triplet(fwhm)
    a = np.asarray(array, dtype=np.float64)
    if not np.any(f > 0):
        return a.copy()
    sigma = (f * FWHM_TO_SIGMA / np.asarray(spacing_xyz, float))[::-1]
    return ndimage.gaussian_filter(a, sigma, mode="nearest", truncate=4.0)


def apply_filter(image: sitk.Image, fwhm) -> sitk.Image:
    """Apply a 3D Gaussian post-filter of ``fwhm`` mm to an image.

    The per-axis sigma follows from the voxel spacing (sigma_axis = FWHM / 2.3548 / spacing),
    so anisotropic voxels get the same physical filter along every axis.  The output keeps
    the input's geometry (origin, spacing, direction), metadata and pixel type (integer
    images are rounded and clipped to their range).

    Parameters
    ----------
    image : SimpleITK.Image
        A 3D scalar image (PET activity concentration or SUV).
    fwhm : float or sequence of 3 float
        Filter FWHM in mm; 0 returns an unchanged copy.  Three values filter the x, y and z
        axes differently.

    Returns
    -------
    SimpleITK.Image

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> from sitekit.harmonize import earl
    >>> img = sitk.Image([20, 20, 10], sitk.sitkFloat32)
    >>> img.SetSpacing((2.0, 2.0, 3.0))
    >>> out = earl.apply_filter(img, 6.0)
    >>> out.GetSpacing(), out.GetPixelID() == img.GetPixelID()
    ((2.0, 2.0, 3.0), True)
    """
    if not isinstance(image, sitk.Image):
        raise ValidationError(
            f"apply_filter needs a SimpleITK.Image; got {type(image).__name__}. "
            "Read files with sitekit.io.read_image."
        )
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValidationError(
            f"apply_filter needs a 3D scalar image; got a {image.GetDimension()}D image with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per pixel."
        )
    f = _fwhm_triplet(fwhm)
    if not np.any(f > 0):
        return sitk.Image(image)
    arr = sitk.GetArrayViewFromImage(image)
    out = gaussian_filter_array(arr, image.GetSpacing(), f)
    pid = image.GetPixelID()
    if pid in _INT_TYPES:
        dt = _INT_TYPES[pid]
        info = np.iinfo(dt)
        out = np.clip(np.rint(out), info.min, info.max).astype(dt)
    else:
        out = out.astype(arr.dtype, copy=False)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    for key in image.GetMetaDataKeys():
        result.SetMetaData(key, image.GetMetaData(key))
    return result


# ------------------------------------------------------------------ calibration file
def _calibration_path(path: PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "calibration.json"
    if not p.exists():
        raise MissingFileError(
            f"Calibration file '{p}' does not exist; run `sitekit earl calibrate PHANTOM --out DIR` "
            "and pass DIR or DIR/calibration.json."
        )
    return p


def read_calibration_file(path: PathLike) -> dict:
    """Read and check a ``calibration.json`` (or the directory holding it); return the whole dict."""
    p = _calibration_path(path)
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Calibration file '{p}' is not valid JSON: {exc}") from exc
    if not isinstance(d, dict) or d.get("format") != CALIBRATION_FORMAT:
        raise CorruptFileError(
            f"Calibration file '{p}' is not a sitekit EARL calibration "
            f"(expected \"format\": \"{CALIBRATION_FORMAT}\")."
        )
    version = d.get("version")
    if not isinstance(version, int) or version > CALIBRATION_VERSION:
        raise CorruptFileError(
            f"Calibration file '{p}' has version {version!r}; this sitekit reads version "
            f"<= {CALIBRATION_VERSION}. Upgrade sitekit or re-run `sitekit earl calibrate`."
        )
    sites = d.get("sites")
    if not isinstance(sites, dict) or not sites:
        raise CorruptFileError(f"Calibration file '{p}' has no 'sites' section.")
    for site, entry in sites.items():
        if not isinstance(entry, dict) or "chosen_fwhm_mm" not in entry:
            raise CorruptFileError(f"Calibration file '{p}': site '{site}' has no 'chosen_fwhm_mm'.")
        v = entry["chosen_fwhm_mm"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v) or v < 0):
            raise CorruptFileError(
                f"Calibration file '{p}': site '{site}' has an invalid chosen_fwhm_mm {v!r}."
            )
    return d


def read_calibration(path: PathLike) -> dict[str, float]:
    """Read the per-site harmonising filter FWHM from a calibration result.

    Parameters
    ----------
    path : str or path-like
        ``calibration.json`` written by ``sitekit earl calibrate --out DIR`` (or ``DIR``).

    Returns
    -------
    dict of str to float
        ``{site: chosen_fwhm_mm}``; the chosen FWHM is the band-centre FWHM unless the
        calibration chose otherwise.

    Raises
    ------
    MissingFileError, CorruptFileError
        No such file, or not a calibration file of a version this sitekit reads.
    ValidationError
        A site for which no Gaussian filter reaches the standard (its ``chosen_fwhm_mm`` is
        null); the message names the site and the standard.
    """
    d = read_calibration_file(path)
    out: dict[str, float] = {}
    unreachable = []
    for site, entry in d["sites"].items():
        v = entry["chosen_fwhm_mm"]
        if v is None:
            unreachable.append(f"'{site}'" + (f" ({entry['note']})" if entry.get("note") else ""))
        else:
            out[str(site)] = float(v)
    if unreachable:
        raise ValidationError(
            f"Calibration '{_calibration_path(path)}': no Gaussian post-filter brings site(s) "
            f"{', '.join(unreachable)} within the {d.get('standard', '?')} bands; harmonise those "
            "sites another way (reconstruction settings) or calibrate against another standard."
        )
    return out
