"""``sitekit extract`` through sitekit.cli.main: exit codes, outputs, --force, --resume."""

from __future__ import annotations

import pandas as pd
import pytest

from sitekit.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

PARAMS = "setting:\n  binWidth: 0.5\nfeatureClass:\n  firstorder:\n  glcm: [Contrast]\n"


def test_cli_extract_runs_and_refuses_overwrite(tmp_path, manifest_factory, capsys):
    m = manifest_factory(tmp_path, 3)
    (tmp_path / "p.yaml").write_text(PARAMS)
    out = tmp_path / "res" / "f.parquet"
    args = ["extract", str(m), "--out", str(out), "--params", str(tmp_path / "p.yaml")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "3 case(s)" in text and "No failed cases" in text
    df = pd.read_parquet(out)
    assert df["subject_id"].tolist() == ["S00", "S01", "S02"]
    assert "original_glcm_Contrast" in df.columns
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert main([*args, "--resume"]) == 0  # nothing left to do
    pd.testing.assert_frame_equal(pd.read_parquet(out), df)


def test_cli_extract_lists_failed_cases(tmp_path, manifest_factory, capsys):
    m = manifest_factory(tmp_path, 3)
    (tmp_path / "images" / "c1_pet.nii.gz").write_bytes(b"garbage")
    (tmp_path / "p.yaml").write_text(PARAMS)
    out = tmp_path / "f.parquet"
    assert main(["extract", str(m), "--out", str(out), "--params", str(tmp_path / "p.yaml")]) == 0
    text = capsys.readouterr().out
    assert "1 case(s) failed" in text and "S01" in text
    assert pd.read_csv(tmp_path / "f.errors.csv")["stage"].tolist() == ["read"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--params", "nope.yaml"], "nope.yaml"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "either"),
        (["--workers", "0"], "workers"),
    ],
)
def test_cli_extract_bad_input_exit_2(tmp_path, manifest, capsys, extra, message):
    assert main(["extract", str(manifest), "--out", str(tmp_path / "f.parquet"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_extract_bad_manifest(tmp_path, capsys):
    bad = tmp_path / "m.csv"
    pd.DataFrame({"subject_id": ["a"], "image": ["x.nii.gz"]}).to_csv(bad, index=False)
    assert main(["extract", str(bad), "--out", str(tmp_path / "f.parquet")]) == 2
    err = capsys.readouterr().err
    assert "'site'" in err and "'mask'" in err


def test_cli_extract_interrupt_then_resume(tmp_path, manifest_factory, capsys, monkeypatch):
    import sitekit.features._extract as extract_module

    m = manifest_factory(tmp_path, 3)
    (tmp_path / "p.yaml").write_text(PARAMS)
    args = ["extract", str(m), "--out", str(tmp_path / "f.parquet"), "--params", str(tmp_path / "p.yaml")]
    real = extract_module.process_case
    calls = []

    def ctrl_c_on_third(task, params):  # the user presses Ctrl-C during the third case
        calls.append(task["subject_id"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, params)

    monkeypatch.setattr(extract_module, "process_case", ctrl_c_on_third)
    assert main(args) == 130
    assert "--resume" in capsys.readouterr().err
    assert not (tmp_path / "f.parquet").exists()
    calls.clear()
    monkeypatch.setattr(extract_module, "process_case", lambda t, p: (calls.append(t["subject_id"]), real(t, p))[1])
    assert main([*args, "--resume"]) == 0
    assert calls == ["S02"]
    assert pd.read_parquet(tmp_path / "f.parquet")["subject_id"].tolist() == ["S00", "S01", "S02"]
