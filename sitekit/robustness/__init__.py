"""Robustness: of features (image perturbations, ICC) and of models (sites, stress, adversarial).

Model-robustness names re-exported here:

* :func:`leave_one_site_out`, :func:`site_predictability`, :func:`site_effects`,
  :func:`covariate_effects` -- generalisation across sites, site leakage, site and biological
  effects per feature (:mod:`sitekit.robustness.sites`);
* :func:`stress_test` with :class:`FeatureNoise`, :class:`CalibrationShift`, :class:`SiteShift`
  (:mod:`sitekit.robustness.stress`);
* :func:`minimal_perturbation`, :func:`adversarial_budget` (:mod:`sitekit.robustness.adversarial`);
* :func:`run_suite` and :class:`SuiteResult` -- CI suites from a TOML file
  (:mod:`sitekit.robustness.suite`).

The metrics every model analysis shares (scikit-learn scorer names plus documented extras)
are in :mod:`sitekit.robustness.metrics`.  Feature robustness lives in
:mod:`sitekit.robustness.perturbations` (one module per family),
:mod:`sitekit.robustness.icc` (ICC, CCC, Koo-Li classes) and
:mod:`sitekit.robustness.stability` (the perturb-and-extract pipeline); import those modules
directly.
"""

from sitekit.robustness.adversarial import adversarial_budget, minimal_perturbation
from sitekit.robustness.segmentation import (
    evaluate_segmentation,
    segmentation_attack,
    segmentation_metrics,
)
from sitekit.robustness.sites import (
    SitePredictability,
    calibration_curve_by_site,
    covariate_effects,
    leave_one_site_out,
    loso_predictions,
    site_effects,
    site_predictability,
)
from sitekit.robustness.stress import (
    CalibrationShift,
    FeatureNoise,
    SiteShift,
    StressResult,
    stress_test,
)
from sitekit.robustness.suite import SuiteResult, run_suite

__all__ = [
    "leave_one_site_out",
    "loso_predictions",
    "calibration_curve_by_site",
    "site_predictability",
    "SitePredictability",
    "site_effects",
    "covariate_effects",
    "stress_test",
    "StressResult",
    "FeatureNoise",
    "CalibrationShift",
    "SiteShift",
    "minimal_perturbation",
    "adversarial_budget",
    "run_suite",
    "SuiteResult",
    "segmentation_metrics",
    "evaluate_segmentation",
    "segmentation_attack",
]
