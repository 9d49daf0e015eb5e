"""Reproducible image/mask perturbations in physical units (PET-aware).

Every perturbation works on an ``(image, mask)`` pair of 3-D SimpleITK images on the same grid
and comes in two kinds:

* a **deterministic** transform (``GaussianNoise``, ``Rotate`` ...) whose parameters are concrete
  numbers (noise transforms also carry the ``seed`` of their noise realisation), and
* a **random** counterpart (``RandomGaussianNoise``, ``RandomRotate`` ...) that draws concrete
  parameters from ranges with its own ``np.random.default_rng(random_state)`` and then applies the
  deterministic transform.

Calling any transform returns ``(image, mask, records)``: ``records`` is a list of JSON-serialisable
dicts ``{"name": "GaussianNoise", "params": {...}}``, one per deterministic step actually applied,
so that :func:`replay` reproduces the perturbed pair exactly.  :class:`Compose` chains transforms
and gives each child its own seed; :func:`get_chain` builds the named chains of Zwanenburg et al.
(Sci Rep 2019), e.g. ``"NTCV"`` (noise + translation + contour randomisation + volume adaptation).

Conventions: the image is returned as float32; the mask is binary (non-zero voxels are the
region of interest) and returned as uint8 with values 0/1.  Voxels brought in from outside the
field of view take the image's minimum value.
"""

from __future__ import annotations

import math
import numbers
import tomllib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from sitekit._typing import PathLike
from sitekit._validation import check_number, check_option, check_random_state
from sitekit.exceptions import CorruptFileError, DataWarning, MissingFileError, ValidationError

__all__ = [
    "Perturbation",
    "RandomPerturbation",
    "GaussianNoise",
    "RandomGaussianNoise",
    "CountNoise",
    "RandomCountNoise",
    "GaussianBlur",
    "RandomGaussianBlur",
    "Resample",
    "RandomResample",
    "IntensityScale",
    "RandomIntensityScale",
    "Rotate",
    "RandomRotate",
    "Translate",
    "RandomTranslate",
    "MaskVolume",
    "RandomMaskVolume",
    "SupervoxelContour",
    "RandomSupervoxelContour",
    "Resegment",
    "RandomResegment",
    "Compose",
    "CHAIN_STEPS",
    "get_chain",
    "replay",
    "perturbation_from_config",
    "load_perturbations",
]

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_SEED_HIGH = 2**31 - 1


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _check_pair(image: sitk.Image, mask: sitk.Image, owner: str) -> tuple[sitk.Image, sitk.Image]:
    """Validate an (image, mask) pair; return (float32 image, binary uint8 mask)."""
    if not isinstance(image, sitk.Image) or not isinstance(mask, sitk.Image):
        raise ValidationError(
            f"{owner} needs SimpleITK images for 'image' and 'mask'. "
            f"Got {type(image).__name__} and {type(mask).__name__} instead; read them with "
            "sitekit.io.read_image."
        )
    if image.GetDimension() != 3 or mask.GetDimension() != 3:
        raise ValidationError(
            f"{owner} works on 3-D images. Got a {image.GetDimension()}-D image and a "
            f"{mask.GetDimension()}-D mask."
        )
    if image.GetSize() != mask.GetSize():
        raise ValidationError(
            f"The mask grid {mask.GetSize()} differs from the image grid {image.GetSize()}; "
            "resample the mask onto the image first."
        )
    for what, a, b in (
        ("spacing", image.GetSpacing(), mask.GetSpacing()),
        ("origin", image.GetOrigin(), mask.GetOrigin()),
        ("direction", image.GetDirection(), mask.GetDirection()),
    ):
        if not np.allclose(a, b, rtol=1e-4, atol=1e-4):
            raise ValidationError(
                f"The mask {what} {tuple(round(x, 4) for x in b)} differs from the image {what} "
                f"{tuple(round(x, 4) for x in a)}; resample the mask onto the image first."
            )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValidationError(f"{owner} needs a scalar image, not a vector image.")
    img = sitk.Cast(image, sitk.sitkFloat32)
    m = sitk.Cast(mask != 0, sitk.sitkUInt8)
    m.CopyInformation(img)
    return img, m


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _like(array: np.ndarray, reference: sitk.Image, dtype=np.float32) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=dtype))
    out.CopyInformation(reference)
    return out


def _mask_stats(image: sitk.Image, mask: sitk.Image, owner: str) -> np.ndarray:
    values = _array(image)[_array(mask) > 0]
    if values.size == 0:
        raise ValidationError(f"{owner} needs a non-empty mask; the mask has no voxel inside the ROI.")
    return values


def _vector3(value, *, name: str, owner: str) -> list[float]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = [value] * 3
    if not isinstance(value, Sequence | np.ndarray) or len(value) != 3:
        raise ValidationError(
            f"The '{name}' parameter of {owner} must be a number or a sequence of 3 numbers "
            f"(x, y, z). Got {value!r} instead."
        )
    return [float(check_number(v, name=name, owner=owner)) for v in value]


