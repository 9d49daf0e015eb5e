"""The one helper that checks a report: required and forbidden strings, saving."""

from __future__ import annotations

import json
import re
from pathlib import Path

#: Strings that would make a report depend on the network or run code from elsewhere.
FORBIDDEN = ("http://", "https://", "//cdn", "<script", "<link", "@import", "url(", "<iframe",
             "src=\"//", "src='//", "ftp://")


def check_report(html: str, *, required=(), forbidden=()) -> str:
    """Assert ``html`` holds every ``required`` string and no ``forbidden`` (or default) one."""
    for s in required:
        assert s in html, f"report lacks {s!r}"
    for s in (*FORBIDDEN, *forbidden):
        assert s not in html, f"report contains forbidden {s!r}"
    # every image is an embedded data URI
    for src in re.findall(r'<img[^>]*\bsrc="([^"]*)"', html):
        assert src.startswith(("data:image/svg+xml;base64,", "data:image/png;base64,")), src[:60]
    return html


def check_saved_report(report, path: Path, *, required=(), forbidden=()) -> dict:
    """Save ``report`` to ``path``, check the HTML and return the JSON written next to it."""
    out = report.save_as_html(path)
    assert out == path and path.exists()
    html = path.read_text(encoding="utf-8")
    check_report(html, required=required, forbidden=forbidden)
    data = json.loads(path.with_suffix(".json").read_text())
    text = json.dumps(data)
    for s in forbidden:
        assert s not in text, f"report JSON contains forbidden {s!r}"
    return data
