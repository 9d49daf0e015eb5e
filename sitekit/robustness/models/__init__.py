"""Image-model adapters with one query-only protocol: ``predict(image) -> mask``.

- :class:`OnnxSegmenter` -- an ONNX network on onnxruntime (CPU): resampling to the model
  spacing, normalisation, sliding windows with Gaussian blending, model cards;
- :class:`CallableSegmenter` -- any function on numpy arrays;
- :class:`ThresholdSegmenter` -- the EANM 41 %-of-SUVmax baseline; :class:`FixedThresholdSegmenter`
  -- a fixed SUV threshold;
- :class:`TorchSegmenter` -- a torch module (optional extra ``sitekit[torch]``; torch is imported
  only when it is used).
"""

from sitekit.robustness.models._base import Segmenter
from sitekit.robustness.models._callable import CallableSegmenter
from sitekit.robustness.models._onnx import OnnxSegmenter
from sitekit.robustness.models._threshold import (
    FixedThresholdSegmenter,
    ThresholdSegmenter,
    bounding_region,
)
from sitekit.robustness.models._torch import TorchSegmenter

__all__ = [
    "Segmenter",
    "OnnxSegmenter",
    "CallableSegmenter",
    "ThresholdSegmenter",
    "FixedThresholdSegmenter",
    "TorchSegmenter",
    "bounding_region",
]
