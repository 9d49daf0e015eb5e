"""The report reads `harmonize run` result sets through the library's reader.

Regression guards for issue 13 item 3 (the report parsed a diagnostics schema defined in the
CLI and sniffed model files itself) and issue 14 item 5 (the result set is named by the table
path now, with the model and diagnostics beside it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from sitekit.harmonize import harmonize_table
from sitekit.reports._build import load_section
from sitekit.reports._results import discover_results

LEGACY = Path(__file__).parents[1] / "harmonize" / "data" / "legacy_0.1"


def _run(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(LEGACY / "input.csv", folder / "features.csv")
    harmonize_table(folder / "features.csv", out=folder / "h.csv", site_col="site",
                    covariates=["age", "sex"])
    return folder


def _texts(section) -> str:
    return repr(section.__dict__)  # every block's text, whatever the block type


def test_one_result_set_per_diagnostics_file(tmp_path):
    folder = _run(tmp_path / "res")
    harmonize_table(folder / "features.csv", out=folder / "h2.csv", site_col="site",
                    covariates=["age"], mean_only=True)
    found = [f for f in discover_results(tmp_path) if f.kind == "harmonize"]
    assert len(found) == 2
    names = sorted(sorted(p.name for p in f.files) for f in found)
    assert names == [["h.csv", "h.diagnostics.json", "h.model.npz"],
                     ["h2.csv", "h2.diagnostics.json", "h2.model.npz"]]
    sec = load_section(found[0])
    assert sec.results["inputs"]


def test_changed_table_is_reported(tmp_path):
    folder = _run(tmp_path / "res")
    folder_f = next(f for f in discover_results(tmp_path) if f.kind == "harmonize")
    clean = load_section(folder_f)
    assert not any(v.label == "Harmonisation result set" for v in clean.verdicts)
    df = pd.read_csv(folder / "h.csv")
    df.loc[0, "f0"] += 1.0
    df.to_csv(folder / "h.csv", index=False)
    sec = load_section(folder_f)
    assert any(v.label == "Harmonisation result set" and v.status == "WARN" for v in sec.verdicts)
    assert "no longer match the checksums" in _texts(sec)


def test_legacy_model_folder_is_still_recognised(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(LEGACY / "combat_plain.npz", folder / "model.npz")
    found = discover_results(tmp_path)
    assert [f.kind for f in found] == ["harmonize"]
