"""Mask perturbations: volume adaptation, supervoxel contour randomisation, re-segmentation."""

from __future__ import annotations

import warnings

import numpy as np
import SimpleITK as sitk

from sitekit._validation import check_number
from sitekit.exceptions import DataWarning, ValidationError
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

__all__ = ['MaskVolume', 'RandomMaskVolume', 'SupervoxelContour', 'RandomSupervoxelContour', 'Resegment', 'RandomResegment']

def _signed_distance(mask: sitk.Image) -> np.ndarray:
    """Signed distance (mm) to the ROI: <= 0 inside (0 on the boundary voxels), > 0 outside."""
    if not _array(mask).any():
        raise ValidationError("Mask growth/shrinkage needs a non-empty mask.")
    dist = sitk.SignedMaurerDistanceMap(
        mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    return _array(dist)


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
    random_state : int, default=0
        Seed of the inclusion draws (stored in the record).
    supervoxel_mm : float, optional
        Supervoxel grid size in mm; default: about 20 supervoxels across the ROI volume
        (at least 2 voxels).
    compactness : float, default=10.0
        SLIC spatial proximity weight (intensities are scaled to 0-100 within the crop).
    """

    _param_names = ("random_state", "supervoxel_mm", "compactness")

    def __init__(self, *, random_state: int = 0, supervoxel_mm: float | None = None,
                 compactness: float = 10.0) -> None:
        self.random_state = random_state
        self.supervoxel_mm = supervoxel_mm
        self.compactness = compactness

    def _apply(self, image, mask):
        owner = type(self).__name__
        seed = _noise_seed(self.random_state, owner)
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
    """Contour randomisation with fresh inclusion draws per call.

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
        return SupervoxelContour(random_state=_seed(rng), supervoxel_mm=self.supervoxel_mm,
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


