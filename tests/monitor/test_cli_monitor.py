"""`sitekit monitor init | update` and the demo step."""

import json

import pandas as pd

from sitekit.cli import main
from sitekit.datasets import make_study_stream


def _tables(tmp_path):
    df = make_study_stream(random_state=0, drift=0.10)
    ref, new = df[df["period"] == "reference"], df[df["period"] == "monitoring"]
    ref.to_csv(tmp_path / "ref.csv", index=False)
    quiet = new[new["month"] < 7].query("site == 'site_A'")
    quiet.to_csv(tmp_path / "quiet.csv", index=False)
    new[new["month"] >= 12].to_csv(tmp_path / "late.csv", index=False)
    return tmp_path


def test_init_update_exit_codes(tmp_path, capsys):
    d = _tables(tmp_path)
    state = str(d / "state")
    assert main(["monitor", "init", str(d / "ref.csv"), "--site-col", "site", "--signals",
                 "liver_suvmean:reference_region:log", "--time-col", "time",
                 "--out", state]) == 0
    assert main(["monitor", "update", str(d / "quiet.csv"), "--state", state]) == 0
    assert "No new alarms" in capsys.readouterr().out
    rc = main(["monitor", "update", str(d / "late.csv"), "--state", state, "--results",
               str(d / "res")])
    out = capsys.readouterr()
    assert rc == 1
    assert "site_C" in out.out and "recalibrate" in out.out
    doc = json.loads((d / "res" / "monitor.json").read_text())
    assert doc["kind"] == "sitekit-monitor-results"
    alarms = pd.read_csv(d / "res" / "alarms.csv")
    assert "site_C" in set(alarms["site"])
    # the same table twice is refused (exit 2, one line)
    assert main(["monitor", "update", str(d / "late.csv"), "--state", state]) == 2
    err = capsys.readouterr().err
    assert "already fed" in err and "Traceback" not in err


def test_bad_input_exit_2(tmp_path, capsys):
    d = _tables(tmp_path)
    assert main(["monitor", "init", str(d / "ref.csv"), "--site-col", "nope", "--signals",
                 "liver_suvmean", "--out", str(d / "s")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["monitor", "init", str(d / "ref.csv"), "--site-col", "site", "--signals",
                 "missing_col", "--out", str(d / "s")]) == 2
    assert main(["monitor", "update", str(d / "late.csv"), "--state", str(d / "none")]) == 2


def test_help_has_example(capsys):
    assert main(["monitor", "init", "--help"]) == 0
    assert "Example" in capsys.readouterr().out


def test_demo_step(tmp_path):
    from sitekit.cli.monitor import demo_step

    res = demo_step(tmp_path, random_state=0)
    assert (res / "monitor.json").is_file()
    summary = pd.read_csv(res / "summary.csv")
    assert set(summary["site"]) == {"site_A", "site_B", "site_C", "site_D"}
    alarms = pd.read_csv(res / "alarms.csv")
    harm = alarms[alarms["signal"] == "harmonization"]
    assert set(harm["site"]) == {"site_B"}  # the replaced scanner


def test_init_with_combat_model(tmp_path, capsys):
    import numpy as np

    from sitekit.harmonize import ComBat

    df = make_study_stream(random_state=2, drift_site=None, replacement_month=12)
    df["log_mtv"], df["log_suvmax"] = np.log(df["mtv_ml"]), np.log(df["lesion_suvmax"])
    ref, new = df[df["period"] == "reference"], df[df["period"] == "monitoring"]
    ref.to_csv(tmp_path / "ref.csv", index=False)
    new[new["month"] >= 12].to_csv(tmp_path / "late.csv", index=False)
    ComBat().fit(ref[["log_mtv", "log_suvmax"]], sites=ref["site"]).save(tmp_path / "combat.npz")
    state = str(tmp_path / "state")
    assert main(["monitor", "init", str(tmp_path / "ref.csv"), "--site-col", "site",
                 "--signals", "liver_suvmean:reference_region:log", "--time-col", "time",
                 "--combat", str(tmp_path / "combat.npz"), "--out", state]) == 0
    assert main(["monitor", "update", str(tmp_path / "late.csv"), "--state", state]) == 1
    out = capsys.readouterr().out
    assert "site_B / harmonization" in out and "ComBat.adapt" in out
