"""Harmonisation of multi-site data.

- :class:`ComBat` / :func:`combat`: ComBat with parametric or non-parametric empirical
  Bayes, covariates, a reference site, missing values, save/load (exact to R's
  ``sva::ComBat``).
- :mod:`sitekit.harmonize.earl`: EARL-style phantom accreditation of PET scanners.
"""

from sitekit.harmonize._combat import ComBat, combat

__all__ = ["ComBat", "combat"]
