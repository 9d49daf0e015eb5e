"""Reproducible image/mask perturbations in physical units (PET-aware).

Every perturbation works on an ``(image, mask)`` pair of 3-D SimpleITK images on the same grid
and comes in two kinds:

* a **deterministic** transform (``GaussianNoise``, ``Rotate`` ...) whose parameters are concrete
  numbers (noise transforms also carry the ``random_state`` of their noise realisation), and
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

The classes live in one module per family -- :mod:`~sitekit.robustness.perturbations.intensity`
(noise, calibration error), :mod:`~sitekit.robustness.perturbations.spatial` (post-filter,
voxel size, rotation, translation), :mod:`~sitekit.robustness.perturbations.mask` (volume,
contour, re-segmentation) and :mod:`~sitekit.robustness.perturbations.compose` (chains, replay,
files) -- and every public name is importable from here.
"""

from sitekit.robustness.perturbations._base import Perturbation, RandomPerturbation
from sitekit.robustness.perturbations.compose import (
    CHAIN_STEPS,
    Compose,
    get_chain,
    load_perturbations,
    perturbation_from_config,
    replay,
)
from sitekit.robustness.perturbations.intensity import (
    CountNoise,
    GaussianNoise,
    IntensityScale,
    RandomCountNoise,
    RandomGaussianNoise,
    RandomIntensityScale,
)
from sitekit.robustness.perturbations.mask import (
    MaskVolume,
    RandomMaskVolume,
    RandomResegment,
    RandomSupervoxelContour,
    Resegment,
    SupervoxelContour,
)
from sitekit.robustness.perturbations.spatial import (
    GaussianBlur,
    RandomGaussianBlur,
    RandomResample,
    RandomRotate,
    RandomTranslate,
    Resample,
    Rotate,
    Translate,
)

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
