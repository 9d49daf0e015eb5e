"""SiteMonitor end to end: detection, batch-effect staleness, phantom QC, state."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from sitekit.harmonize import ComBat
from sitekit.monitor import ALARM_COLUMNS, SiteMonitor, batch_effect_test, phantom_history
from tests.monitor.conftest import log_features, phantom_series

LIVER = "liver_suvmean:reference_region:log"


def _split(df):
    return df[df["period"] == "reference"], df[df["period"] == "monitoring"]


def test_alarm_table_columns_and_suggestion(stream_factory):
    df, ev = stream_factory(random_state=0, reference_months=12, replacement_site=None,
                            drift=0.10)
    ref, new = _split(df)
    mon = SiteMonitor(signals=[LIVER]).fit(ref, sites=ref["site"])
    alarms = mon.update(new, sites=new["site"], times=new["time"])
    assert list(alarms.columns) == ALARM_COLUMNS
    first = alarms.iloc[0]
    assert first["site"] == "site_C" and first["direction"] == "up"
    assert "recalibrate" in first["suggestion"]
    assert first["statistic"] > first["threshold"]
    assert isinstance(first["time"], pd.Timestamp) and first["time"] >= ev["drift"]["start"]


def test_incremental_updates_equal_one_update(stream_factory):
    df, _ = stream_factory(random_state=1, replacement_site=None)
    ref, new = _split(df)
    one = SiteMonitor(signals=[LIVER, "mtv_ml:feature:log"]).fit(ref, sites=ref["site"])
    a1 = one.update(new, sites=new["site"], times=new["time"])
    inc = SiteMonitor(signals=[LIVER, "mtv_ml:feature:log"]).fit(ref, sites=ref["site"])
    parts = [inc.update(chunk, sites=chunk["site"], times=chunk["time"])
             for chunk in (new.iloc[i:i + 150] for i in range(0, len(new), 150))]
    a2 = pd.concat(parts, ignore_index=True).sort_values(["time", "site", "signal"],
                                                         ignore_index=True)
    pd.testing.assert_frame_equal(a1, a2)
    pd.testing.assert_frame_equal(one.history_.sort_values(["site", "signal", "study"],
                                                           ignore_index=True),
                                  inc.history_.sort_values(["site", "signal", "study"],
                                                           ignore_index=True))


def _delay(random_state, sites=None):
    from sitekit.datasets import make_study_stream

    df, ev = make_study_stream(random_state=random_state, reference_months=12, n_months=24,
                               drift=0.05, drift_month=12, replacement_site=None, sites=sites,
                               return_events=True)
    ref, new = _split(df)
    mon = SiteMonitor(signals=[LIVER], arl0=500).fit(ref, sites=ref["site"])
    alarms = mon.update(new, sites=new["site"], times=new["time"])
    at_c = alarms[alarms["site"] == "site_C"]
    delay = int(at_c["study"].iloc[0]) if len(at_c) else np.inf  # studies since the drift
    t_detect = at_c["time"].iloc[0] if len(at_c) else new["time"].max()
    other = alarms[(alarms["site"] != "site_C") & (alarms["time"] <= t_detect)]
    return delay, len(other) > 0


def test_calibration_drift_detected_at_that_site_only():
    """5 % step at site_C, CV 10 %, network ARL0 500 (4 sites): median delay <= 50 studies."""
    res = [_delay(seed) for seed in range(30)]
    delays = np.array([d for d, _ in res], dtype=float)
    elsewhere = np.mean([o for _, o in res])
    assert np.isfinite(delays).all()
    assert np.median(delays) <= 50
    assert elsewhere <= 0.15  # other sites alarm before detection in few replicates


def test_scanner_replacement_flagged_and_adapt_removes_alarm(stream_factory):
    df, ev = stream_factory(random_state=2, drift_site=None, reference_months=6,
                            replacement_month=12)
    df, feats = log_features(df)
    ref, new = _split(df)
    model = ComBat().fit(ref[feats], sites=ref["site"])
    mon = SiteMonitor(signals=[LIVER], harmonizer=model, window=30).fit(ref, sites=ref["site"])
    start = ev["replacement"]["start"]
    before = new[new["time"] < start]
    mon.update(before, sites=before["site"], times=before["time"])
    after_b = new[(new["time"] >= start) & (new["site"] == "site_B")]
    window1, window2 = after_b.iloc[:60], after_b.iloc[60:120]
    a1 = mon.update(window1, sites=window1["site"], times=window1["time"])
    harm = a1[a1["signal"] == "harmonization"]
    assert len(harm) and set(harm["site"]) == {"site_B"}
    assert "ComBat.adapt" in harm["suggestion"].iloc[0]
    # adapt the model to the new scanner under a new label, and watch that from now on
    adapted = model.adapt(window1[feats], sites=["site_B@new"] * len(window1))
    mon.set_harmonizer(adapted, site_map={"site_B": "site_B@new"})
    a2 = mon.update(window2, sites=window2["site"], times=window2["time"])
    assert not ((a2["signal"] == "harmonization") & (a2["site"] == "site_B")).any()
    assert batch_effect_test(adapted, window2[feats], site="site_B",
                             model_site="site_B@new")["p_value"] > 0.01
    assert batch_effect_test(model, window2[feats], site="site_B")["p_value"] < 1e-6


def test_batch_effect_test_calibrated_in_control():
    """In control, the window test's p-value is uniform-ish: P(p < alpha) ~ alpha."""
    from sitekit.datasets import make_study_stream

    ps = []
    for seed in range(8):
        df = make_study_stream(random_state=100 + seed, drift_site=None, replacement_site=None,
                               reference_months=6)
        df, feats = log_features(df)
        ref, new = _split(df)
        model = ComBat().fit(ref[feats], sites=ref["site"])
        for s in model.sites_:
            rows = new[new["site"] == s]
            for w in range(0, len(rows) - 29, 30):
                ps.append(batch_effect_test(model, rows.iloc[w:w + 30][feats], site=s)["p_value"])
    ps = np.array(ps)
    assert len(ps) == 8 * 4 * 12
    assert np.mean(ps < 0.05) < 0.08
    assert np.mean(ps < 0.01) < 0.025


