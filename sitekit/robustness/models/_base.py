"""The segmenter protocol and the helpers every adapter shares."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import SimpleITK as sitk

from sitekit.exceptions import ValidationError

__all__ = ["Segmenter", "check_image", "mask_like", "image_like", "resample_to_spacing", "resample_onto"]


@runtime_checkable
class Segmenter(Protocol):
    """What sitekit needs from a segmentation model: query access only.

    ``predict(image)`` takes a 3-D SimpleITK image (SUV) and returns a binary mask (uint8,
    0/1) on the same grid.  Models with a probability map also have ``predict_proba(image)``
    returning a float32 image on the same grid.
    """

    def predict(self, image: sitk.Image) -> sitk.Image:  # pragma: no cover - protocol
        """Binary mask (uint8 0/1) on the grid of ``image``."""
        ...


def check_image(image, *, owner: str, name: str = "image") -> sitk.Image:
    """Return ``image`` as a float32 3-D SimpleITK image, or raise :class:`ValidationError`."""
    if not isinstance(image, sitk.Image):
        raise ValidationError(f"{owner} needs a SimpleITK image as '{name}'. Got {type(image).__name__}.")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValidationError(
            f"{owner} needs a 3-D scalar image as '{name}'. Got dimension {image.GetDimension()} with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel."
        )
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return image


def image_like(array: np.ndarray, reference: sitk.Image, dtype=np.float32) -> sitk.Image:
    """A SimpleITK image of ``array`` (z, y, x) with the geometry of ``reference``."""
    out = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=dtype))
    out.CopyInformation(reference)
    return out


def mask_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A uint8 0/1 mask image of the boolean ``array`` with the geometry of ``reference``."""
    return image_like(np.asarray(array).astype(np.uint8), reference, dtype=np.uint8)


def resample_to_spacing(image: sitk.Image, spacing) -> sitk.Image:
    """Linear resampling to ``spacing`` (x, y, z mm) over the same physical extent.

    The new grid covers the same box (voxel edges to voxel edges) as the old one, with
    ``max(1, round(size * old / new))`` voxels per axis and the same direction; values from
    outside the field of view are the nearest edge value.
    """
    old = np.array(image.GetSpacing(), float)
    new = np.array(spacing, float)
    size = np.array(image.GetSize())
    new_size = [max(1, int(round(s))) for s in size * old / new]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ ((new - old) / 2.0)
    ref = sitk.Image(new_size, sitk.sitkFloat32)
    ref.SetSpacing(new.tolist())
    ref.SetOrigin(origin.tolist())
    ref.SetDirection(image.GetDirection())
    return resample_onto(image, ref)


def resample_onto(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Linear resampling of ``image`` onto the grid of ``reference`` (edge values extend outside)."""
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(reference)
    f.SetInterpolator(sitk.sitkLinear)
    f.SetOutputPixelType(sitk.sitkFloat32)
    f.SetUseNearestNeighborExtrapolator(True)
    return f.Execute(image)
