"""sitekit: multi-centre imaging studies made comparable.

Three parts, one package:

- :mod:`sitekit.harmonize` -- ComBat-family harmonisation of features pooled
  from many sites, and EARL-style phantom accreditation (:mod:`sitekit.harmonize.earl`);
- :mod:`sitekit.robustness` -- image/feature perturbations, feature stability,
  model stress tests and cross-site generalisation;
- :mod:`sitekit.reports` -- self-contained HTML reports.

Sub-packages are imported lazily so that ``import sitekit`` stays cheap.
"""

from sitekit._version import __version__

__all__ = ["__version__"]
