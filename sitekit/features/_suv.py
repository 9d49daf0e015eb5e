"""SUV body-weight conversion from PET DICOM headers."""

from __future__ import annotations

import re

import SimpleITK as sitk

from sitekit.exceptions import ExtractionError

__all__ = ["suv_bw_factor", "to_suv_bw"]

_TAGS = {
    "weight": ("0010|1030", "PatientWeight"),
    "dose": ("0018|1074", "RadionuclideTotalDose"),
    "start": ("0018|1072", "RadiopharmaceuticalStartTime"),
    "series": ("0008|0031", "SeriesTime"),
    "acquisition": ("0008|0032", "AcquisitionTime"),
    "half_life": ("0018|1075", "RadionuclideHalfLife"),
    "units": ("0054|1001", "Units"),
    "decay": ("0054|1102", "DecayCorrection"),
}


def _tag(image: sitk.Image, name: str, *, required: bool = True) -> str | None:
    key, label = _TAGS[name]
    if image.HasMetaDataKey(key):
        value = image.GetMetaData(key).strip().strip("\x00").strip()
        if value:
            return value
    if required:
        raise ExtractionError(
            f"SUV conversion needs DICOM tag {key} ({label}), which the image does not carry; "
            "read the PET DICOM series directory itself, or give SUV images and no suv option",
            stage="suv",
        )
    return None


def _number(image: sitk.Image, name: str) -> float:
    text = _tag(image, name)
    try:
        value = float(text.split("\\")[0])
    except ValueError:
        key, label = _TAGS[name]
        raise ExtractionError(f"DICOM tag {key} ({label}) is not a number: {text!r}", stage="suv") from None
    if not value > 0:
        key, label = _TAGS[name]
        raise ExtractionError(f"DICOM tag {key} ({label}) must be > 0; got {value}", stage="suv")
    return value


def _seconds(image: sitk.Image, name: str) -> float:
    """Seconds since midnight of a DICOM TM value (``HHMMSS.ffffff``, legacy ``HH:MM:SS``)."""
    text = _tag(image, name).replace(":", "")
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", text)
    if not m:
        key, label = _TAGS[name]
        raise ExtractionError(f"DICOM tag {key} ({label}) is not a DICOM time: {text!r}", stage="suv")
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi or 0) * 60 + int(s or 0) + float(frac or 0.0)


def suv_bw_factor(image: sitk.Image) -> float:
    """The factor turning a PET image in Bq/mL into body-weight SUV (g/mL).

    ``SUV = C * weight_g / dose_at_scan`` with ``dose_at_scan = dose * 2 ** (-dt / half_life)``
    where ``dt`` is the time from injection (RadiopharmaceuticalStartTime) to the series start
    (SeriesTime) for ``DecayCorrection = START``, or to AcquisitionTime (SeriesTime when absent)
    for ``NONE``; images decay-corrected to the administration (``ADMIN``) use the injected dose.
    A scan past midnight of the injection day is handled (``dt`` < 0 adds 24 h).

    Parameters
    ----------
    image : SimpleITK.Image
        Read by :func:`sitekit.io.read_image` from a PET DICOM series directory, which copies
        the tags 0010|1030, 0018|1072, 0018|1074, 0018|1075, 0008|0031, 0054|1001 and
        0054|1102 onto the image.

    Returns
    -------
    float
        1.0 when the image is already in SUV (Units ``GML``).

    Raises
    ------
    ExtractionError
        (``stage="suv"``) a missing or invalid tag, or Units other than ``BQML``/``GML``.
    """
    units = (_tag(image, "units", required=False) or "BQML").upper()
    if units == "GML":
        return 1.0
    if units != "BQML":
        raise ExtractionError(
            f"SUV conversion needs PET images in Bq/mL (Units BQML); this image has Units {units!r}",
            stage="suv",
        )
    weight_g = _number(image, "weight") * 1000.0
    dose = _number(image, "dose")
    half_life = _number(image, "half_life")
    decay = (_tag(image, "decay", required=False) or "START").upper()
    if decay == "ADMIN":
        return weight_g / dose
    if decay not in ("START", "NONE"):
        raise ExtractionError(
            f"DICOM DecayCorrection (0054|1102) {decay!r} is not START, ADMIN or NONE", stage="suv"
        )
    ref = "series"
    if decay == "NONE" and _tag(image, "acquisition", required=False) is not None:
        ref = "acquisition"
    dt = _seconds(image, ref) - _seconds(image, "start")
    if dt < 0:
        dt += 24 * 3600.0
    return weight_g / (dose * 2.0 ** (-dt / half_life))


def to_suv_bw(image: sitk.Image) -> sitk.Image:
    """Convert a PET image in Bq/mL to body-weight SUV (see :func:`suv_bw_factor`).

    Returns a float64 image with the same geometry and metadata, Units set to ``GML``.
    """
    factor = suv_bw_factor(image)
    out = sitk.Cast(image, sitk.sitkFloat64) * factor
    out.CopyInformation(image)
    for key in image.GetMetaDataKeys():
        out.SetMetaData(key, image.GetMetaData(key))
    out.SetMetaData("0054|1001", "GML")
    return out
