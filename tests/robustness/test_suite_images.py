"""Image-model suites ([model] kind = "onnx" | "threshold" | "python") through the suite runner
and `sitekit robustness run` (issue 16 item 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sitekit.exceptions import ValidationError
from sitekit.robustness.suite import load_suite, run_suite

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "sample_data" / "cohort" / "manifest.csv"


def _suite(tmp_path: Path, model: str, checks: str, data: str | None = None) -> Path:
    p = tmp_path / "suite.toml"
    p.write_text(f'[data]\n{data or f"manifest = {json.dumps(str(MANIFEST))}"}\n\n[model]\n{model}\n\n'
                 f'[settings]\nrandom_state = 0\nn_bootstrap = 50\n\n[checks]\n{checks}\n')
    return p


def test_threshold_suite_passes_and_fails_by_its_bounds(tmp_path):
    p = _suite(tmp_path, 'kind = "threshold"\nfraction = 0.41', "worst_site_dice = { min = 0.3 }")
    res = run_suite(p, out_dir=tmp_path / "out")
    assert res.passed and res.checks["name"].tolist() == ["worst_site_dice"]
    assert 0.3 < res.checks["value"].iloc[0] < 1.0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["verdict"] == "pass" and saved["model"]["kind"] == "threshold"
    strict = _suite(tmp_path, 'kind = "threshold"\nfraction = 0.41', "worst_site_dice = { min = 0.99 }")
    assert not run_suite(strict).passed


@pytest.mark.parametrize("model,checks,data,fragment", [
    ('kind = "onnx"\npath = "x.onnx"\nparms = 1', "worst_site_dice = { min = 0.5 }", None, "parms"),
    ('kind = "tensorflow"', "worst_site_dice = { min = 0.5 }", None, "tensorflow"),
    ('kind = "threshold"', "worst_site_dise = { min = 0.5 }", None, "worst_site_dice"),
    ('kind = "threshold"', "worst_site_dice = { min = 0.5 }", 'table = "x.csv"', "manifest"),
    ('kind = "threshold"', "mtv_bias_at_blur = { max = 5, fwhm = 4 }", None, "fwhm_mm"),
])
def test_image_suite_typos_are_errors(tmp_path, model, checks, data, fragment):
    with pytest.raises(ValidationError, match=fragment):
        load_suite(_suite(tmp_path, model, checks, data))


@pytest.mark.slow
def test_cli_runs_the_shipped_onnx_suite(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sitekit", "robustness", "run",
                           str(ROOT / "sample_data" / "models" / "segmentation_suite.toml"),
                           "--out", str(tmp_path / "seg")], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((tmp_path / "seg" / "results.json").read_text())
    assert {c["name"] for c in res["checks"]} == {"worst_site_dice", "mtv_bias_at_blur",
                                                   "attack_dice_drop"}
    assert res["model"]["kind"] == "onnx"
