"""Report sections, one module per part of sitekit.

**The section interface.**  A section module ``sitekit/reports/sections/<part>.py`` turns the plain results of one part
(tidy tables and dicts, as the part's command writes them) into a
:class:`~sitekit.reports.Section`, using the library's analysis functions for any statistic
and :mod:`sitekit.reports.figures` for the figures.  Each module exposes:

``ID``
    The section id: the HTML anchor and the key of the section in the report's JSON
    (American spelling, like every identifier).
``TITLE``
    The heading shown in the report.
``build(results) -> Section``
    ``results`` is a mapping of the plain data the section needs (for the sections here, the
    keyword arguments of their ``*_section`` function); it returns the section with its
    blocks (text, tables, figures), its summary verdicts (``PASS``/``FAIL``/``WARN``/``INFO``)
    and ``results`` (what goes into the JSON).

The modules are listed once, in report order, in :data:`SECTIONS`.  Adding a part (say
``monitor``) means writing ``sections/monitor.py`` with ``ID``, ``TITLE`` and ``build`` and
adding the module to :data:`SECTIONS`; :func:`build_section` then finds it by its ``ID``.

Examples
--------
>>> import pandas as pd
>>> from sitekit.reports.sections import build_section, section_ids
>>> section_ids()
['earl', 'extraction', 'feature_robustness', 'harmonization', 'model_robustness', 'segmentation', 'monitor']
>>> sec = build_section("extraction", {"features": pd.DataFrame({"site": ["a", "b"]}),
...                                    "errors": None})
>>> sec.id, sec.title
('extraction', 'Feature extraction')
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from sitekit._validation import check_option
from sitekit.reports.html import Section
from sitekit.reports.sections import (
    earl,
    extraction,
    feature_robustness,
    harmonization,
    model_robustness,
    monitor,
    segmentation,
)
from sitekit.reports.sections._common import ALPHA, ID_COLUMNS, drop_ids
from sitekit.reports.sections.earl import earl_section
from sitekit.reports.sections.extraction import extraction_section
from sitekit.reports.sections.feature_robustness import describe_perturbation, stability_section
from sitekit.reports.sections.harmonization import covariate_associations, harmonization_section
from sitekit.reports.sections.model_robustness import suite_section

__all__ = [
    "SECTIONS",
    "section_ids",
    "get_section",
    "build_section",
    "ID_COLUMNS",
    "ALPHA",
    "drop_ids",
    "earl_section",
    "extraction_section",
    "stability_section",
    "describe_perturbation",
    "harmonization_section",
    "covariate_associations",
    "suite_section",
]

#: Every section module, in the order of the report (the order of the chain).
SECTIONS: tuple[ModuleType, ...] = (
    earl,
    extraction,
    feature_robustness,
    harmonization,
    model_robustness,
    segmentation,
    monitor,
)


def section_ids() -> list[str]:
    """The ``ID`` of every module of :data:`SECTIONS`, in report order.

    Returns
    -------
    list of str
    """
    return [m.ID for m in SECTIONS]


def get_section(section_id: str) -> ModuleType:
    """The section module whose ``ID`` is ``section_id``.

    Parameters
    ----------
    section_id : str

    Returns
    -------
    module
        With ``ID``, ``TITLE`` and ``build``.

    Raises
    ------
    ValidationError
        Unknown id (with the closest known one).
    """
    check_option(section_id, section_ids(), name="section_id", owner="get_section")
    return next(m for m in SECTIONS if m.ID == section_id)


def build_section(section_id: str, results: Mapping[str, Any]) -> Section:
    """Build the section ``section_id`` from its plain results.

    Parameters
    ----------
    section_id : str
        One of :func:`section_ids`.
    results : mapping
        What that section's ``build`` takes.

    Returns
    -------
    Section
    """
    return get_section(section_id).build(results)
