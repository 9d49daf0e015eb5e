"""Federated ComBat through the command line.

The protocol test runs ``examples/federated_demo.sh`` over 4 site tables: every step is a
separate ``sitekit`` process on separate files, and the final tables equal pooled ComBat.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scale_data import assert_close, blank_cells, make_cohort

from sitekit.cli import cli, main
from sitekit.harmonize._combat import ComBat

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "federated_demo.sh"


def _sitekit_command() -> str:
    exe = Path(sys.executable).parent / "sitekit"
    return str(exe) if exe.exists() else f"{sys.executable} -m sitekit"


def _write_sites(folder: Path, *, seed: int, nan_fraction: float = 0.0) -> pd.DataFrame:
    X, sites, cov = make_cohort(n_per_site=(25, 40, 18, 33), n_features=8, seed=seed,
                                site_names=("s1", "s2", "s3", "s4"))
    if nan_fraction:  # missing cells that respect the privacy rule (min_cell_size=5)
        X = blank_cells(X, sites, cov, feature_fraction=nan_fraction * 10, seed=seed)
    table = pd.concat([pd.Series(np.arange(len(X)) + 1000, name="subject_id"),
                       pd.Series(sites, name="site"), cov, X], axis=1)
    table = table.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows not sorted
    folder.mkdir(parents=True, exist_ok=True)
    for s, part in table.groupby("site", sort=False):
        part.to_csv(folder / f"hospital_{s}.csv", index=False)
    return table


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_demo_script_four_sites_equals_pooled(tmp_path):
    table = _write_sites(tmp_path / "sites", seed=31, nan_fraction=0.02)
    feats = [c for c in table.columns if c.startswith("feat_")]
    env = dict(os.environ, SITEKIT=_sitekit_command(), COVARIATES="age,sex",
               COMBINE_OPTIONS="--nonparametric")
    proc = subprocess.run(["bash", str(DEMO), str(tmp_path / "sites")], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # what leaves a site is printed
    assert "Exactly this leaves the site" in proc.stdout and "dty" in proc.stdout
    pooled = ComBat(parametric=False).fit_transform(
        table[feats], sites=table["site"].to_numpy(), covariates=table[["age", "sex"]]
    )
    for s in ("s1", "s2", "s3", "s4"):
        original = pd.read_csv(tmp_path / "sites" / f"hospital_{s}.csv")
        out = pd.read_csv(tmp_path / "sites" / f"hospital_{s}.harmonized.csv")
        assert list(out.columns) == list(original.columns)
        assert out["subject_id"].tolist() == original["subject_id"].tolist()  # input order
        expected = pooled.loc[table["site"] == s].set_axis(table.loc[table["site"] == s, "subject_id"])
        assert_close(out[feats].to_numpy(), expected.loc[out["subject_id"]].to_numpy(), rel=1e-8)
        pd.testing.assert_frame_equal(out[["site", "age", "sex"]], original[["site", "age", "sex"]])


def test_summarize_prints_what_leaves_and_refuses_small_sites(tmp_path):
    _write_sites(tmp_path, seed=32)
    runner = CliRunner()
    res = runner.invoke(cli, ["federated", "summarize", str(tmp_path / "hospital_s2.csv"),
                              "--site-col", "site", "--covariates", "age,sex",
                              "--out", str(tmp_path / "s2.npz")])
    assert res.exit_code == 0, res.output
    for word in ("dtd", "dty", "float64", "design,feature", "'n_samples': 40".replace("'", '"'),
                 "feat_0", "features (8)"):
        assert word in res.output
    assert "subject_id" not in res.output.split("features (8)")[1]  # id columns are not features
    args = ["federated", "summarize", str(tmp_path / "hospital_s3.csv"), "--site-col", "site",
            "--min-site-size", "20", "--out", str(tmp_path / "s3.npz")]
    assert main(args) == 2
    assert not (tmp_path / "s3.npz").exists()
    # an existing output needs --force
    again = ["federated", "summarize", str(tmp_path / "hospital_s2.csv"), "--site-col", "site",
             "--covariates", "age,sex", "--out", str(tmp_path / "s2.npz")]
    assert main(again) == 2
    assert main([*again, "--force"]) == 0


def test_combine_reports_mismatched_summaries(tmp_path, capsys):
    _write_sites(tmp_path, seed=33)
    a = ["federated", "summarize", str(tmp_path / "hospital_s1.csv"), "--site-col", "site",
         "--covariates", "age,sex", "--out", str(tmp_path / "a.npz")]
    b = ["federated", "summarize", str(tmp_path / "hospital_s2.csv"), "--site-col", "site",
         "--covariates", "age", "--out", str(tmp_path / "b.npz")]
    assert main(a) == 0 and main(b) == 0
    capsys.readouterr()
    assert main(["federated", "combine", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                 "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "encodes its covariates" in err and "same --covariates" in err
    assert not (tmp_path / "m.npz").exists()
