"""Evaluation of image segmentation models across sites: metrics, sweeps, attacks.

- :func:`segmentation_metrics` -- Dice, surface distances, autoPET FPV/FNV, lesion detection,
  MTV/TLG/SUV of one prediction against its reference;
- :func:`evaluate_segmentation` -- a model over a manifest, clean and under
  :class:`Sweep` perturbations (:func:`blur_sweep`, :func:`calibration_sweep`,
  :func:`noise_sweep`, :func:`resample_sweep`, :func:`shift_sweep`, :func:`site_sweep`), with
  per-site bootstrap CIs, the worst site and Bland-Altman agreement;
- :func:`segmentation_attack` -- query-only Square and SimBA attacks under an L_inf budget.
"""

from sitekit.robustness.segmentation._attack import (
    AttackResult,
    background_sd,
    replay_attack,
    segmentation_attack,
)
from sitekit.robustness.segmentation._demo import (
    RESULTS_MARKER,
    demo_step,
    load_segmentation_results,
)
from sitekit.robustness.segmentation._evaluate import (
    METRIC_COLUMNS,
    SegmentationEvaluation,
    bland_altman,
    crossing_severity,
    evaluate_segmentation,
    severity_curves,
    site_summary,
)
from sitekit.robustness.segmentation._metrics import (
    METRIC_NAMES,
    PET_METRIC_NAMES,
    segmentation_metrics,
)
from sitekit.robustness.segmentation._pgd import pgd_attack
from sitekit.robustness.segmentation._suite import (
    IMAGE_CHECKS,
    MODEL_KINDS,
    run_image_checks,
    segmenter_from_config,
)
from sitekit.robustness.segmentation._sweeps import (
    Sweep,
    blur_sweep,
    calibration_sweep,
    default_sweeps,
    noise_sweep,
    resample_sweep,
    shift_sweep,
    site_sweep,
)

__all__ = [
    "segmentation_metrics",
    "METRIC_NAMES",
    "PET_METRIC_NAMES",
    "evaluate_segmentation",
    "SegmentationEvaluation",
    "METRIC_COLUMNS",
    "site_summary",
    "bland_altman",
    "severity_curves",
    "crossing_severity",
    "Sweep",
    "blur_sweep",
    "calibration_sweep",
    "noise_sweep",
    "resample_sweep",
    "shift_sweep",
    "site_sweep",
    "default_sweeps",
    "segmentation_attack",
    "replay_attack",
    "pgd_attack",
    "AttackResult",
    "background_sd",
    "demo_step",
    "load_segmentation_results",
    "RESULTS_MARKER",
    "segmenter_from_config",
    "run_image_checks",
    "IMAGE_CHECKS",
    "MODEL_KINDS",
]
