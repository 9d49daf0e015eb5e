"""Physics-based synthetic multi-site data, and loaders for the shipped ``sample_data/``.

- :func:`make_phantom_scan` -- a NEMA/IEC body phantom imaged through a site profile;
- :func:`make_cohort` / :func:`make_case` -- patient-like lesions with masks, covariates
  and a biology-driven outcome;
- :func:`make_feature_table` -- a quick tabular multi-site cohort with known effects;
- :func:`make_study_stream` -- studies from several sites over months, with a calibration
  drift and a scanner replacement (for :mod:`sitekit.monitor`);
- :data:`SITE_PROFILES` -- four scanner profiles (resolution, voxel size, noise, calibration);
- :func:`generate_sample_data` -- the ``sample_data/`` folder (``sitekit datasets generate``).
"""

from sitekit.datasets._cohort import Case, Cohort, make_case, make_cohort
from sitekit.datasets._features import FEATURE_NAMES, make_feature_table
from sitekit.datasets._phantom import PhantomScan, make_fill, make_phantom_scan
from sitekit.datasets._profiles import SITE_PROFILES, SiteProfile, get_profile
from sitekit.datasets._sample import (
    generate_sample_data,
    load_sample_features,
    load_sample_manifest,
    sample_data_dir,
    summarize_sample_data,
)
from sitekit.datasets._stream import STREAM_SIGNALS, make_study_stream

__all__ = [
    "SITE_PROFILES",
    "SiteProfile",
    "get_profile",
    "PhantomScan",
    "make_fill",
    "make_phantom_scan",
    "Case",
    "Cohort",
    "make_case",
    "make_cohort",
    "FEATURE_NAMES",
    "make_feature_table",
    "STREAM_SIGNALS",
    "make_study_stream",
    "generate_sample_data",
    "load_sample_features",
    "load_sample_manifest",
    "sample_data_dir",
    "summarize_sample_data",
]
