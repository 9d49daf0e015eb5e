"""demo_step with the shipped U-Net, its results folder, the report section and the suite checks."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from sitekit.datasets import load_sample_manifest, sample_data_dir
from sitekit.reports.sections.segmentation import (
    plot_bland_altman,
    plot_dice_forest,
    plot_severity_curves,
    segmentation_section,
)
from sitekit.robustness.models import OnnxSegmenter
from sitekit.robustness.segmentation import (
    RESULTS_MARKER,
    demo_step,
    load_segmentation_results,
    run_image_checks,
    segmenter_from_config,
)

matplotlib.use("Agg")
MODEL = sample_data_dir() / "models" / "unet_pet.onnx"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return demo_step(out, random_state=0, max_queries=40)


def test_model_card_describes_the_shipped_model():
    card = json.loads(MODEL.with_suffix(".json").read_text())
    assert MODEL.stat().st_size < 10 * 2**20
    assert card["training"]["script"] == "tools/train_demo_unet.py"
    import hashlib

    assert card["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    model = OnnxSegmenter(MODEL)
    assert model.spacing == (2.0, 2.0, 2.0) and model.normalise["kind"] == "scale"


def test_demo_step_writes_per_site_dice_with_cis_a_blur_sweep_and_attacks(demo_dir):
    assert (demo_dir / RESULTS_MARKER).is_file()
    res = load_segmentation_results(demo_dir)
    s = res["summary"]
    dice = s[(s["metric"] == "dice") & (s["perturbation"] == "none") & (s["site"] != "all")]
    assert set(dice["model"]) == {"unet", "threshold_41"}
    assert set(dice["site"]) == {"site_A", "site_B", "site_C", "site_D"}
    assert (dice["ci_low"] <= dice["mean"]).all() and (dice["mean"] <= dice["ci_high"]).all()
    unet = dice[dice["model"] == "unet"].set_index("site")["mean"]
    assert unet.min() > 0.3  # a working model, not noise
    curves = res["curves"]
    assert set(curves["severity"]) == {0.0, 4.0, 8.0}
    att = res["attacks"]
    assert len(att) == 2 and (att["linf"] <= att["epsilon"] + 1e-12).all()
    assert np.allclose(att["epsilon"] / att["background_sd"], att["budget_sd"])
    assert len(res["examples"]) == 2 and res["examples"][0]["image"].ndim == 2


def test_report_section_from_the_demo_results(demo_dir):
    sec = segmentation_section(demo_dir)
    kinds = [b.block for b in sec.blocks]
    assert kinds.count("figure") >= 5 and "table" in kinds
    assert any("worst-site Dice" in v.label for v in sec.verdicts)


def test_plot_functions_draw_their_data():
    summ = pd.DataFrame({"site": ["A", "B"], "mean": [0.8, 0.6], "ci_low": [0.7, 0.5], "ci_high": [0.9, 0.7]})
    ax = plot_dice_forest(summ)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B"]
    ba = pd.DataFrame({"site": ["A", "A", "B"], "pred": [2.0, 3.0, 5.0], "ref": [1.0, 3.0, 4.0]})
    ax = plot_bland_altman(ba)
    bias = np.mean([1.0, 0.0, 1.0])
    sd = np.std([1.0, 0.0, 1.0], ddof=1)
    ys = sorted(line.get_ydata()[0] for line in ax.get_lines())
    assert ys == pytest.approx(sorted([bias, bias - 1.96 * sd, bias + 1.96 * sd]))
    cur = pd.DataFrame({"site": ["A", "A"], "severity": [4.0, 8.0], "mean": [0.8, 0.7]})
    ax = plot_severity_curves(cur)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.8, 0.7])


def test_suite_image_checks():
    model = segmenter_from_config({"kind": "threshold", "fraction": 0.41})
    manifest = load_sample_manifest()
    df = pd.read_csv(manifest, dtype={"subject_id": str})
    small = df[df["site"].isin(["site_A", "site_C"])].iloc[::3]
    checks = {"worst_site_dice": {"op": "min", "threshold": 0.5, "params": {}},
              "mtv_bias_at_blur": {"op": "max", "threshold": 500.0, "params": {"fwhm_mm": 4.0}},
              "attack_dice_drop": {"op": "max", "threshold": 1.0,
                                   "params": {"epsilon": 0.3, "max_queries": 30, "n_cases": 1}}}
    table = run_image_checks(model, small, checks, base_dir=manifest.parent, n_bootstrap=50)
    assert list(table["name"]) == list(checks)
    assert table["passed"].all()
    onnx_model = segmenter_from_config({"kind": "onnx", "path": str(MODEL)})
    assert isinstance(onnx_model, OnnxSegmenter)
    strict = run_image_checks(model, small, {"worst_site_dice": {"op": "min", "threshold": 0.99, "params": {}}},
                              base_dir=manifest.parent, n_bootstrap=0)
    assert not strict["passed"].any()
