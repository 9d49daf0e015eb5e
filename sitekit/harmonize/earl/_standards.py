"""EARL standards as versioned data files, loaded and schema-checked in one place.

Each standard is a JSON file in ``sitekit/harmonize/earl/standards/``::

    {"format": "sitekit-earl-standard", "schema_version": 1, "standard": "EARL1",
     "version": "...", "source": "...", "sphere_mm": [37, 28, ...],
     "metrics": {"A50": {"lower": [...], "upper": [...], "verified": true, "note": "..."}, ...}}

Metrics are ``A50`` (RCmean, A50 background-adapted), ``MAX`` (RCmax) and ``PEAK`` (RCpeak).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from sitekit._typing import PathLike
from sitekit._validation import check_option
from sitekit.exceptions import CorruptFileError, MissingFileError

__all__ = ["STANDARDS", "METRICS", "Standard", "load_standard", "list_standards"]

STANDARDS = ("EARL1", "EARL2")
METRICS = ("A50", "MAX", "PEAK")
_FORMAT = "sitekit-earl-standard"
_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Standard:
    """An accreditation standard: RC bands per sphere and metric.

    Attributes
    ----------
    name : str
        ``"EARL1"`` or ``"EARL2"``.
    version, source : str
        Which edition and where the numbers come from.
    bands : pandas.DataFrame
        Columns ``sphere_mm, metric, lower, upper, verified, note``.
    """

    name: str
    version: str
    source: str
    bands: pd.DataFrame

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metrics the standard sets limits for."""
        return tuple(dict.fromkeys(self.bands["metric"]))


def _fail(source: str, what: str) -> CorruptFileError:
    return CorruptFileError(f"EARL standard file '{source}': {what}")


def _parse(d: dict, source: str) -> Standard:
    if not isinstance(d, dict) or d.get("format") != _FORMAT:
        raise _fail(source, f"not a sitekit standard (expected \"format\": \"{_FORMAT}\").")
    if d.get("schema_version") != _SCHEMA_VERSION:
        raise _fail(source, f"schema_version {d.get('schema_version')!r} is not {_SCHEMA_VERSION}.")
    for key in ("standard", "version", "source", "sphere_mm", "metrics"):
        if key not in d:
            raise _fail(source, f"field '{key}' is missing.")
    spheres = d["sphere_mm"]
    if (not isinstance(spheres, list) or not spheres
            or not all(isinstance(s, int | float) and s > 0 for s in spheres)
            or len(set(spheres)) != len(spheres)):
        raise _fail(source, "'sphere_mm' must be a list of distinct positive diameters.")
    metrics = d["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise _fail(source, "'metrics' must be a non-empty object.")
    rows = []
    for metric, m in metrics.items():
        if metric not in METRICS:
            raise _fail(source, f"unknown metric '{metric}'; known: {', '.join(METRICS)}.")
        if not isinstance(m, dict):
            raise _fail(source, f"metric '{metric}' must be an object.")
        lo, hi = m.get("lower"), m.get("upper")
        if not (isinstance(lo, list) and isinstance(hi, list) and len(lo) == len(hi) == len(spheres)):
            raise _fail(source, f"metric '{metric}' needs 'lower' and 'upper' lists of {len(spheres)} values.")
        verified = m.get("verified")
        if not isinstance(verified, bool):
            raise _fail(source, f"metric '{metric}' needs a bool 'verified'.")
        note = m.get("note", "")
        if not verified and not note:
            raise _fail(source, f"metric '{metric}' is unverified and must carry a 'note' saying so.")
        for s, a, b in zip(spheres, lo, hi):
            if not (isinstance(a, int | float) and isinstance(b, int | float) and 0 <= a < b):
                raise _fail(source, f"metric '{metric}', sphere {s} mm: need 0 <= lower < upper, got {a!r}, {b!r}.")
            rows.append({"sphere_mm": float(s), "metric": metric, "lower": float(a), "upper": float(b),
                         "verified": verified, "note": str(note)})
    bands = pd.DataFrame(rows).sort_values(["metric", "sphere_mm"], kind="stable").reset_index(drop=True)
    return Standard(name=str(d["standard"]), version=str(d["version"]), source=str(d["source"]), bands=bands)


def list_standards() -> tuple[str, ...]:
    """Names of the shipped standards."""
    return STANDARDS


@lru_cache(maxsize=8)
def _load_shipped(name: str) -> Standard:
    res = resources.files("sitekit.harmonize.earl") / "standards" / f"{name.lower()}.json"
    source = f"sitekit/harmonize/earl/standards/{name.lower()}.json"
    try:
        d = json.loads(res.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(source, f"cannot be read: {exc}") from exc
    std = _parse(d, source)
    if std.name != name:
        raise _fail(source, f"holds standard '{std.name}', expected '{name}'.")
    return std


def load_standard(standard: str | PathLike = "EARL1") -> Standard:
    """Load a standard by name (``"EARL1"``, ``"EARL2"``, case-insensitive) or from a JSON file.

    Parameters
    ----------
    standard : str or path-like, default="EARL1"

    Returns
    -------
    Standard

    Raises
    ------
    ValidationError
        Unknown name (with a "did you mean").
    MissingFileError, CorruptFileError
        A given file that does not exist or breaks the schema.
    """
    if isinstance(standard, Standard):
        return standard
    s = str(standard)
    if s.lower().endswith(".json"):
        p = Path(s)
        if not p.exists():
            raise MissingFileError(f"EARL standard file '{p}' does not exist.")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _fail(str(p), f"is not valid JSON: {exc}") from exc
        return _parse(d, str(p))
    name = check_option(s.upper(), STANDARDS, name="standard") if s.upper() in STANDARDS else None
    if name is None:
        check_option(s, STANDARDS, name="standard")
    return _load_shipped(name)
