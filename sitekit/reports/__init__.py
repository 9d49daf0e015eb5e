"""Self-contained HTML reports: results data -> pure figure functions -> jinja2 template.

- :func:`build_report` reads the output folders of the sitekit commands under a directory
  (``sitekit report RESULTS_DIR``) and returns a :class:`Report`;
- :class:`Report` renders to one HTML file (``save_as_html``, ``_repr_html_``) with inline
  CSS and figures embedded as base64 SVG/PNG: no external URL, works offline, prints;
  a JSON of the results is written next to it;
- :mod:`sitekit.reports.sections` holds one module per section (``ID``, ``TITLE``,
  ``build(results) -> Section``) and their registry;
- :mod:`sitekit.reports.figures` holds the pure plot functions ``plot_x(data, *, ax=None)``.

matplotlib and jinja2 are imported only here (import-linter enforces it).
"""

from sitekit.reports._build import build_report, load_section
from sitekit.reports._results import ResultFolder, collect_provenance, discover_results
from sitekit.reports.html import (
    FigureBlock,
    Report,
    Section,
    TableBlock,
    TextBlock,
    Verdict,
    embed_figure,
    get_template,
)
from sitekit.reports.sections import (
    build_section,
    drop_ids,
    earl_section,
    extraction_section,
    harmonization_section,
    stability_section,
    suite_section,
)

__all__ = [
    "Report",
    "Section",
    "Verdict",
    "FigureBlock",
    "TableBlock",
    "TextBlock",
    "build_report",
    "load_section",
    "discover_results",
    "collect_provenance",
    "ResultFolder",
    "build_section",
    "drop_ids",
    "earl_section",
    "extraction_section",
    "harmonization_section",
    "stability_section",
    "suite_section",
    "embed_figure",
    "get_template",
]
