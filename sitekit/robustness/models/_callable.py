"""Any Python function on numpy arrays as a segmenter."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

from sitekit._validation import check_number
from sitekit.exceptions import ValidationError
from sitekit.robustness.models._base import check_image, image_like, mask_like

__all__ = ["CallableSegmenter"]


class CallableSegmenter:
    """Wrap ``fn(array, spacing) -> array`` as a segmenter.

    Parameters
    ----------
    fn : callable
        Called as ``fn(array, spacing)`` with the image as a float32 (z, y, x) array and the
        voxel spacing (x, y, z mm); returns an array of the same shape: a boolean/integer mask
        (non-zero = lesion) or float probabilities.
    threshold : float, default=0.5
        Probability at or above which a voxel is lesion (float outputs only).

    Examples
    --------
    >>> import numpy as np, SimpleITK as sitk
    >>> model = CallableSegmenter(lambda a, spacing: a >= 2.5)
    >>> img = sitk.GetImageFromArray(np.full((4, 4, 4), 3.0, np.float32))
    >>> int(sitk.GetArrayFromImage(model.predict(img)).sum())
    64
    """

    def __init__(self, fn: Callable[[np.ndarray, tuple], np.ndarray], *, threshold: float = 0.5) -> None:
        if not callable(fn):
            raise ValidationError(f"CallableSegmenter needs a callable 'fn'. Got {type(fn).__name__}.")
        self.fn = fn
        self.threshold = float(check_number(threshold, name="threshold", owner="CallableSegmenter"))

    def __repr__(self) -> str:
        return f"CallableSegmenter({getattr(self.fn, '__name__', self.fn)!r}, threshold={self.threshold})"

    def _run(self, image: sitk.Image) -> tuple[np.ndarray, sitk.Image]:
        img = check_image(image, owner="CallableSegmenter")
        arr = sitk.GetArrayFromImage(img)
        out = np.asarray(self.fn(arr, tuple(img.GetSpacing())))
        if out.shape != arr.shape:
            raise ValidationError(
                f"The function of CallableSegmenter returned shape {out.shape} for an image of shape "
                f"{arr.shape} (z, y, x); it must return one value per voxel."
            )
        return out, img

    def predict(self, image: sitk.Image) -> sitk.Image:
        """Binary mask (uint8 0/1) on the grid of ``image``.

        Parameters
        ----------
        image : SimpleITK.Image

        Returns
        -------
        SimpleITK.Image
        """
        out, img = self._run(image)
        if out.dtype.kind == "f":
            return mask_like(out >= self.threshold, img)
        return mask_like(out != 0, img)

    def predict_proba(self, image: sitk.Image) -> sitk.Image:
        """The function's float output as a float32 image (only for probability outputs).

        Parameters
        ----------
        image : SimpleITK.Image

        Returns
        -------
        SimpleITK.Image

        Raises
        ------
        ValidationError
            The function returns a mask, not probabilities.
        """
        out, img = self._run(image)
        if out.dtype.kind != "f":
            raise ValidationError("The function of CallableSegmenter returns a mask, not probabilities; "
                                  "use predict().")
        return image_like(out, img)
