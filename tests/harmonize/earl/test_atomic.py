"""Result sets of `earl check` are atomic (issue 15 item 6): a run killed at a random point
(SIGKILL or SIGINT) leaves the old set or the new one, never a mixture, and no temporary
folder that a rerun trips over; .mhd outputs name their final data file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sitekit.cli import main
from sitekit.io import write_image

from ._data import phantom

FILES = {"measurements.csv", "background.csv", "check.csv", "verdict.csv", "verdict.json", "spheres_site_x.png"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("atomic")
    scan = phantom(8.0, (4.0, 4.0, 4.0), centre=(2.0, 2.0, 2.0))
    write_image(scan.image, d / "site_x.nii.gz")
    scan.fill.to_json(d / "fill.json")
    return d


def _cmd(d: Path, out: Path, standard: str, force: bool):
    return [sys.executable, "-m", "sitekit", "earl", "check", str(d / "site_x.nii.gz"), "--fill",
            str(d / "fill.json"), "--standard", standard, "--out", str(out)] + (["--force"] if force else [])


def _state(out: Path) -> str:
    """'none', or the standard of a complete, self-consistent result set."""
    if not out.exists():
        return "none"
    assert {p.name for p in out.iterdir()} == FILES
    doc = json.loads((out / "verdict.json").read_text())
    chk = pd.read_csv(out / "check.csv")
    assert sorted(set(chk["standard"])) == doc["standards"]  # verdict and measurements of one run
    return "+".join(doc["standards"])


def test_killed_check_leaves_old_or_new_set(tmp_path, inputs):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    out = tmp_path / "out"
    assert subprocess.run(_cmd(inputs, out, "earl1", False), env=env, capture_output=True).returncode == 0
    assert _state(out) == "EARL1"
    # how long a full run takes here, to spread the kills over it
    t = time.perf_counter()
    assert subprocess.run(_cmd(inputs, out, "earl1", True), env=env, capture_output=True).returncode == 0
    full = time.perf_counter() - t
    rng = np.random.default_rng(15)
    seen = set()
    for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGINT):
        old = _state(out)
        new = "EARL2" if old != "EARL2" else "EARL1"
        proc = subprocess.Popen(_cmd(inputs, out, new.lower(), True), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.3, 1.05)) * full)
        proc.send_signal(sig)
        proc.wait(timeout=120)
        now = _state(out)
        assert now in (old, new), (sig, old, new, now)
        seen.add("old" if now == old else "new")
        # a rerun does not trip over anything the killed run left
        rerun = subprocess.run(_cmd(inputs, out, "earl1", True), env=env, capture_output=True, text=True, encoding="utf-8")
        assert rerun.returncode == 0, rerun.stderr
        assert _state(out) == "EARL1"
        assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no stray temporary folders
    assert seen  # the kills landed somewhere in the run


def test_mhd_output_names_its_final_data_file(tmp_path, inputs):
    """Regression (issue 15 item 6): .mhd outputs pointed at temp-named data files."""
    rc = main(["earl", "filter", str(inputs / "site_x.nii.gz"), "--fwhm", "4", "--out", str(tmp_path / "f.mhd")])
    assert rc == 0
    header = (tmp_path / "f.mhd").read_text()
    assert "ElementDataFile = f.zraw" in header or "ElementDataFile = f.raw" in header, header
    assert sorted(p.name for p in tmp_path.iterdir()) in (["f.mhd", "f.zraw"], ["f.mhd", "f.raw"])


def test_stale_temporaries_of_a_dead_run_are_removed_and_an_interrupted_swap_is_undone(tmp_path):
    from sitekit.io import remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    # killed while writing: a half-written new set
    half = tmp_path / f".out.{dead.pid}.abc.tmp"
    half.mkdir()
    (half / "measurements.csv").write_text("partial")
    # killed between moving the old set aside and the new one in: the old set waits in .old/x
    old = tmp_path / f".out.{dead.pid}.def.old"
    (old / "x").mkdir(parents=True)
    (old / "x" / "verdict.json").write_text("{}")
    # a live run's folder is left alone
    live = tmp_path / f".out.{os.getpid()}.ghi.tmp"
    live.mkdir()
    removed = remove_stale_temporaries(out)
    assert sorted(p.name for p in removed) == sorted([half.name, old.name])
    assert (out / "verdict.json").read_text() == "{}"  # the old set is back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name])
