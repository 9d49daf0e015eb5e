"""Harmonisation of multi-site data.

- :class:`ComBat` / :func:`combat`: ComBat with parametric or non-parametric empirical
  Bayes, covariates, a reference site, missing values, save/load (exact to R's
  ``sva::ComBat``); ``ComBat.adapt`` for sites unseen in fit, ``smooth=`` spline terms
  (ComBat-GAM), ``target_site=`` (M-ComBat).
- :class:`CovBat`: ComBat plus harmonisation of the site covariance (Chen et al. 2022).
- :class:`NestedComBat`: several batch variables in sequence, best order (OPNested ComBat).
- :mod:`sitekit.harmonize.earl`: EARL-style phantom accreditation of PET scanners.
"""

from sitekit.harmonize._combat import ComBat, combat
from sitekit.harmonize._covbat import CovBat
from sitekit.harmonize._nested import NestedComBat

__all__ = ["ComBat", "combat", "CovBat", "NestedComBat"]
