"""Intensity perturbations: additive and count-like noise, calibration error."""

from __future__ import annotations

import math

import numpy as np

from sitekit._validation import check_number
from sitekit.exceptions import ValidationError
from sitekit.robustness.perturbations._base import (
    Perturbation,
    RandomPerturbation,
    _array,
    _exactly_one,
    _like,
    _mask_stats,
    _noise_seed,
    _range,
    _seed,
)

__all__ = ['GaussianNoise', 'RandomGaussianNoise', 'CountNoise', 'RandomCountNoise', 'IntensityScale', 'RandomIntensityScale']

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
    random_state : int, default=0
        Seed of the noise realisation (stored in the record, so the run replays exactly).
    """

    _param_names = ("cov", "sd", "random_state")

    def __init__(self, *, cov: float | None = None, sd: float | None = None,
                 random_state: int = 0) -> None:
        self.cov = cov
        self.sd = sd
        self.random_state = random_state

    def _apply(self, image, mask):
        owner = type(self).__name__
        key, value = _exactly_one(owner, cov=self.cov, sd=self.sd)
        check_number(value, name=key, owner=owner, low=0)
        seed = _noise_seed(self.random_state, owner)
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
        return GaussianNoise(cov=float(rng.uniform(lo, hi)), random_state=_seed(rng))


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
    random_state : int, default=0
        Seed of the noise realisation (stored in the record).
    """

    _param_names = ("cov", "scan_time", "base_cov", "random_state")

    def __init__(self, *, cov: float | None = None, scan_time: float | None = None,
                 base_cov: float = 0.10, random_state: int = 0) -> None:
        self.cov = cov
        self.scan_time = scan_time
        self.base_cov = base_cov
        self.random_state = random_state

    def _apply(self, image, mask):
        owner = type(self).__name__
        key, value = _exactly_one(owner, cov=self.cov, scan_time=self.scan_time)
        seed = _noise_seed(self.random_state, owner)
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
            return CountNoise(scan_time=t, base_cov=self.base_cov, random_state=_seed(rng))
        lo, hi = _range(self.cov, name="cov", owner=owner, low=0)
        return CountNoise(cov=float(rng.uniform(lo, hi)), random_state=_seed(rng))



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


