"""Tests of ``sitekit robustness features`` (issue 6)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from sitekit.cli import cli, main

PARAMS_YAML = """\
setting:
  binWidth: 0.25
  label: 1
imageType:
  Original: {}
featureClass:
  firstorder: [Mean, Maximum]
  shape: [VoxelVolume]
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    size = 20
    z, y, x = np.mgrid[:size, :size, :size].astype(float)
    r = np.sqrt((x - 9.5) ** 2 + (y - 9.5) ** 2 + (z - 9.5) ** 2)
    rows = []
    for i in range(3):
        radius = 3.0 + i
        arr = 1.0 + (3.0 + 3.0 * i) * np.exp(-(r**2) / (2 * (radius / 1.3) ** 2))
        arr = arr + 0.05 * rng.normal(size=r.shape)
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing((2.0, 2.0, 2.0))
        m = sitk.GetImageFromArray((r <= radius).astype(np.uint8))
        m.CopyInformation(img)
        (root / "img").mkdir(exist_ok=True)
        sitk.WriteImage(img, str(root / "img" / f"s{i}.nii.gz"))
        sitk.WriteImage(m, str(root / "img" / f"s{i}_mask.nii.gz"))
        rows.append({"subject_id": f"s{i}", "site": "X", "image": f"img/s{i}.nii.gz",
                     "mask": f"img/s{i}_mask.nii.gz"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "params.yaml").write_text(PARAMS_YAML)
    (root / "chain.toml").write_text('chain = "TV"\n')
    (root / "steps.toml").write_text(
        '[[perturbation]]\nname = "RandomIntensityScale"\nerror_percent = [-5.0, 5.0]\n\n'
        '[[perturbation]]\nname = "RandomGaussianNoise"\ncov = [0.02, 0.05]\n'
    )
    return root


def run(study, *extra):
    return main([
        "robustness", "features", str(study / "manifest.csv"), "--params", str(study / "params.yaml"),
        "--n", "2", *extra,
    ])


def test_help_lists_options():
    result = CliRunner().invoke(cli, ["robustness", "features", "--help"])
    assert result.exit_code == 0
    for opt in ("--perturbations", "--n", "--out", "--seed", "--threshold", "--form", "--workers", "--force"):
        assert opt in result.output


def test_writes_outputs_and_is_reproducible(study, tmp_path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    assert run(study, "--perturbations", str(study / "chain.toml"), "--out", str(out1), "--seed", "4") == 0
    assert run(study, "--perturbations", str(study / "chain.toml"), "--out", str(out2), "--seed", "4") == 0
    for name in ("stability.csv", "robust_features.txt", "perturbations.jsonl", "summary.json"):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name
    table = pd.read_csv(out1 / "stability.csv")
    assert set(table.columns) >= {"feature", "icc", "ci_low", "ci_high", "koo_li", "robust"}
    assert len(table) == 3
    records = [json.loads(line) for line in (out1 / "perturbations.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 2
    assert [s["name"] for s in records[0]["steps"]] == ["Translate", "MaskVolume"]
    summary = json.loads((out1 / "summary.json").read_text())
    assert summary["n"] == 2 and summary["entropy"] == 4 and summary["n_cases"] == 3
    assert summary["perturbation"]["name"] == "Compose"
    robust = (out1 / "robust_features.txt").read_text().splitlines()
    assert robust == table.loc[table["robust"], "feature"].tolist()


def test_step_list_toml_threshold_and_form(study, tmp_path):
    out = tmp_path / "o"
    code = run(study, "--perturbations", str(study / "steps.toml"), "--out", str(out),
               "--threshold", "0.5", "--form", "ICC(3,1)")
    assert code == 0
    table = pd.read_csv(out / "stability.csv")
    assert (table["form"] == "ICC(3,1)").all()
    # noise and calibration leave the mask alone: the shape feature is perfectly stable
    vol = table.set_index("feature").loc["original_shape_VoxelVolume"]
    assert vol["icc"] == 1.0 and bool(vol["robust"])


def test_existing_output_needs_force(study, tmp_path):
    out = tmp_path / "o"
    args = ("--perturbations", str(study / "steps.toml"), "--out", str(out))
    assert run(study, *args) == 0
    assert run(study, *args) == 2
    assert run(study, *args, "--force") == 0


def test_bad_inputs_exit_2(study, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('chain = "NQ"\n')
    assert run(study, "--perturbations", str(bad), "--out", str(tmp_path / "o")) == 2
    broken = tmp_path / "broken.toml"
    broken.write_text("chain = [\n")
    assert run(study, "--perturbations", str(broken), "--out", str(tmp_path / "o")) == 2
    assert run(study, "--perturbations", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")) == 2
    assert run(study, "--perturbations", str(study / "chain.toml"), "--out", str(tmp_path / "o"),
               "--form", "ICC(9,9)") == 2
    assert not (tmp_path / "o").exists()
