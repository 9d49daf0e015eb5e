"""Find the result folders of the sitekit commands under a directory and read them.

``sitekit report RESULTS_DIR`` accepts the output folder of one command or a folder holding
several (as ``sitekit demo`` writes).  Each kind of result is recognised by its marker
files:

=====================  ==========================================================
kind                   marker
=====================  ==========================================================
``earl``               ``check.csv`` (EARL check) and/or ``calibration.json``
``harmonize``          ``*.diagnostics.json`` (``sitekit harmonize run``) or a model ``.npz``
``extract``            a features ``*.parquet`` with ``original_*`` columns
``stability``          ``stability.csv`` (``sitekit robustness features``)
``suite``              ``results.json`` with ``checks`` (``sitekit robustness run``)
``segmentation``       ``segmentation_results.json`` (image models across sites)
``monitor``            ``monitor.json`` (``sitekit monitor``: control charts per site)
=====================  ==========================================================
"""

from __future__ import annotations

import json
import platform
import sys
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from sitekit._typing import PathLike
from sitekit._version import __version__
from sitekit.exceptions import CorruptFileError, MissingFileError, ModelFileError, ValidationError
from sitekit.harmonize import read_diagnostics
from sitekit.harmonize._persistence import read_model_file
from sitekit.io import file_hash, read_table
from sitekit.reports.sections.monitor import is_monitor_results

__all__ = ["ResultFolder", "discover_results", "collect_provenance"]

_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")


@dataclass
class ResultFolder:
    """One recognised result folder: ``kind`` and the files that were read."""

    kind: str
    path: Path
    files: list[Path] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Result file '{path}' is not valid JSON: {exc}") from exc


def _columns(path: Path) -> list[str]:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        sep = "\t" if path.suffix == ".tsv" else ","
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    except Exception:  # noqa: BLE001 - an unreadable file is simply not a marker
        return []


_HARMONIZER_KINDS = ("ComBat", "CovBat", "NestedComBat")


def _is_harmonizer_model(path: Path) -> bool:
    """A fitted harmoniser's model file (the kind read through the model-file reader)."""
    try:
        return read_model_file(path).kind in _HARMONIZER_KINDS
    except (ModelFileError, OSError):
        return False


def _classify(d: Path) -> list[ResultFolder]:
    found: list[ResultFolder] = []
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    names = {p.name for p in files}
    # EARL
    earl_files = [p for p in files if p.name in {"check.csv", "calibration.json", "curves.csv",
                                                 "measurements.csv", "verdict.json", "summary.json"}]
    has_check = "check.csv" in names and {"rc", "lower", "upper"} <= set(_columns(d / "check.csv"))
    has_cal = "calibration.json" in names
    if has_check or has_cal:
        found.append(ResultFolder("earl", d, earl_files))
    # suite
    if "results.json" in names:
        try:
            res = _read_json(d / "results.json")
        except CorruptFileError:
            res = {}
        if isinstance(res, dict) and "checks" in res:
            found.append(ResultFolder("suite", d, [p for p in files if p.suffix in
                                                   (*_TABLE_SUFFIXES, ".json")], {"results": res}))
    # image segmentation models (sitekit.robustness.segmentation.demo_step and the same layout)
    if "segmentation_results.json" in names:
        found.append(ResultFolder("segmentation", d, [p for p in files if p.suffix in
                                                      (*_TABLE_SUFFIXES, ".json")]))
    # post-deployment monitoring (sitekit monitor / SiteMonitor.write_results)
    if "monitor.json" in names and is_monitor_results(d):
        found.append(ResultFolder("monitor", d, [p for p in files if p.suffix in
                                                 (*_TABLE_SUFFIXES, ".json")]))
    # stability
    if "stability.csv" in names:
        found.append(ResultFolder("stability", d, [p for p in files if p.name in {
            "stability.csv", "robust_features.txt", "summary.json"}]))
    # harmonize: one result set per diagnostics file (sitekit 0.1: diagnostics.json)
    diags = [p for p in files if p.name == "diagnostics.json" or p.name.endswith(".diagnostics.json")]
    runs = []
    for diag in diags:
        try:
            content = read_diagnostics(diag)
        except (CorruptFileError, MissingFileError):
            continue
        outputs = content.get("outputs") or {}
        named = [d / outputs[k] for k in ("table", "model") if isinstance(outputs.get(k), str)]
        members = [p for p in named if p.exists()] if outputs else \
            [p for p in files if p.suffix in (*_TABLE_SUFFIXES, ".npz", ".json")]
        runs.append(ResultFolder("harmonize", d, [diag, *[p for p in members if p != diag]],
                                 {"diagnostics": diag}))
    models = [p for p in files if p.suffix == ".npz" and _is_harmonizer_model(p)]
    if not runs and models:
        runs.append(ResultFolder("harmonize", d, [*models, *[p for p in files if p.suffix in
                                                             (*_TABLE_SUFFIXES, ".json")]]))
    found += runs
    # extract
    parquet = [p for p in files if p.suffix == ".parquet"
               and any(c.startswith("original_") for c in _columns(p))]
    if parquet and not runs and not any(f.kind == "suite" for f in found):
        found.append(ResultFolder("extract", d, [*parquet, *[p for p in files if "error" in p.name]]))
    return found


