"""Optional torch adapter (``pip install sitekit[torch]``); torch is imported only here, lazily."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from sitekit._validation import check_number
from sitekit.robustness.models._base import check_image, image_like, mask_like

__all__ = ["TorchSegmenter"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "TorchSegmenter needs torch: pip install 'sitekit[torch]' (CPU wheels: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu)."
        ) from exc
    return torch


class TorchSegmenter:
    """A torch module taking ``(1, 1, z, y, x)`` SUV tensors and returning probabilities.

    The image is used on its own grid (resample beforehand if the network needs another
    spacing; :class:`OnnxSegmenter` does this for exported networks).

    Parameters
    ----------
    module : torch.nn.Module
        Put in eval mode; run without gradients.
    threshold : float, default=0.5
    output : {"probability", "logits"}, default="probability"
    """

    def __init__(self, module, *, threshold: float = 0.5, output: str = "probability") -> None:
        _torch()
        self.module = module.eval()
        self.threshold = float(check_number(threshold, name="threshold", owner="TorchSegmenter"))
        self.output = output

    def predict_proba(self, image: sitk.Image) -> sitk.Image:
        """Probability map (float32) on the grid of ``image``.

        Parameters
        ----------
        image : SimpleITK.Image

        Returns
        -------
        SimpleITK.Image
        """
        torch = _torch()
        img = check_image(image, owner="TorchSegmenter")
        x = torch.from_numpy(sitk.GetArrayFromImage(img))[None, None]
        with torch.no_grad():
            out = self.module(x)
            if self.output == "logits":
                out = torch.sigmoid(out)
        return image_like(out.numpy().reshape(x.shape[2:]), img)

    def predict(self, image: sitk.Image) -> sitk.Image:
        """Binary mask (uint8 0/1) on the grid of ``image``.

        Parameters
        ----------
        image : SimpleITK.Image

        Returns
        -------
        SimpleITK.Image
        """
        prob = self.predict_proba(image)
        return mask_like(np.asarray(sitk.GetArrayViewFromImage(prob)) >= self.threshold, prob)