@pytest.mark.parametrize("random_state", range(20))
def test_phantom_drift_flagged_before_leaving_band(random_state):
    checks = phantom_series(random_state=random_state)
    wide = phantom_history(checks)
    cols = [c for c in wide.columns if c.startswith("rc_")]
    ref, new = wide[wide["time"] < 8], wide[wide["time"] >= 8]
    mon = SiteMonitor(signals=cols, chart="westgard", min_reference=8).fit(ref, sites=ref["site"])
    assert mon.signals_[0].kind == "phantom_rc"
    alarms = mon.update(new, sites=new["site"], times=new["time"])
    out = checks[(checks["rc"] < checks["lower"]) | (checks["rc"] > checks["upper"])]
    left_band = out["time"].min()
    assert len(alarms), "the drift was never flagged"
    assert alarms["time"].min() < left_band
    assert "EARL" in alarms["suggestion"].iloc[0]


def test_save_load_roundtrip_continues_identically(tmp_path, stream_factory):
    df, _ = stream_factory(random_state=4, replacement_site=None)
    df, feats = log_features(df)
    ref, new = _split(df)
    model = ComBat().fit(ref[feats], sites=ref["site"])
    first, second = new.iloc[:500], new.iloc[500:]
    mon = SiteMonitor(signals=[LIVER, "model_score:model_output:logit"], harmonizer=model,
                      window=25).fit(ref, sites=ref["site"])
    mon.update(first, sites=first["site"], times=first["time"])
    mon.save(tmp_path / "state")
    loaded = SiteMonitor.load(tmp_path / "state")
    a_orig = mon.update(second, sites=second["site"], times=second["time"])
    a_load = loaded.update(second, sites=second["site"], times=second["time"])
    pd.testing.assert_frame_equal(a_orig, a_load)
    pd.testing.assert_frame_equal(mon.history_, loaded.history_)
    assert mon.summary().equals(loaded.summary())


def test_state_file_has_no_pickle_and_detects_tampering(tmp_path):
    from sitekit.exceptions import ModelFileError

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=60)})
    path = SiteMonitor(signals=["x"]).fit(ref, sites=["a"] * 60).save(tmp_path / "s")
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        SiteMonitor.load(tmp_path / "s")


_SAVER = textwrap.dedent("""
    import sys, numpy as np, pandas as pd
    from sitekit.monitor import SiteMonitor
    state = sys.argv[1]
    mon = SiteMonitor.load(state)
    rng = np.random.default_rng(1)
    t = float(mon.last_time_[0])
    print("ready", flush=True)
    while True:  # a nightly job in fast motion: update, save, repeat
        new = pd.DataFrame({f"x{j}": rng.normal(size=200) for j in range(20)})
        t_new = t + 1 + np.arange(200)
        mon.update(new, sites=["a"] * 200, times=t_new)
        t = t_new[-1]
        mon.save(state, force=True)
""")


def test_kill_during_save_keeps_a_valid_state(tmp_path):
    """Regression guard: a crash during the update/save cycle never loses the saved state."""
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({f"x{j}": rng.normal(size=60) for j in range(20)})
    state = tmp_path / "state"
    SiteMonitor(signals=list(ref.columns), split="none").fit(ref, sites=["a"] * 60).save(state)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for delay in (0.8, 1.7, 2.9):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(state)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mon = SiteMonitor.load(state)  # old or new state, never a broken one
        assert mon.n_seen_[0] % 200 == 0
        assert len(mon.history_) == 20 * mon.n_seen_[0]


def test_phantom_history_with_calibration_ratio():
    checks = phantom_series(random_state=0, n_reference=8, n_drift=2)
    cal = pd.DataFrame({"site": "site_A", "time": range(10),
                        "ratio": 1.0 + 0.01 * np.random.default_rng(0).standard_normal(10)})
    wide = phantom_history(checks, cal)
    assert len(wide) == 10 and "calibration_ratio" in wide.columns
    assert wide["rc_a50_37mm"].notna().all()
    mon = SiteMonitor(signals=["calibration_ratio", "rc_max_10mm"], chart="westgard",
                      min_reference=8).fit(wide, sites=wide["site"])
    assert [s.kind for s in mon.signals_] == ["phantom_calibration", "phantom_rc"]
    bad = wide.iloc[9:].assign(calibration_ratio=1.2, time=10)
    alarm = mon.update(bad, sites=bad["site"], times=bad["time"])
    assert alarm["rule"].tolist() == ["1_3s"] and "recalibrate" in alarm["suggestion"].iloc[0]