def _range(value, *, name: str, owner: str, low: float | None = None, high: float | None = None):
    """A (low, high) range; a single number means a fixed value."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, Sequence | np.ndarray) or len(value) != 2:
        raise ValidationError(
            f"The '{name}' parameter of {owner} must be a number or a (low, high) pair. "
            f"Got {value!r} instead."
        )
    lo, hi = (float(check_number(v, name=name, owner=owner, low=low, high=high)) for v in value)
    if lo > hi:
        raise ValidationError(
            f"The '{name}' range of {owner} must have low <= high. Got ({lo}, {hi}) instead."
        )
    return (lo, hi)


def _check_seed(seed, owner: str) -> int:
    return int(check_number(seed, name="seed", owner=owner, low=0, integer=True))


def _exactly_one(owner: str, **kwargs) -> tuple[str, Any]:
    given = {k: v for k, v in kwargs.items() if v is not None}
    if len(given) != 1:
        names = " or ".join(f"'{k}'" for k in kwargs)
        raise ValidationError(
            f"{owner} needs exactly one of {names}. Got {sorted(given) or 'none'} instead."
        )
    return next(iter(given.items()))


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


def _signed_distance(mask: sitk.Image) -> np.ndarray:
    """Signed distance (mm) to the ROI: <= 0 inside (0 on the boundary voxels), > 0 outside."""
    if not _array(mask).any():
        raise ValidationError("Mask growth/shrinkage needs a non-empty mask.")
    dist = sitk.SignedMaurerDistanceMap(
        mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    return _array(dist)


# --------------------------------------------------------------------------------------------
# base classes
# --------------------------------------------------------------------------------------------
_REGISTRY: dict[str, type] = {}


class Perturbation:
    """Base class of the deterministic perturbations.

    Subclasses store their keyword-only parameters as attributes of the same name, list them in
    ``_param_names`` and implement ``_apply(image, mask) -> (image, mask)``.  Calling the object
    validates the pair, applies it and returns ``(image, mask, records)``.
    """

    _param_names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def get_params(self) -> dict[str, Any]:
        """Return the parameters as a JSON-serialisable dict."""
        return {name: _jsonable(getattr(self, name)) for name in self._param_names}

    def to_config(self) -> dict[str, Any]:
        """Return ``{"name": class name, "params": get_params()}`` (what the records hold)."""
        return {"name": type(self).__name__, "params": self.get_params()}

    def clone(self, **overrides) -> Perturbation:
        """Return a new transform of the same class with some parameters replaced."""
        params = {name: getattr(self, name) for name in self._param_names}
        params.update(overrides)
        return type(self)(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image, list[dict]]:
        """Apply to ``(image, mask)``.

        Returns
        -------
        image : SimpleITK.Image (float32)
        mask : SimpleITK.Image (uint8, 0/1)
        records : list of dict
            ``[{"name": ..., "params": {...}}]``, the exact parameters applied.
        """
        img, m = _check_pair(image, mask, type(self).__name__)
        img, m = self._apply(img, m)
        return img, m, [self.to_config()]

    def _apply(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
        """Apply to a validated pair (float32 image, uint8 0/1 mask)."""
        raise TypeError(f"{type(self).__name__} does not define _apply.")


class RandomPerturbation(Perturbation):
    """Base class of the random perturbations.

    Subclasses implement ``_draw(rng, image, mask) -> Perturbation`` returning the concrete
    deterministic transform.  The generator is ``np.random.default_rng(random_state)``, created
    on first use and advanced by every call, so repeated calls give different draws and the
    same ``random_state`` gives the same sequence.
    """

    def __init__(self, *, random_state=None) -> None:
        self.random_state = random_state

    def _generator(self) -> np.random.Generator:
        if getattr(self, "_rng", None) is None:
            self._rng = check_random_state(self.random_state)
        return self._rng

    def draw(self, image: sitk.Image, mask: sitk.Image) -> Perturbation:
        """Draw the concrete deterministic transform for this pair (advances the generator)."""
        img, m = _check_pair(image, mask, type(self).__name__)
        return self._draw(self._generator(), img, m)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if isinstance(self.random_state, np.random.Generator):
            params["random_state"] = None
        return params

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image, list[dict]]:
        img, m = _check_pair(image, mask, type(self).__name__)
        concrete = self._draw(self._generator(), img, m)
        return concrete(img, m)

    def _draw(self, rng, image, mask) -> Perturbation:
        """Return the concrete deterministic transform (Compose overrides __call__ instead)."""
        raise TypeError(f"{type(self).__name__} does not define _draw.")


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_HIGH))


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------
class GaussianNoise(Perturbation):
    """Additive Gaussian noise.

    Parameters
    ----------
    cov : float, optional
        Noise SD as a fraction of the mean intensity inside the mask (coefficient of variation).
    sd : float, optional
        Noise SD in image units (e.g. SUV).  Give exactly one of ``cov`` and ``sd``.
    seed : int, default=0
        Seed of the noise realisation (stored in the record).
    """

    _param_names = ("cov", "sd", "seed")

    def __init__(self, *, cov: float | None = None, sd: float | None = None, seed: int = 0) -> None:
        self.cov = cov
        self.sd = sd
        self.seed = seed

    def _apply(self, image, mask):
        owner = type(self).__name__
        key, value = _exactly_one(owner, cov=self.cov, sd=self.sd)
        check_number(value, name=key, owner=owner, low=0)
        seed = _check_seed(self.seed, owner)
        arr = _array(image).astype(np.float64)
        sd = float(value)
        if key == "cov":
            sd = float(value) * abs(float(_mask_stats(image, mask, owner).mean()))
        noise = np.random.default_rng(seed).standard_normal(arr.shape)
        return _like(arr + sd * noise, image), mask


class RandomGaussianNoise(RandomPerturbation):
    """Additive Gaussian noise with a COV drawn uniformly from ``cov``.

    Parameters
    ----------
    cov : (float, float), default=(0.05, 0.15)
        Range of the coefficient of variation (relative to the mean inside the mask).
    random_state : int, Generator or None, default=None
    """

    _param_names = ("cov", "random_state")

    def __init__(self, *, cov=(0.05, 0.15), random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.cov = cov

    def _draw(self, rng, image, mask):
        lo, hi = _range(self.cov, name="cov", owner=type(self).__name__, low=0)
        return GaussianNoise(cov=float(rng.uniform(lo, hi)), seed=_seed(rng))


class CountNoise(Perturbation):
    """Signal-dependent (Poisson, count-like) noise, as from a shorter PET acquisition.

    Each voxel value ``x`` is replaced by ``Poisson(g * x) / g`` (the mean is preserved and the
    variance grows with the signal); ``g`` is chosen so that the COV at the mean intensity inside
    the mask equals ``cov``.

    Parameters
    ----------
    cov : float, optional
        Added coefficient of variation at the mean intensity inside the mask.
    scan_time : float in (0, 1], optional
        Fraction of the original scan time.  The original noise COV ``base_cov`` grows to
        ``base_cov / sqrt(scan_time)``, so the added COV is ``base_cov * sqrt(1/scan_time - 1)``.
        Give exactly one of ``cov`` and ``scan_time``.
    base_cov : float, default=0.10
        COV of the original image at the reference level (a typical liver COV).
    seed : int, default=0
        Seed of the noise realisation.
    """

    _param_names = ("cov", "scan_time", "base_cov", "seed")

    def __init__(self, *, cov: float | None = None, scan_time: float | None = None,
                 base_cov: float = 0.10, seed: int = 0) -> None:
        self.cov = cov
        self.scan_time = scan_time
        self.base_cov = base_cov
        self.seed = seed

    def _apply(self, image, mask):
        owner = type(self).__name__
        key, value = _exactly_one(owner, cov=self.cov, scan_time=self.scan_time)
        seed = _check_seed(self.seed, owner)
        if key == "cov":
            cov = float(check_number(value, name="cov", owner=owner, low=0))
        else:
            t = float(check_number(value, name="scan_time", owner=owner, low=0, high=1,
                                   low_inclusive=False))
            base = float(check_number(self.base_cov, name="base_cov", owner=owner, low=0))
            cov = base * math.sqrt(1.0 / t - 1.0)
        if cov == 0:
            return image, mask
        level = float(_mask_stats(image, mask, owner).mean())
        if level <= 0:
            raise ValidationError(
                f"{owner} needs a positive mean intensity inside the mask to set the count level; "
                f"got {level:.4g}. Use GaussianNoise for images with negative values."
            )
        gain = 1.0 / (level * cov**2)
        arr = _array(image).astype(np.float64)
        pos = np.clip(arr, 0.0, None)
        counts = np.random.default_rng(seed).poisson(pos * gain)
        return _like(counts / gain + (arr - pos), image), mask


class RandomCountNoise(RandomPerturbation):
    """Count-like noise with the COV (or the scan-time fraction) drawn uniformly.

    Parameters
    ----------
    cov : (float, float), optional, default=(0.05, 0.15)
        Range of the added COV (ignored when ``scan_time`` is given).
    scan_time : (float, float), optional
        Range of the scan-time fraction, e.g. ``(0.5, 1.0)``.
    base_cov : float, default=0.10
        COV of the original image (used with ``scan_time``).
    random_state : int, Generator or None, default=None
    """

    _param_names = ("cov", "scan_time", "base_cov", "random_state")

    def __init__(self, *, cov=(0.05, 0.15), scan_time=None, base_cov: float = 0.10,
                 random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.cov = cov
        self.scan_time = scan_time
        self.base_cov = base_cov

    def _draw(self, rng, image, mask):
        owner = type(self).__name__
        if self.scan_time is not None:
            lo, hi = _range(self.scan_time, name="scan_time", owner=owner, low=0, high=1)
            t = float(rng.uniform(lo, hi))
            if t <= 0:
                raise ValidationError(f"The 'scan_time' range of {owner} must be > 0.")
            return CountNoise(scan_time=t, base_cov=self.base_cov, seed=_seed(rng))
        lo, hi = _range(self.cov, name="cov", owner=owner, low=0)
        return CountNoise(cov=float(rng.uniform(lo, hi)), seed=_seed(rng))


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
        interp = _INTERPOLATORS[check_option(self.interpolator, _INTERPOLATORS, name="interpolator", owner=owner)]
        method = check_option(self.mask_method, ("fractional", "nearest"), name="mask_method", owner=owner)
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
        img = _resample_image(image, ref, identity, interp)
        if method == "fractional":
            m = _fractional_mask(mask, ref, identity)
        else:
            m = sitk.Resample(mask, ref, identity, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        return img, m


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
# intensity
# --------------------------------------------------------------------------------------------
class IntensityScale(Perturbation):
    """Calibration error: multiply the image by ``1 + error_percent / 100``.

    Parameters
    ----------
    error_percent : float
        Calibration error in percent (``+5`` scales every SUV by 1.05).
    """

    _param_names = ("error_percent",)

    def __init__(self, *, error_percent: float = 0.0) -> None:
        self.error_percent = error_percent

    def _apply(self, image, mask):
        e = float(check_number(self.error_percent, name="error_percent", owner="IntensityScale",
                               low=-100, low_inclusive=False))
        arr = _array(image).astype(np.float64) * (1.0 + e / 100.0)
        return _like(arr, image), mask


class RandomIntensityScale(RandomPerturbation):
    """Calibration error drawn uniformly from ``error_percent``.

    Parameters
    ----------
    error_percent : (float, float), default=(-5.0, 5.0)
    random_state : int, Generator or None, default=None
    """

    _param_names = ("error_percent", "random_state")

    def __init__(self, *, error_percent=(-5.0, 5.0), random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.error_percent = error_percent

    def _draw(self, rng, image, mask):
        lo, hi = _range(self.error_percent, name="error_percent", owner=type(self).__name__, low=-99)
        return IntensityScale(error_percent=float(rng.uniform(lo, hi)))


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


def _warp(image, mask, transform, interpolator, mask_method, owner):
    interp = _INTERPOLATORS[check_option(interpolator, _INTERPOLATORS, name="interpolator", owner=owner)]
    method = check_option(mask_method, ("fractional", "nearest"), name="mask_method", owner=owner)
    img = _resample_image(image, image, transform, interp)
    if method == "fractional":
        m = _fractional_mask(mask, image, transform)
    else:
        m = sitk.Resample(mask, image, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
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


# --------------------------------------------------------------------------------------------
# mask
# --------------------------------------------------------------------------------------------
class MaskVolume(Perturbation):
    """Volume adaptation: grow (> 0) or shrink (< 0) the mask (image unchanged).

    Parameters
    ----------
    distance_mm : float, optional
        Signed margin in mm: voxels whose centre lies within this distance of the ROI are added
        (negative: voxels within ``-distance_mm`` of the background are removed).
    fraction : float, optional
        Relative volume change (``0.1``: 10 % larger), reached by adding/removing the voxels
        closest to the boundary.  Give exactly one of the two.
    """

    _param_names = ("distance_mm", "fraction")

    def __init__(self, *, distance_mm: float | None = None, fraction: float | None = None) -> None:
        self.distance_mm = distance_mm
        self.fraction = fraction

    def _apply(self, image, mask):
        owner = type(self).__name__
        key, value = _exactly_one(owner, distance_mm=self.distance_mm, fraction=self.fraction)
        dist = _signed_distance(mask)
        original = _array(mask) > 0
        if key == "distance_mm":
            d = float(check_number(value, name="distance_mm", owner=owner))
            new = dist <= d if d >= 0 else dist <= d - 1e-9
            if d == 0:
                new = original
        else:
            f = float(check_number(value, name="fraction", owner=owner, low=-1, low_inclusive=False))
            target = int(round(original.sum() * (1.0 + f)))
            target = min(max(target, 1), dist.size)
            order = np.argsort(dist, axis=None, kind="stable")
            new = np.zeros(dist.size, dtype=bool)
            new[order[:target]] = True
            new = new.reshape(dist.shape)
        if not new.any():
            warnings.warn(
                f"{owner}({key}={value}) would remove the whole mask; the voxel deepest inside "
                "the ROI is kept.",
                DataWarning,
                stacklevel=3,
            )
            new = np.zeros(dist.shape, dtype=bool)
            new.flat[int(np.argmin(dist))] = True
        return image, _like(new, mask, np.uint8)


class RandomMaskVolume(RandomPerturbation):
    """Volume adaptation with the volume fraction (or margin in mm) drawn uniformly.

    Parameters
    ----------
    fraction : (float, float), default=(-0.2, 0.2)
        Range of the relative volume change (ignored when ``distance_mm`` is given).
    distance_mm : (float, float), optional
        Range of the signed margin in mm.
    random_state : int, Generator or None, default=None
    """

    _param_names = ("fraction", "distance_mm", "random_state")

    def __init__(self, *, fraction=(-0.2, 0.2), distance_mm=None, random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.fraction = fraction
        self.distance_mm = distance_mm

    def _draw(self, rng, image, mask):
        owner = type(self).__name__
        if self.distance_mm is not None:
            lo, hi = _range(self.distance_mm, name="distance_mm", owner=owner)
            return MaskVolume(distance_mm=float(rng.uniform(lo, hi)))
        lo, hi = _range(self.fraction, name="fraction", owner=owner, low=-0.99)
        return MaskVolume(fraction=float(rng.uniform(lo, hi)))


class SupervoxelContour(Perturbation):
    """Contour randomisation with supervoxels (Zwanenburg et al. 2019).

    The image around the ROI is over-segmented into supervoxels (SimpleITK ``SLIC``); each
    supervoxel that overlaps the ROI is kept with a probability equal to its overlap fraction
    (fully inside: always; outside: never).  The new mask is the union of the kept supervoxels.

    Parameters
    ----------
    seed : int, default=0
        Seed of the inclusion draws.
    supervoxel_mm : float, optional
        Supervoxel grid size in mm; default: about 20 supervoxels across the ROI volume
        (at least 2 voxels).
    compactness : float, default=10.0
        SLIC spatial proximity weight (intensities are scaled to 0-100 within the crop).
    """

    _param_names = ("seed", "supervoxel_mm", "compactness")

    def __init__(self, *, seed: int = 0, supervoxel_mm: float | None = None,
                 compactness: float = 10.0) -> None:
        self.seed = seed
        self.supervoxel_mm = supervoxel_mm
        self.compactness = compactness

    def _apply(self, image, mask):
        owner = type(self).__name__
        seed = _check_seed(self.seed, owner)
        compact = float(check_number(self.compactness, name="compactness", owner=owner, low=0))
        m = _array(mask) > 0
        if not m.any():
            raise ValidationError(f"{owner} needs a non-empty mask.")
        spacing_zyx = np.array(image.GetSpacing())[::-1]
        if self.supervoxel_mm is None:
            volume = m.sum() * float(np.prod(spacing_zyx))
            size_mm = max((volume / 20.0) ** (1.0 / 3.0), 2.0 * float(spacing_zyx.min()))
        else:
            size_mm = float(check_number(self.supervoxel_mm, name="supervoxel_mm", owner=owner,
                                         low=0, low_inclusive=False))
        grid_zyx = np.maximum(1, np.round(size_mm / spacing_zyx)).astype(int)
        # crop: ROI bounding box plus two supervoxels on each side
        idx = np.nonzero(m)
        lo = np.maximum(0, np.array([i.min() for i in idx]) - 2 * grid_zyx)
        hi = np.minimum(m.shape, np.array([i.max() for i in idx]) + 1 + 2 * grid_zyx)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        crop = _array(image)[sl].astype(np.float64)
        p_lo, p_hi = np.percentile(crop, [1, 99])
        scaled = (np.clip(crop, p_lo, p_hi) - p_lo) / (p_hi - p_lo if p_hi > p_lo else 1.0) * 100.0
        crop_img = sitk.GetImageFromArray(scaled.astype(np.float32))
        crop_img.SetSpacing(image.GetSpacing())
        labels = _array(sitk.SLIC(crop_img, superGridSize=[int(g) for g in grid_zyx[::-1]],
                                  spatialProximityWeight=compact, maximumNumberOfIterations=5,
                                  enforceConnectivity=True, initializationPerturbation=True))
        labels = labels.astype(np.int64)
        m_crop = m[sl]
        n_lab = int(labels.max()) + 1
        total = np.bincount(labels.ravel(), minlength=n_lab)
        inside = np.bincount(labels.ravel(), weights=m_crop.ravel().astype(float), minlength=n_lab)
        overlap = np.divide(inside, total, out=np.zeros(n_lab), where=total > 0)
        draws = np.random.default_rng(seed).uniform(size=n_lab)
        keep = draws < overlap
        if not keep[labels].any():
            keep = overlap >= overlap.max()
        new = np.zeros(m.shape, dtype=bool)
        new[sl] = keep[labels]
        return image, _like(new, mask, np.uint8)


class RandomSupervoxelContour(RandomPerturbation):
    """Contour randomisation with a fresh seed per call.

    Parameters
    ----------
    supervoxel_mm : float, optional
    compactness : float, default=10.0
    random_state : int, Generator or None, default=None
    """

    _param_names = ("supervoxel_mm", "compactness", "random_state")

    def __init__(self, *, supervoxel_mm: float | None = None, compactness: float = 10.0,
                 random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.supervoxel_mm = supervoxel_mm
        self.compactness = compactness

    def _draw(self, rng, image, mask):
        return SupervoxelContour(seed=_seed(rng), supervoxel_mm=self.supervoxel_mm,
                                 compactness=self.compactness)


class Resegment(Perturbation):
    """Re-segmentation by a threshold: a percentage of SUVmax or an absolute value.

    The new mask holds the voxels at or above the threshold within ``margin_mm`` of the original
    ROI that are connected (26-neighbourhood) to the hottest ROI voxel.  If no voxel qualifies the
    original mask is kept with a :class:`~sitekit.exceptions.DataWarning`.

    Parameters
    ----------
    percent : float, optional
        Threshold as a percentage of the maximum inside the original mask (e.g. 40-50).
    threshold : float, optional
        Absolute threshold in image units (e.g. SUV 2.5).  Give exactly one of the two.
    margin_mm : float, default=10.0
        How far outside the original ROI the new ROI may reach.
    """

    _param_names = ("percent", "threshold", "margin_mm")

    def __init__(self, *, percent: float | None = None, threshold: float | None = None,
                 margin_mm: float = 10.0) -> None:
        self.percent = percent
        self.threshold = threshold
        self.margin_mm = margin_mm

    def _apply(self, image, mask):
        owner = type(self).__name__
        key, value = _exactly_one(owner, percent=self.percent, threshold=self.threshold)
        margin = float(check_number(self.margin_mm, name="margin_mm", owner=owner, low=0))
        arr = _array(image)
        m = _array(mask) > 0
        roi = _mask_stats(image, mask, owner)
        if key == "percent":
            t = float(check_number(value, name="percent", owner=owner, low=0, high=100)) / 100.0 * float(roi.max())
        else:
            t = float(check_number(value, name="threshold", owner=owner))
        region = _signed_distance(mask) <= margin
        cand = region & (arr >= t)
        hot = np.unravel_index(int(np.argmax(np.where(m, arr, -np.inf))), arr.shape)
        if not cand[hot]:
            warnings.warn(
                f"{owner}({key}={value}): no voxel of the ROI reaches the threshold {t:.4g} "
                f"(ROI maximum {float(roi.max()):.4g}); the original mask is kept.",
                DataWarning,
                stacklevel=3,
            )
            return image, mask
        cc = _array(sitk.ConnectedComponent(_like(cand, mask, np.uint8), True))
        new = cc == cc[hot]
        return image, _like(new, mask, np.uint8)


class RandomResegment(RandomPerturbation):
    """Re-segmentation with the threshold drawn uniformly.

    Parameters
    ----------
    percent : (float, float), default=(40.0, 50.0)
        Range of the percentage of SUVmax (ignored when ``threshold`` is given).
    threshold : (float, float), optional
        Range of the absolute threshold.
    margin_mm : float, default=10.0
    random_state : int, Generator or None, default=None
    """

    _param_names = ("percent", "threshold", "margin_mm", "random_state")

    def __init__(self, *, percent=(40.0, 50.0), threshold=None, margin_mm: float = 10.0,
                 random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.percent = percent
        self.threshold = threshold
        self.margin_mm = margin_mm

    def _draw(self, rng, image, mask):
        owner = type(self).__name__
        if self.threshold is not None:
            lo, hi = _range(self.threshold, name="threshold", owner=owner)
            return Resegment(threshold=float(rng.uniform(lo, hi)), margin_mm=self.margin_mm)
        lo, hi = _range(self.percent, name="percent", owner=owner, low=0, high=100)
        return Resegment(percent=float(rng.uniform(lo, hi)), margin_mm=self.margin_mm)


# --------------------------------------------------------------------------------------------
# composition, chains, replay, configuration
# --------------------------------------------------------------------------------------------
class Compose(RandomPerturbation):
    """Apply transforms in order; each random child gets its own seed.

    The seeds of the children are drawn from ``np.random.default_rng(random_state)`` when the
    chain is built, so ``Compose([...], random_state=0)`` is reproducible whatever the children's
    own ``random_state`` was.  Calling returns ``(image, mask, records)`` with one record per
    deterministic step.

    Parameters
    ----------
    transforms : sequence of Perturbation
    random_state : int, Generator or None, default=None
    """

    _param_names = ("transforms", "random_state")

    def __init__(self, transforms: Sequence[Perturbation], *, random_state=None) -> None:
        super().__init__(random_state=random_state)
        self.transforms = transforms

    def _children(self) -> list[Perturbation]:
        if getattr(self, "_seeded", None) is None:
            if isinstance(self.transforms, Perturbation) or not isinstance(self.transforms, Sequence):
                raise ValidationError(
                    f"The 'transforms' parameter of Compose must be a list of perturbations. "
                    f"Got {self.transforms!r} instead."
                )
            rng = self._generator()
            children = []
            for t in self.transforms:
                if not isinstance(t, Perturbation):
                    raise ValidationError(
                        f"Compose got {t!r}, which is not a sitekit perturbation; use the classes "
                        "of sitekit.robustness.perturbations."
                    )
                seed = _seed(rng)
                children.append(t.clone(random_state=seed) if isinstance(t, RandomPerturbation) else t)
            self._seeded = children
        return self._seeded

    def get_params(self) -> dict[str, Any]:
        return {
            "transforms": [t.to_config() for t in self.transforms],
            "random_state": None if isinstance(self.random_state, np.random.Generator)
            else _jsonable(self.random_state),
        }

    def clone(self, **overrides) -> Compose:
        params = {"transforms": list(self.transforms), "random_state": self.random_state}
        params.update(overrides)
        return Compose(params["transforms"], random_state=params["random_state"])

    def __call__(self, image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image, list[dict]]:
        img, m = _check_pair(image, mask, "Compose")
        records: list[dict] = []
        for child in self._children():
            img, m, rec = child(img, m)
            records.extend(rec)
        return img, m, records


def _pet_chain_steps() -> dict[str, tuple[str, Callable[[], Perturbation]]]:
    return {
        "R": ("rotation about the mask centroid, -15..15 deg (z)", lambda: RandomRotate()),
        "T": ("sub-voxel translation, 0..1 voxel per axis", lambda: RandomTranslate()),
        "S": ("resampling to 2..5 mm isotropic voxels", lambda: RandomResample()),
        "B": ("Gaussian post-filter, 2..8 mm FWHM", lambda: RandomGaussianBlur()),
        "I": ("calibration error, -5..+5 %", lambda: RandomIntensityScale()),
        "N": ("additive Gaussian noise, COV 0.05..0.15", lambda: RandomGaussianNoise()),
        "P": ("count-like (Poisson) noise, COV 0.05..0.15", lambda: RandomCountNoise()),
        "G": ("re-segmentation at 40..50 % of SUVmax", lambda: RandomResegment()),
        "C": ("contour randomisation with supervoxels", lambda: RandomSupervoxelContour()),
        "V": ("volume adaptation, -20..+20 % volume", lambda: RandomMaskVolume()),
    }


#: Letter codes of :func:`get_chain` in the order they are applied, with a description.
CHAIN_STEPS: dict[str, str] = {k: v[0] for k, v in _pet_chain_steps().items()}


def get_chain(name: str, *, random_state=None) -> Compose:
    """Return a named perturbation chain (Zwanenburg et al. 2019 letter codes).

    Each letter adds one random step; the steps are applied in the fixed order of
    :data:`CHAIN_STEPS` (geometry, then resolution and intensity, then noise, then the contour),
    whatever the order of the letters.  Zwanenburg's codes: ``N`` noise, ``T`` translation,
    ``C`` contour randomisation, ``V`` volume adaptation, ``R`` rotation (e.g. ``"NTCV"``,
    ``"RNCV"``, ``"NTCVR"``); PET additions: ``P`` count noise, ``B`` post-filter, ``I``
    calibration error, ``S`` resampling, ``G`` threshold re-segmentation.

    Parameters
    ----------
    name : str
        Letter codes, case-insensitive, each at most once.
    random_state : int, Generator or None, default=None

    Returns
    -------
    Compose

    Examples
    --------
    >>> chain = get_chain("NTCV", random_state=0)
    >>> [type(t).__name__ for t in chain.transforms]
    ['RandomTranslate', 'RandomGaussianNoise', 'RandomSupervoxelContour', 'RandomMaskVolume']
    """
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(
            f"The chain name must be a non-empty string of letter codes {''.join(CHAIN_STEPS)}. "
            f"Got {name!r} instead."
        )
    letters = name.strip().upper()
    unknown = sorted(set(letters) - set(CHAIN_STEPS))
    if unknown:
        raise ValidationError(
            f"Unknown perturbation code(s) {unknown} in chain '{name}'; known codes: "
            + ", ".join(f"{k} ({v})" for k, v in CHAIN_STEPS.items())
        )
    repeated = sorted({c for c in letters if letters.count(c) > 1})
    if repeated:
        raise ValidationError(f"Chain '{name}' repeats the code(s) {repeated}; give each once.")
    steps = _pet_chain_steps()
    return Compose([steps[c][1]() for c in CHAIN_STEPS if c in letters], random_state=random_state)


def perturbation_from_config(config: Mapping | Sequence | str, *, random_state=None) -> Perturbation:
    """Build a perturbation from a configuration (as parsed from TOML/JSON).

    Accepted forms:

    * a chain name, ``"NTCV"``, or ``{"chain": "NTCV"}``;
    * a record/config ``{"name": "RandomGaussianNoise", "params": {"cov": [0.05, 0.15]}}`` or a
      flat ``{"name": "RandomGaussianNoise", "cov": [0.05, 0.15]}``;
    * a list of such entries, or ``{"perturbation": [...]}`` (TOML ``[[perturbation]]`` tables),
      which becomes a :class:`Compose`.

    ``random_state`` seeds the resulting chain (the top-level ``Compose``) unless the configuration
    itself gives ``random_state``.
    """
    if isinstance(config, str):
        return get_chain(config, random_state=random_state)
    if isinstance(config, Mapping):
        if "chain" in config:
            extra = sorted(set(config) - {"chain", "random_state"})
            if extra:
                raise ValidationError(
                    f"A perturbation file with 'chain' takes no other keys; got {extra}. Use "
                    "[[perturbation]] tables to set ranges."
                )
            return get_chain(config["chain"], random_state=config.get("random_state", random_state))
        if "perturbation" in config or "perturbations" in config:
            items = config.get("perturbation", config.get("perturbations"))
            if not isinstance(items, Sequence) or isinstance(items, str) or not items:
                raise ValidationError("'perturbation' must be a non-empty list of tables.")
            return Compose([_from_entry(e) for e in items],
                           random_state=config.get("random_state", random_state))
        return _from_entry(config)
    if isinstance(config, Sequence):
        return Compose([_from_entry(e) for e in config], random_state=random_state)
    raise ValidationError(f"Cannot build a perturbation from {config!r}.")


def _from_entry(entry) -> Perturbation:
    if isinstance(entry, Perturbation):
        return entry
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ValidationError(
            f"Each perturbation entry needs a 'name' (e.g. name = \"RandomGaussianNoise\"). "
            f"Got {entry!r} instead."
        )
    name = entry["name"]
    check_option(name, sorted(_REGISTRY), name="name", owner="a perturbation entry")
    params = dict(entry["params"]) if "params" in entry else {k: v for k, v in entry.items() if k != "name"}
    cls = _REGISTRY[name]
    if cls is Compose:
        return Compose([_from_entry(e) for e in params.get("transforms", [])],
                       random_state=params.get("random_state"))
    allowed = set(cls._param_names)
    bad = sorted(set(params) - allowed)
    if bad:
        raise ValidationError(
            f"{name} has no parameter(s) {bad}; its parameters are {sorted(allowed)}."
        )
    return cls(**params)


def replay(records: Sequence[Mapping], image: sitk.Image,
           mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """Re-apply recorded deterministic steps exactly.

    Parameters
    ----------
    records : list of dict
        The records returned by a perturbation call (``[{"name": ..., "params": {...}}, ...]``),
        possibly after a JSON round trip.
    image, mask : SimpleITK.Image

    Returns
    -------
    image, mask : SimpleITK.Image
        Identical to the pair the recorded run produced.
    """
    if isinstance(records, Mapping):
        records = [records]
    img, m = _check_pair(image, mask, "replay")
    for rec in records:
        step = _from_entry(rec)
        if isinstance(step, RandomPerturbation):
            raise ValidationError(
                f"replay() takes records of deterministic steps; '{rec.get('name')}' is random. "
                "Use the records a perturbation call returned."
            )
        img, m, _ = step(img, m)
    return img, m


def load_perturbations(path: PathLike, *, random_state=None) -> Perturbation:
    """Read a perturbation TOML file and build the perturbation it describes.

    The file holds either a named chain::

        chain = "NTCV"

    or a list of steps, applied in the order given (each ``name`` is a class of this module,
    the other keys its parameters; ranges as two-element lists)::

        [[perturbation]]
        name = "RandomGaussianNoise"
        cov = [0.05, 0.15]

        [[perturbation]]
        name = "RandomMaskVolume"
        fraction = [-0.2, 0.2]

    An optional top-level ``random_state`` seeds the chain; otherwise ``random_state`` does.

    Raises
    ------
    MissingFileError
        The file does not exist.
    CorruptFileError
        The file is not valid TOML.
    ValidationError
        Unknown chain codes, class names or parameters.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(
            f"Perturbation file '{p}' does not exist; write a TOML file with chain = \"NTCV\" or "
            "[[perturbation]] tables (see the README)."
        )
    try:
        config = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Perturbation file '{p}' is not valid TOML: {exc}") from exc
    if not config:
        raise ValidationError(
            f"Perturbation file '{p}' is empty; give chain = \"NTCV\" or [[perturbation]] tables."
        )
    try:
        return perturbation_from_config(config, random_state=random_state)
    except ValidationError as exc:
        raise ValidationError(f"Perturbation file '{p}': {exc}") from exc