def discover_results(results_dir: PathLike, *, max_depth: int = 3) -> list[ResultFolder]:
    """Recognised result folders under ``results_dir`` (itself included), sorted by path.

    Raises
    ------
    MissingFileError
        ``results_dir`` does not exist.
    ValidationError
        No sitekit results were found (the message lists the marker files).
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise MissingFileError(f"Results folder '{root}' does not exist or is not a folder.")
    out: list[ResultFolder] = []
    stack = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        out.extend(_classify(d))
        if depth < max_depth:
            stack.extend((c, depth + 1) for c in sorted(d.iterdir())
                         if c.is_dir() and not c.name.startswith((".", "_")))
    if not out:
        raise ValidationError(
            f"No sitekit results found in '{root}': expected the output folder of `sitekit earl "
            "check/calibrate` (check.csv, calibration.json), `sitekit harmonize run` (model .npz), "
            "`sitekit extract` (features .parquet), `sitekit robustness features` (stability.csv) "
            "or `sitekit robustness run` (results.json)."
        )
    return sorted(out, key=lambda r: (str(r.path), r.kind))


def collect_provenance(folders: list[ResultFolder], *, command_line: str | None = None,
                       extra: dict | None = None) -> dict:
    """Versions, date, command line, hashes of the result files read, parameters."""
    versions = {"sitekit": __version__, "python": platform.python_version()}
    for mod in ("numpy", "pandas", "scipy", "sklearn", "SimpleITK", "radiomics", "matplotlib"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = __import__(mod)
            except Exception:  # noqa: BLE001
                continue
        v = getattr(m, "__version__", None) or (m.Version() if hasattr(m, "Version") else None)
        if v:
            versions["scikit-learn" if mod == "sklearn" else ("pyradiomics" if mod == "radiomics" else mod)] = str(v)
    hashes = {}
    common = None
    for f in folders:
        for p in f.files:
            common = p.parent if common is None else Path(*_common_parts(common, p.parent))
    for f in folders:
        for p in f.files:
            rel = p.relative_to(common) if common is not None else p
            if str(rel) not in hashes:
                hashes[str(rel)] = "sha256:" + file_hash(p)
    prov = {
        "sitekit_version": __version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command_line": command_line or "",
        "platform": f"{platform.system()} {platform.machine()}",
        "versions": versions,
    }
    if extra:
        prov.update(extra)
    prov["input_hashes"] = hashes
    return prov


def _common_parts(a: Path, b: Path) -> tuple:
    parts = []
    for x, y in zip(a.parts, b.parts):
        if x != y:
            break
        parts.append(x)
    return tuple(parts) or (a.anchor or ".",)


def read_any_table(path: Path) -> pd.DataFrame:
    """A result table by suffix (CSV/TSV/Parquet)."""
    return read_table(path)
