"""Classical PET segmentation baselines: 41 % of SUVmax, and a fixed SUV threshold."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sitekit._validation import check_number
from sitekit.exceptions import ValidationError
from sitekit.robustness.models._base import check_image, mask_like

__all__ = ["ThresholdSegmenter", "FixedThresholdSegmenter", "bounding_region"]

_STRUCTURE_26 = np.ones((3, 3, 3), bool)


def bounding_region(mask: sitk.Image, margin_mm: float) -> sitk.Image:
    """Box around the non-zero voxels of ``mask``, grown by ``margin_mm`` per side (uint8 0/1).

    The region an observer draws around a lesion before thresholding; an empty mask gives the
    whole image.

    Parameters
    ----------
    mask : SimpleITK.Image
    margin_mm : float

    Returns
    -------
    SimpleITK.Image
    """
    m = sitk.GetArrayViewFromImage(mask) != 0
    box = np.zeros(m.shape, bool)
    if not m.any():
        box[...] = True
        return mask_like(box, mask)
    grow = [int(np.ceil(margin_mm / s - 1e-9)) for s in reversed(mask.GetSpacing())]
    idx = np.nonzero(m)
    sl = tuple(slice(max(0, int(i.min()) - g), int(i.max()) + g + 1) for i, g in zip(idx, grow))
    box[sl] = True
    return mask_like(box, mask)


def _region(region, img: sitk.Image, owner: str) -> np.ndarray:
    if region is None:
        return np.ones(img.GetSize()[::-1], bool)
    if not isinstance(region, sitk.Image) or region.GetSize() != img.GetSize() or not np.allclose(
            region.GetSpacing(), img.GetSpacing()) or not np.allclose(region.GetOrigin(), img.GetOrigin()):
        raise ValidationError(f"The 'region' of {owner} must be a mask on the grid of the image.")
    return sitk.GetArrayViewFromImage(region) != 0


class ThresholdSegmenter:
    """EANM-guideline baseline: the connected region above a fraction of SUVmax.

    Inside the bounding region, find the hottest voxel, keep the voxels at or above
    ``fraction`` x SUVmax and return the 26-connected component that contains the hottest
    voxel (region growing from the maximum).

    Parameters
    ----------
    fraction : float in (0, 1), default=0.41
        Fraction of SUVmax (0.41 = the EANM guideline's 41 %).
    margin_mm : float, default=10.0
        When :func:`~sitekit.robustness.evaluate_segmentation` evaluates this model, the
        bounding region is the box around the reference mask grown by this margin (what an
        observer would draw around the lesion).

    Examples
    --------
    >>> import numpy as np, SimpleITK as sitk
    >>> a = np.ones((9, 9, 9), np.float32); a[3:6, 3:6, 3:6] = 10.0
    >>> mask = ThresholdSegmenter().predict(sitk.GetImageFromArray(a))
    >>> int(sitk.GetArrayFromImage(mask).sum())
    27
    """

    uses_region = True

    def __init__(self, fraction: float = 0.41, *, margin_mm: float = 10.0) -> None:
        self.fraction = float(check_number(fraction, name="fraction", owner="ThresholdSegmenter",
                                           low=0, high=1, low_inclusive=False))
        self.margin_mm = float(check_number(margin_mm, name="margin_mm", owner="ThresholdSegmenter", low=0))

    def __repr__(self) -> str:
        return f"ThresholdSegmenter(fraction={self.fraction}, margin_mm={self.margin_mm})"

    def predict(self, image: sitk.Image, region: sitk.Image | None = None) -> sitk.Image:
        """Binary mask (uint8 0/1) on the grid of ``image``.

        Parameters
        ----------
        image : SimpleITK.Image
            PET image in SUV.
        region : SimpleITK.Image, optional
            Bounding region (mask on the same grid); default the whole image.

        Returns
        -------
        SimpleITK.Image
            Empty when the region holds no finite voxel.
        """
        img = check_image(image, owner="ThresholdSegmenter")
        a = sitk.GetArrayFromImage(img)
        box = _region(region, img, "ThresholdSegmenter")
        vals = np.where(box & np.isfinite(a), a, -np.inf)
        if not np.isfinite(vals).any():
            return mask_like(np.zeros(a.shape, bool), img)
        peak = np.unravel_index(int(np.argmax(vals)), a.shape)
        above = vals >= self.fraction * vals[peak]
        labels, _ = ndimage.label(above, structure=_STRUCTURE_26)
        return mask_like(labels == labels[peak], img)


class FixedThresholdSegmenter:
    """Every voxel at or above a fixed SUV (e.g. 2.5 or 4.0), optionally inside a region.

    Parameters
    ----------
    suv : float, default=2.5
        The threshold (image units).

    Examples
    --------
    >>> import numpy as np, SimpleITK as sitk
    >>> a = np.array([[[1.0, 2.5, 4.0]]], np.float32)
    >>> sitk.GetArrayFromImage(FixedThresholdSegmenter(2.5).predict(sitk.GetImageFromArray(a))).ravel().tolist()
    [0, 1, 1]
    """

    uses_region = False

    def __init__(self, suv: float = 2.5) -> None:
        self.suv = float(check_number(suv, name="suv", owner="FixedThresholdSegmenter"))

    def __repr__(self) -> str:
        return f"FixedThresholdSegmenter(suv={self.suv})"

    def predict(self, image: sitk.Image, region: sitk.Image | None = None) -> sitk.Image:
        """Binary mask (uint8 0/1): voxels >= ``suv`` (inside ``region`` when given).

        Parameters
        ----------
        image : SimpleITK.Image
        region : SimpleITK.Image, optional

        Returns
        -------
        SimpleITK.Image
        """
        img = check_image(image, owner="FixedThresholdSegmenter")
        a = sitk.GetArrayFromImage(img)
        box = _region(region, img, "FixedThresholdSegmenter")
        return mask_like((a >= self.suv) & box, img)
