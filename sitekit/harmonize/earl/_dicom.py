"""Writing a 3D image as a DICOM series (slice by slice, tags copied from a reference series)."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sitekit._typing import PathLike
from sitekit.exceptions import ValidationError
from sitekit.io import atomic_directory, preserve_locale

__all__ = ["write_dicom_series", "new_uid"]

# tags the writer derives from the pixel data or that must change in a derived series
_SKIP_PREFIXES = ("0028|",)
_SKIP = {"0008|0018", "0020|000e", "0020|0013", "0020|0032", "0020|0037", "0002|0003", "7fe0|0010",
         "0002|0000", "0002|0001", "0002|0010", "0002|0012", "0002|0013"}
_PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.128"


def new_uid() -> str:
    """A fresh DICOM UID (the UUID-derived ``2.25.`` form)."""
    return f"2.25.{uuid.uuid4().int}"


def _reference_tags(reference_dir: Path, n_slices: int) -> list[dict[str, str]] | None:
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(reference_dir))
    if len(ids) != 1:
        return None
    files = reader.GetGDCMSeriesFileNames(str(reference_dir), ids[0])
    if len(files) != n_slices:
        return None
    out = []
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        r.LoadPrivateTagsOn()
        r.ReadImageInformation()
        out.append({k: r.GetMetaData(k) for k in r.GetMetaDataKeys()})
    return out


def write_dicom_series(image: sitk.Image, out_dir: PathLike, *, reference: PathLike | None = None,
                       force: bool = False, series_description: str | None = None,
                       inputs: tuple = ()) -> Path:
    """Write a 3D image as a DICOM series, one file per slice, atomically.

    Values are stored as int16 with a per-slice RescaleSlope (error <= slope / 2).  With a
    ``reference`` series of the same number of slices, every header tag of each reference slice
    is copied (patient, study, acquisition, Units, decay correction, timing ...); the series
    and SOP instance UIDs are new, and the photometric interpretation is MONOCHROME2.  Without
    one, a minimal PET header (Modality PT, Units from the image's ``0054|1001`` metadata or
    BQML) is written.

    Parameters
    ----------
    image : SimpleITK.Image
        3D scalar image.
    out_dir : path
        Output directory (created; an existing one needs ``force``).
    reference : path, optional
        DICOM series directory whose tags are copied.
    force : bool, default=False
    series_description : str, optional
    inputs : tuple of path
        Inputs of the run, which the output may not replace.

    Returns
    -------
    pathlib.Path
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValidationError("write_dicom_series needs a 3D scalar image.")
    out_dir = Path(out_dir)
    nz = image.GetSize()[2]
    ref_tags = _reference_tags(Path(reference), nz) if reference is not None else None
    if reference is not None and ref_tags is None:
        raise ValidationError(f"The reference DICOM series '{reference}' does not have {nz} slices in one series.")
    series_uid = new_uid()
    now = datetime.now()
    study_uid = new_uid()
    frame_uid = new_uid()
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    iop = "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1]))
    img = sitk.Cast(image, sitk.sitkFloat32)
    units = image.GetMetaData("0054|1001") if image.HasMetaDataKey("0054|1001") else "BQML"
    with atomic_directory(out_dir, force=force, inputs=inputs) as tmp, preserve_locale():
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(nz):
            sl = img[:, :, k]
            arr = sitk.GetArrayViewFromImage(sl)
            top = float(np.max(np.abs(arr))) if arr.size else 0.0
            slope = top / 32000.0 if top > 0 else 1.0
            if ref_tags is not None:
                tags = {key: v for key, v in ref_tags[k].items()
                        if key not in _SKIP and not key.startswith(_SKIP_PREFIXES)}
                desc = tags.get("0008|103e", "").strip()
            else:
                tags = {"0008|0060": "PT", "0008|0016": _PET_SOP_CLASS, "0054|1001": units,
                        "0020|000d": study_uid, "0020|0052": frame_uid, "0010|0010": "Phantom^sitekit",
                        "0010|0020": "PHANTOM", "0008|0020": now.strftime("%Y%m%d"),
                        "0008|0030": now.strftime("%H%M%S"), "0008|0021": now.strftime("%Y%m%d"),
                        "0008|0031": now.strftime("%H%M%S"), "0018|0050": f"{image.GetSpacing()[2]:.6g}",
                        "0054|1102": "START"}
                desc = ""
            tags.update({
                "0008|0018": new_uid(), "0020|000e": series_uid, "0020|0013": str(k + 1),
                "0020|0037": iop,
                "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
                "0008|103e": (series_description or desc or "sitekit")[:64],
                "0028|1053": f"{slope:.10g}", "0028|1052": "0", "0028|0100": "16", "0028|0101": "16",
                "0028|0102": "15", "0028|0103": "1", "0028|0004": "MONOCHROME2",
            })
            for key, v in tags.items():
                sl.SetMetaData(key, v)
            writer.SetFileName(str(tmp / f"slice_{k + 1:04d}.dcm"))
            writer.Execute(sl)
    return out_dir
