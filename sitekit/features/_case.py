"""Feature extraction for one case (image + mask) with pyradiomics."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
import SimpleITK as sitk

from sitekit._typing import PathLike
from sitekit.exceptions import ExtractionError, ValidationError
from sitekit.features._params import canonical_json, load_params
from sitekit.io import read_image

__all__ = ["extract_case", "check_case", "pyradiomics_version"]

#: Relative tolerance of the image/mask geometry check when the parameters set no
#: ``geometryTolerance`` (pyradiomics' own default is stricter, 1e-6, and fails on NIfTI
#: files whose origins were rounded to float32 by different writers).
DEFAULT_GEOMETRY_TOLERANCE = 1e-3

# One pyradiomics extractor per distinct parameter set and process (building one validates
# the parameters again, which costs more than a small case).
_EXTRACTORS: dict[str, object] = {}


def pyradiomics_version() -> str:
    """The version of the installed pyradiomics."""
    import radiomics

    return str(getattr(radiomics, "__version__", "unknown"))


@contextlib.contextmanager
def quiet_radiomics() -> Iterator[None]:
    """Silence pyradiomics' logger (it logs to ``radiomics`` and prints warnings to stderr)."""
    log = logging.getLogger("radiomics")
    old = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(old)


def get_extractor(params: dict):
    """A cached ``RadiomicsFeatureExtractor`` for a validated parameter dict."""
    last = _EXTRACTORS.get("__last__")
    if last is not None and last[0] is params:  # extract() passes one dict for every case
        return last[1]
    key = canonical_json(params)
    ext = _EXTRACTORS.get(key)
    if ext is None:
        with quiet_radiomics(), warnings.catch_warnings():
            # pykwalify loads pyradiomics' schema functions with the deprecated load_module()
            warnings.simplefilter("ignore", DeprecationWarning)
            from radiomics.featureextractor import RadiomicsFeatureExtractor

            ext = RadiomicsFeatureExtractor(params)
        _EXTRACTORS[key] = ext
    _EXTRACTORS["__last__"] = (params, ext)
    return ext


def _label_of(params: Mapping, label: int | None) -> int:
    if label is None:
        label = params.get("setting", {}).get("label", 1)
    if isinstance(label, float) and float(label).is_integer():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int | np.integer) or label <= 0:
        raise ValidationError(f"The 'label' parameter must be a positive integer. Got {label!r} instead.")
    return int(label)


def _fmt(values, digits: int) -> str:
    return "(" + ", ".join(f"{round(v, digits):g}" for v in values) + ")"


def check_case(image: sitk.Image, mask: sitk.Image, *, label: int, tolerance: float) -> None:
    """Check that image and mask share one geometry and the mask holds ``label``.

    Raises
    ------
    ExtractionError
        With ``stage="check"``: not 3D scalar images, a geometry mismatch (size, spacing,
        origin, direction; spacing and origin relative to the voxel size), an empty mask,
        ``label`` absent from the mask (the message lists the labels present), or NaN image
        voxels in the region or within two voxels of it (interpolation would carry them in).
    """
    for what, img in (("image", image), ("mask", mask)):
        if not isinstance(img, sitk.Image):
            raise ValidationError(
                f"The {what} must be a SimpleITK.Image; got {type(img).__name__}. "
                "Read files with sitekit.io.read_image."
            )
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise ExtractionError(
                f"the {what} must be a 3D scalar image; got {img.GetDimension()}D with "
                f"{img.GetNumberOfComponentsPerPixel()} component(s) per voxel",
                stage="check",
            )
    if image.GetSize() != mask.GetSize():
        raise ExtractionError(
            f"image/mask geometry mismatch: size {image.GetSize()} vs {mask.GetSize()}",
            stage="check",
        )
    sp_i, sp_m = image.GetSpacing(), mask.GetSpacing()
    if any(abs(a - b) > tolerance * a for a, b in zip(sp_i, sp_m, strict=True)):
        raise ExtractionError(
            f"image/mask geometry mismatch: spacing {_fmt(sp_i, 6)} vs {_fmt(sp_m, 6)} mm",
            stage="check",
        )
    o_i, o_m = image.GetOrigin(), mask.GetOrigin()
    if any(abs(a - b) > tolerance * min(sp_i) for a, b in zip(o_i, o_m, strict=True)):
        raise ExtractionError(
            f"image/mask geometry mismatch: origin {_fmt(o_i, 4)} vs {_fmt(o_m, 4)} mm",
            stage="check",
        )
    d_i, d_m = image.GetDirection(), mask.GetDirection()
    if any(abs(a - b) > tolerance for a, b in zip(d_i, d_m, strict=True)):
        raise ExtractionError(
            f"image/mask geometry mismatch: direction {_fmt(d_i, 4)} vs {_fmt(d_m, 4)}",
            stage="check",
        )
    arr = sitk.GetArrayViewFromImage(mask)
    if np.any(arr == label):
        _check_nan_near(image, arr == label, label)
        return
    if not np.any(arr):
        raise ExtractionError("empty mask: no voxel is labelled", stage="check")
    present = np.unique(arr[arr != 0])
    shown = ", ".join(str(v.item()) for v in present[:10]) + (" ..." if present.size > 10 else "")
    raise ExtractionError(
        f"label {label} absent from the mask (labels present: {shown}); set label_value",
        stage="check",
    )


