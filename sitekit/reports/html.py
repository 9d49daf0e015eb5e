"""The :class:`Report` object: sections of tables, figures and text -> one HTML file.

A report is plain data (sections of blocks) until it is rendered by the single jinja2
template in ``_templates/`` (autoescape on).  Figures are embedded as base64 SVG or PNG
``data:`` URIs, so the file is self-contained: no external URL, works offline, prints.
"""

from __future__ import annotations

import base64
import html as _html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import matplotlib
import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit.io import atomic_output

__all__ = [
    "Report",
    "Section",
    "Verdict",
    "FigureBlock",
    "TableBlock",
    "TextBlock",
    "embed_figure",
    "get_template",
]

_TEMPLATES = Path(__file__).with_name("_templates")


def get_template(name: str = "report.html.j2"):
    """The jinja2 template ``name`` of ``sitekit/reports/_templates`` (autoescape on)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        # Escape every template whatever its suffix (select_autoescape would leave .j2 raw).
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)


def embed_figure(ax_or_fig, *, format: str = "svg", dpi: int = 110) -> str:
    """Render a matplotlib Axes/Figure to a ``data:`` URI (base64) and release the figure.

    Parameters
    ----------
    ax_or_fig : matplotlib Axes or Figure
    format : {"svg", "png"}, default="svg"
    dpi : int, default=110
        PNG resolution.

    Returns
    -------
    str
        ``data:image/svg+xml;base64,...`` or ``data:image/png;base64,...``.
    """
    fig = getattr(ax_or_fig, "figure", ax_or_fig)
    buf = io.BytesIO()
    if format == "svg":
        with matplotlib.rc_context({"svg.hashsalt": "sitekit", "svg.fonttype": "path"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
        mime = "image/svg+xml"
    elif format == "png":
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        mime = "image/png"
    else:
        raise ValueError(f"format must be 'svg' or 'png'; got {format!r}.")
    if getattr(fig.canvas, "manager", None) is not None:  # made through pyplot: release it
        plt.close(fig)
    fig.clear()
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


@dataclass
class TextBlock:
    """A paragraph (plain text, escaped); ``kind`` is ``"text"``, ``"note"`` or ``"warning"``."""

    text: str
    kind: str = "text"
    block: str = field(default="text", init=False)


@dataclass
class TableBlock:
    """A table from a DataFrame; floats are rounded for display only."""

    data: pd.DataFrame
    caption: str = ""
    digits: int = 3
    max_rows: int = 60
    status_column: str | None = None
    block: str = field(default="table", init=False)

    def columns(self) -> list[str]:
        return [str(c) for c in self.data.columns]

    def rows(self) -> list[list[dict]]:
        out = []
        for _, row in self.data.head(self.max_rows).iterrows():
            cells = []
            for col, v in row.items():
                if (isinstance(v, float | np.floating) and math.isfinite(float(v))
                        and float(v).is_integer() and _is_count_column(col)):
                    v = int(v)
                cells.append({"text": _format(v, self.digits), "cls": _cell_class(col, v)})
            out.append(cells)
        return out

    @property
    def n_hidden(self) -> int:
        return max(0, len(self.data) - self.max_rows)


@dataclass
class FigureBlock:
    """An embedded figure with a one-line caption saying how to read it."""

    src: str
    caption: str
    alt: str = ""
    block: str = field(default="figure", init=False)


@dataclass
class Verdict:
    """One line of the summary: ``status`` is ``"PASS"``, ``"FAIL"``, ``"WARN"`` or ``"INFO"``."""

    label: str
    status: str
    detail: str = ""


@dataclass
class Section:
    """A titled part of the report made of blocks; ``results`` go into the JSON."""

    id: str
    title: str
    blocks: list = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    intro: str = ""

    def add_text(self, text: str, kind: str = "text") -> None:
        self.blocks.append(TextBlock(text, kind))

    def add_table(self, data: pd.DataFrame, caption: str = "", **kwargs) -> None:
        self.blocks.append(TableBlock(data, caption, **kwargs))

    def add_figure(self, ax, caption: str, *, alt: str = "", format: str = "svg") -> None:
        self.blocks.append(FigureBlock(embed_figure(ax, format=format), caption, alt or caption))


def _format(v, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        if not math.isfinite(float(v)):
            return "" if math.isnan(float(v)) else str(v)
        av = abs(float(v))
        if av != 0 and (av >= 1e5 or av < 10 ** (-digits)):
            return f"{float(v):.{digits}g}"
        return f"{float(v):.{digits}f}"
    return str(v)


def _is_count_column(col) -> bool:
    c = str(col).lower()
    return c in {"sphere_mm", "n", "severity_n"} or c.startswith("n_")


def _cell_class(col, v) -> str:
    s = str(v).upper()
    if str(col).lower() in {"passed", "verdict", "status", "robust", "result", "leakage"}:
        if isinstance(v, bool | np.bool_):
            ok = bool(v) if str(col).lower() != "leakage" else not bool(v)
            return "pass" if ok else "fail"
        if s in {"PASS", "PASSED", "OK"}:
            return "pass"
        if s in {"FAIL", "FAILED"}:
            return "fail"
    return ""


class Report:
    """A self-contained HTML report made of sections.

    Parameters
    ----------
    title : str
    sections : list of Section
        In display order; the summary verdicts are collected from every section.
    provenance : dict, default=None
        Shown in the Provenance section (versions, parameters, input hashes, date, command).
    warnings : list of str, default=None
        Non-fatal problems met while building; shown at the top of the report.

    Examples
    --------
    >>> from sitekit.reports import Report, Section
    >>> s = Section("demo", "Demo")
    >>> s.add_text("Hello <world>")
    >>> "Hello &lt;world&gt;" in Report("T", [s]).to_html()
    True
    """

    def __init__(self, title: str, sections: list[Section], *, provenance: dict | None = None,
                 warnings: list[str] | None = None) -> None:
        self.title = title
        self.sections = list(sections)
        self.provenance = dict(provenance or {})
        self.warnings = list(warnings or [])

    @property
    def verdicts(self) -> list[Verdict]:
        """Every section's verdicts, failures first."""
        order = {"FAIL": 0, "WARN": 1, "PASS": 2, "INFO": 3}
        v = [x for s in self.sections for x in s.verdicts]
        return sorted(v, key=lambda x: order.get(x.status, 4))

    @property
    def status(self) -> str:
        """``"FAIL"`` when any verdict failed, else ``"PASS"`` (``"INFO"`` without verdicts)."""
        st = {v.status for v in self.verdicts}
        if "FAIL" in st:
            return "FAIL"
        if "PASS" in st or "WARN" in st:
            return "PASS"
        return "INFO"

    def to_dict(self) -> dict:
        """The results behind the report as JSON-ready data (written next to the HTML)."""
        return to_jsonable({
            "title": self.title,
            "status": self.status,
            "verdicts": [vars(v) for v in self.verdicts],
            "warnings": self.warnings,
            "sections": {s.id: s.results for s in self.sections},
            "provenance": self.provenance,
        })

    def to_html(self) -> str:
        """Render the report to one self-contained HTML string."""
        css = (_TEMPLATES / "report.css").read_text(encoding="utf-8")
        verdicts = self.verdicts
        return get_template().render(report=self, css=css, status=self.status, verdicts=verdicts,
                                     n_warn=sum(v.status == "WARN" for v in verdicts))

    def _repr_html_(self) -> str:
        # Embedded in a notebook: isolate our page in an iframe's srcdoc so its CSS stays put.
        return (
            '<iframe style="width:100%;height:720px;border:1px solid #ccc" srcdoc="'
            + _html.escape(self.to_html(), quote=True)
            + '"></iframe>'
        )

    def save_as_html(self, path: PathLike, *, force: bool = False, json_path: PathLike | None = None
                     ) -> Path:
        """Write the HTML (and ``<stem>.json`` of the results next to it) atomically.

        Parameters
        ----------
        path : str or path-like
            The ``.html`` file.
        force : bool, default=False
            Replace existing files (else :class:`~sitekit.exceptions.OutputExistsError`).
        json_path : path-like, default=None
            Where the JSON goes; default ``path`` with the suffix ``.json``.

        Returns
        -------
        pathlib.Path
            The HTML path.
        """
        path = Path(path)
        jpath = Path(json_path) if json_path is not None else path.with_suffix(".json")
        text = self.to_html()
        payload = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        with atomic_output(path, force=force) as tmp_html, atomic_output(jpath, force=force) as tmp_json:
            tmp_html.write_text(text, encoding="utf-8")
            tmp_json.write_text(payload + "\n", encoding="utf-8")
        return path

    def __repr__(self) -> str:
        return f"Report({self.title!r}, sections={[s.id for s in self.sections]}, status={self.status!r})"
