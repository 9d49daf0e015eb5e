"""Spatial perturbations: resolution (post-filter, voxel size) and geometry (rotation, translation)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from sitekit._validation import check_option
from sitekit.exceptions import ValidationError
from sitekit.robustness.perturbations._base import (
    Perturbation,
    RandomPerturbation,
    _array,
    _exactly_one,
    _range,
    _vector3,
)

__all__ = ['GaussianBlur', 'RandomGaussianBlur', 'Resample', 'RandomResample', 'Rotate', 'RandomRotate', 'Translate', 'RandomTranslate']

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _fractional_mask(mask: sitk.Image, reference: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """Resample a binary mask by linear interpolation of its fraction and a 0.5 threshold."""
    frac = sitk.Resample(
        sitk.Cast(mask, sitk.sitkFloat32), reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    out = sitk.Cast(frac >= 0.5, sitk.sitkUInt8)
    out.CopyInformation(reference)
    return out


def _resample_image(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform,
                    interpolator: int) -> sitk.Image:
    fill = float(_array(image).min())
    return sitk.Resample(image, reference, transform, interpolator, fill, sitk.sitkFloat32)


def _centroid(mask: sitk.Image) -> tuple[float, float, float]:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    if not stats.HasLabel(1):
        raise ValidationError("Rotation about the mask centroid needs a non-empty mask.")
    return stats.GetCentroid(1)


# --------------------------------------------------------------------------------------------
# resolution and grid
# --------------------------------------------------------------------------------------------
class GaussianBlur(Perturbation):
    """Resolution change: 3-D Gaussian filter of a given FWHM in mm (mask unchanged).

    The kernel adds to the image's own resolution in quadrature
    (``FWHM_out ~ sqrt(FWHM_in**2 + fwhm_mm**2)``).

    Parameters
    ----------
    fwhm_mm : float or (float, float, float)
        Kernel FWHM in mm (x, y, z).  0 leaves the image unchanged.
    """

    _param_names = ("fwhm_mm",)

    def __init__(self, *, fwhm_mm: float | Sequence[float] = 6.0) -> None:
        self.fwhm_mm = fwhm_mm

    def _apply(self, image, mask):
        fwhm = _vector3(self.fwhm_mm, name="fwhm_mm", owner=type(self).__name__)
        if min(fwhm) < 0:
            raise ValidationError(f"The 'fwhm_mm' parameter of GaussianBlur must be >= 0. Got {fwhm}.")
        if max(fwhm) == 0:
            return image, mask
        variance = [(f * _FWHM_TO_SIGMA) ** 2 for f in fwhm]
        spacing = image.GetSpacing()
        width = int(max(8, min(256, 2 * math.ceil(4 * max(math.sqrt(v) / s for v, s in
                                                         zip(variance, spacing))) + 1)))
        out = sitk.DiscreteGaussian(image, variance=variance, maximumKernelWidth=width,
                                    maximumError=1e-3, useImageSpacing=True)
        return sitk.Cast(out, sitk.sitkFloat32), mask


class RandomGaussianBlur(RandomPerturbation):
    """Gaussian filter with the FWHM (mm, isotropic) drawn uniformly from ``fwhm_mm``.

    Parameters
    ----------
    fwhm_mm : (float, float), default=(2.0, 8.0)
    random_state : int, Generator or None, default=None
    """

    _param_names = ("fwhm_mm", "random_state")

    def __init__(self, *, fwhm_mm=(2.0, 8.0), random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.fwhm_mm = fwhm_mm

    def _draw(self, rng, image, mask):
        lo, hi = _range(self.fwhm_mm, name="fwhm_mm", owner=type(self).__name__, low=0)
        return GaussianBlur(fwhm_mm=float(rng.uniform(lo, hi)))


_INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}


class Resample(Perturbation):
    """Resample to another voxel size over the same physical extent.

    Parameters
    ----------
    spacing_mm : float or (float, float, float)
        New voxel size in mm (x, y, z).
    interpolator : {"linear", "bspline", "nearest"}, default="linear"
        Image interpolation.
    mask_method : {"fractional", "nearest"}, default="fractional"
        ``"fractional"`` resamples the mask fraction linearly and keeps voxels >= 0.5;
        ``"nearest"`` uses nearest-neighbour interpolation.
    """

    _param_names = ("spacing_mm", "interpolator", "mask_method")

    def __init__(self, *, spacing_mm: float | Sequence[float] = 4.0, interpolator: str = "linear",
                 mask_method: str = "fractional") -> None:
        self.spacing_mm = spacing_mm
        self.interpolator = interpolator
        self.mask_method = mask_method

    def _apply(self, image, mask):
        owner = type(self).__name__
        new = _vector3(self.spacing_mm, name="spacing_mm", owner=owner)
        if min(new) <= 0:
            raise ValidationError(f"The 'spacing_mm' parameter of {owner} must be > 0. Got {new}.")
        old = np.array(image.GetSpacing())
        size = np.array(image.GetSize())
        new_arr = np.array(new)
        new_size = [max(1, int(round(s))) for s in size * old / new_arr]
        direction = np.array(image.GetDirection()).reshape(3, 3)
        origin = np.array(image.GetOrigin()) + direction @ ((new_arr - old) / 2.0)
        ref = sitk.Image(new_size, sitk.sitkFloat32)
        ref.SetSpacing(new)
        ref.SetOrigin(origin.tolist())
        ref.SetDirection(image.GetDirection())
        identity = sitk.Transform(3, sitk.sitkIdentity)
        return _warp(image, mask, identity, self.interpolator, self.mask_method, owner, grid=ref)


class RandomResample(RandomPerturbation):
    """Resampling with an isotropic (or per-axis) voxel size drawn uniformly from ``spacing_mm``.

    Parameters
    ----------
    spacing_mm : (float, float), default=(2.0, 5.0)
    isotropic : bool, default=True
        Draw one spacing for all axes (else one per axis).
    interpolator : {"linear", "bspline", "nearest"}, default="linear"
    mask_method : {"fractional", "nearest"}, default="fractional"
    random_state : int, Generator or None, default=None
    """

    _param_names = ("spacing_mm", "isotropic", "interpolator", "mask_method", "random_state")

    def __init__(self, *, spacing_mm=(2.0, 5.0), isotropic: bool = True, interpolator: str = "linear",
                 mask_method: str = "fractional", random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.spacing_mm = spacing_mm
        self.isotropic = isotropic
        self.interpolator = interpolator
        self.mask_method = mask_method

    def _draw(self, rng, image, mask):
        lo, hi = _range(self.spacing_mm, name="spacing_mm", owner=type(self).__name__, low=0)
        spacing = [float(rng.uniform(lo, hi))] * 3 if self.isotropic else rng.uniform(lo, hi, 3).tolist()
        return Resample(spacing_mm=spacing, interpolator=self.interpolator, mask_method=self.mask_method)



# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
class Rotate(Perturbation):
    """Rotation about the mask centroid, resampled onto the same grid.

    Parameters
    ----------
    angles_deg : float or (float, float, float), default=(0, 0, 0)
        Rotation angles in degrees about the x, y and z axes (a single number rotates about z,
        i.e. in the transverse plane).
    interpolator : {"linear", "bspline", "nearest"}, default="linear"
    mask_method : {"fractional", "nearest"}, default="fractional"
    """

    _param_names = ("angles_deg", "interpolator", "mask_method")

    def __init__(self, *, angles_deg: float | Sequence[float] = (0.0, 0.0, 0.0),
                 interpolator: str = "linear", mask_method: str = "fractional") -> None:
        self.angles_deg = angles_deg
        self.interpolator = interpolator
        self.mask_method = mask_method

    def _apply(self, image, mask):
        owner = type(self).__name__
        angles = self.angles_deg
        if isinstance(angles, numbers.Real) and not isinstance(angles, bool):
            angles = [0.0, 0.0, float(angles)]
        ax, ay, az = (math.radians(a) for a in _vector3(angles, name="angles_deg", owner=owner))
        transform = sitk.Euler3DTransform()
        transform.SetCenter(_centroid(mask))
        transform.SetRotation(ax, ay, az)
        return _warp(image, mask, transform.GetInverse(), self.interpolator, self.mask_method, owner)


def _warp(image, mask, transform, interpolator, mask_method, owner, *, grid=None):
    """Resample ``image`` and ``mask`` through ``transform`` onto ``grid`` (default: the
    image's own grid)."""
    interp = _INTERPOLATORS[check_option(interpolator, _INTERPOLATORS, name="interpolator", owner=owner)]
    method = check_option(mask_method, ("fractional", "nearest"), name="mask_method", owner=owner)
    grid = image if grid is None else grid
    img = _resample_image(image, grid, transform, interp)
    if method == "fractional":
        m = _fractional_mask(mask, grid, transform)
    else:
        m = sitk.Resample(mask, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return img, m


class RandomRotate(RandomPerturbation):
    """Rotation about the mask centroid with angles drawn uniformly from ``degrees``.

    Parameters
    ----------
    degrees : (float, float), default=(-15.0, 15.0)
    axes : str, default="z"
        Axes to rotate about (any of "x", "y", "z"); the others get 0.
    interpolator : {"linear", "bspline", "nearest"}, default="linear"
    mask_method : {"fractional", "nearest"}, default="fractional"
    random_state : int, Generator or None, default=None
    """

    _param_names = ("degrees", "axes", "interpolator", "mask_method", "random_state")

    def __init__(self, *, degrees=(-15.0, 15.0), axes: str = "z", interpolator: str = "linear",
                 mask_method: str = "fractional", random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.degrees = degrees
        self.axes = axes
        self.interpolator = interpolator
        self.mask_method = mask_method

    def _draw(self, rng, image, mask):
        owner = type(self).__name__
        lo, hi = _range(self.degrees, name="degrees", owner=owner)
        if not isinstance(self.axes, str) or not self.axes or set(self.axes) - set("xyz"):
            raise ValidationError(
                f"The 'axes' parameter of {owner} must be a string of 'x', 'y', 'z'. Got {self.axes!r}."
            )
        angles = [float(rng.uniform(lo, hi)) if a in self.axes else 0.0 for a in "xyz"]
        return Rotate(angles_deg=angles, interpolator=self.interpolator, mask_method=self.mask_method)


class Translate(Perturbation):
    """(Sub-voxel) translation of image and mask, resampled onto the same grid.

    Parameters
    ----------
    offset_mm : float or (float, float, float), optional
        Shift of the content in mm (x, y, z).
    offset_voxels : float or (float, float, float), optional
        Shift in voxels (fractions allowed).  Give exactly one of the two.
    interpolator : {"linear", "bspline", "nearest"}, default="linear"
    mask_method : {"fractional", "nearest"}, default="fractional"
    """

    _param_names = ("offset_mm", "offset_voxels", "interpolator", "mask_method")

    def __init__(self, *, offset_mm=None, offset_voxels=None, interpolator: str = "linear",
                 mask_method: str = "fractional") -> None:
        self.offset_mm = offset_mm
        self.offset_voxels = offset_voxels
        self.interpolator = interpolator
        self.mask_method = mask_method

    def _apply(self, image, mask):
        owner = type(self).__name__
        key, value = _exactly_one(owner, offset_mm=self.offset_mm, offset_voxels=self.offset_voxels)
        offset = np.array(_vector3(value, name=key, owner=owner))
        if key == "offset_voxels":
            offset = offset * np.array(image.GetSpacing())
        direction = np.array(image.GetDirection()).reshape(3, 3)
        shift = direction @ offset
        # Resample maps output points to input points: moving the content by +shift needs -shift.
        transform = sitk.TranslationTransform(3, (-shift).tolist())
        return _warp(image, mask, transform, self.interpolator, self.mask_method, owner)


class RandomTranslate(RandomPerturbation):
    """Sub-voxel translation: a fraction of the voxel size drawn uniformly per axis.

    Parameters
    ----------
    fraction : (float, float), default=(0.0, 1.0)
        Range of the shift in voxels, per axis.
    interpolator : {"linear", "bspline", "nearest"}, default="linear"
    mask_method : {"fractional", "nearest"}, default="fractional"
    random_state : int, Generator or None, default=None
    """

    _param_names = ("fraction", "interpolator", "mask_method", "random_state")

    def __init__(self, *, fraction=(0.0, 1.0), interpolator: str = "linear",
                 mask_method: str = "fractional", random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.fraction = fraction
        self.interpolator = interpolator
        self.mask_method = mask_method

    def _draw(self, rng, image, mask):
        lo, hi = _range(self.fraction, name="fraction", owner=type(self).__name__)
        return Translate(offset_voxels=rng.uniform(lo, hi, 3).tolist(),
                         interpolator=self.interpolator, mask_method=self.mask_method)