def _check_nan_near(image: sitk.Image, region: np.ndarray, label: int) -> None:
    """Refuse NaN image voxels in the region or within two voxels of it (issue 15 item 4):
    pyradiomics would otherwise return silently changed features."""
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return
    idx = np.argwhere(region)
    lo = np.maximum(idx.min(axis=0) - 2, 0)
    hi = idx.max(axis=0) + 3
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    nan = np.isnan(sitk.GetArrayViewFromImage(image)[box])
    if nan.any():
        inside = int(np.count_nonzero(nan & region[box]))
        raise ExtractionError(
            f"the image has {int(nan.sum())} NaN voxel(s) in or next to the region of label {label} "
            f"({inside} inside it); export the image without undefined voxels or leave them out of the mask",
            stage="check",
        )


def run_extractor(image: sitk.Image, mask: sitk.Image, params: dict, label: int) -> dict[str, float]:
    """Check the case and run pyradiomics; features only (``diagnostics_*`` dropped)."""
    tol = params.get("setting", {}).get("geometryTolerance") or DEFAULT_GEOMETRY_TOLERANCE
    check_case(image, mask, label=label, tolerance=tol)
    extractor = get_extractor(params)
    with quiet_radiomics():
        try:
            result = extractor.execute(image, mask, label=label)
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ExtractionError(f"pyradiomics failed: {reason}", stage="extract") from exc
    return {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}


def extract_case(
    image: sitk.Image | PathLike,
    mask: sitk.Image | PathLike,
    *,
    params: PathLike | Mapping | None = None,
    label: int | None = None,
) -> dict[str, float]:
    """Extract the radiomics features of one image and mask with pyradiomics.

    The values are exactly those of
    ``RadiomicsFeatureExtractor(params).execute(image, mask, label=label)`` with the
    ``diagnostics_*`` entries dropped; :func:`extract` calls this on every manifest row.

    Parameters
    ----------
    image : SimpleITK.Image or path-like
        A 3D scalar image (SUV for the default parameters); a path is read with
        :func:`sitekit.io.read_image`.
    mask : SimpleITK.Image or path-like
        The label map on the same grid as ``image``.
    params : str, path-like, dict or None, default=None
        A pyradiomics parameter file or dict (see :func:`load_params`); None uses the shipped
        PET default.
    label : int, optional
        The mask value of the region; default: the parameters' ``label`` setting (1).

    Returns
    -------
    dict of str to float
        ``{feature name: value}`` named as pyradiomics names them
        (``original_firstorder_Mean``, ``original_glcm_Contrast``, ...), in pyradiomics' order.

    Raises
    ------
    ExtractionError
        Image/mask geometry mismatch, empty mask, ``label`` absent (``stage="check"``), or
        pyradiomics failing on the region, e.g. a too small ROI (``stage="extract"``).
    ValidationError
        Invalid parameters or ``label``.

    Examples
    --------
    >>> import numpy as np, SimpleITK as sitk
    >>> from sitekit.features import extract_case
    >>> rng = np.random.default_rng(0)
    >>> img = sitk.GetImageFromArray(rng.gamma(4.0, 0.5, (20, 20, 20)))
    >>> m = np.zeros((20, 20, 20), np.uint8); m[5:15, 5:15, 5:15] = 1
    >>> f = extract_case(img, sitk.GetImageFromArray(m))
    >>> round(f["original_shape_MeshVolume"]) > 0
    True
    """
    p = load_params(params)
    lab = _label_of(p, label)
    if not isinstance(image, sitk.Image):
        image = read_image(image)
    if not isinstance(mask, sitk.Image):
        mask = read_image(mask)
    return run_extractor(image, mask, p, lab)
