"""Base classes of the perturbations and the helpers every family uses.

:class:`Perturbation` (deterministic: concrete parameters, ``_apply``) and
:class:`RandomPerturbation` (draws a concrete :class:`Perturbation` from its own
``np.random.default_rng(random_state)``); every concrete class registers itself by name, so a
record ``{"name": ..., "params": ...}`` can be rebuilt (:func:`~sitekit.robustness.perturbations.replay`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from sitekit._json import to_jsonable
from sitekit._validation import check_number, check_random_state
from sitekit.exceptions import ValidationError

__all__ = ["Perturbation", "RandomPerturbation"]

_SEED_HIGH = 2**31 - 1

#: Every perturbation class by name (filled by ``Perturbation.__init_subclass__``).
_REGISTRY: dict[str, type] = {}


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


def _noise_seed(random_state, owner: str) -> int:
    """The int ``random_state`` of a deterministic noise transform (recorded, so replayable)."""
    return int(check_number(random_state, name="random_state", owner=owner, low=0, integer=True))


def _exactly_one(owner: str, **kwargs) -> tuple[str, Any]:
    given = {k: v for k, v in kwargs.items() if v is not None}
    if len(given) != 1:
        names = " or ".join(f"'{k}'" for k in kwargs)
        raise ValidationError(
            f"{owner} needs exactly one of {names}. Got {sorted(given) or 'none'} instead."
        )
    return next(iter(given.items()))


# --------------------------------------------------------------------------------------------
# base classes
# --------------------------------------------------------------------------------------------
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
        return {name: to_jsonable(getattr(self, name), nonfinite="keep") for name in self._param_names}

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


