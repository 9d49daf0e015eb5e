"""Harmonisation of multi-site data.

- :class:`ComBat` / :func:`combat`: ComBat with parametric or non-parametric empirical
  Bayes, covariates, a reference site, missing values, save/load (exact to R's
  ``sva::ComBat``); ``ComBat.adapt`` for sites unseen in fit, ``smooth=`` spline terms
  (ComBat-GAM), ``target_site=`` (M-ComBat).
- :class:`CovBat`: ComBat plus harmonisation of the site covariance (Chen et al. 2022).
- :class:`NestedComBat`: several batch variables in sequence, best order (OPNested ComBat).
- :func:`harmonize_table` / :func:`fit_table` / :func:`apply_table`: the same on CSV, TSV
  or Parquet tables (feature columns chosen safely, one result set per run), with
  :func:`harmonization_diagnostics` / :func:`read_diagnostics` for reports.
- :func:`load`: any fitted object saved by sitekit (the file says which class), checked
  against its checksum (and its HMAC signature when a key is given).
- :mod:`sitekit.harmonize.federated`: ComBat across sites that share summaries, never rows.
- :mod:`sitekit.harmonize.earl`: EARL-style phantom accreditation of PET scanners.
"""

from sitekit.harmonize import federated  # noqa: F401 - registers the federated file kinds
from sitekit.harmonize._combat import ComBat, combat
from sitekit.harmonize._covbat import CovBat
from sitekit.harmonize._diagnostics import fit_summary, harmonization_diagnostics, read_diagnostics
from sitekit.harmonize._nested import NestedComBat
from sitekit.harmonize._persistence import load
from sitekit.harmonize._table import (
    FeatureSelection,
    HarmonizeResult,
    apply_table,
    dask_cluster,
    fit_table,
    harmonize_table,
    select_features,
)

__all__ = [
    "ComBat",
    "combat",
    "CovBat",
    "NestedComBat",
    "load",
    "harmonize_table",
    "fit_table",
    "apply_table",
    "select_features",
    "FeatureSelection",
    "HarmonizeResult",
    "dask_cluster",
    "harmonization_diagnostics",
    "read_diagnostics",
    "fit_summary",
]
