"""Robustness suites: TOML -> run -> tables + results.json -> verdict; CLI exit codes (issue 7)."""

from __future__ import annotations

import json
import operator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sitekit.cli import main
from sitekit.datasets import make_feature_table
from sitekit.exceptions import CheckFailedError, ModelFileError, OutputExistsError, ValidationError
from sitekit.robustness import run_suite
from sitekit.robustness.sites import POOLED

SUITE_DIR = Path(__file__).resolve().parents[2] / "sample_data" / "suite"

SMALL = """
[data]
table = "table.csv"
features = "^original_"
label = "outcome"
site = "site"
covariates = ["age", "sex"]
{data_extra}

[model]
{model}

[settings]
random_state = 0
n_bootstrap = 20
n_permutations = 0
cv = 3
n_repeats = 2

[stress]
noise_levels = [0.25]
calibration_factors = [1.1]
{stress_extra}

[adversarial]
budgets = [0.25]
max_cases = 10
max_iter = 3          # HopSkipJump budget for non-linear models (kept small for tests)
max_eval = 50
{adv_extra}

[checks]
{checks}
"""

LOGISTIC = 'spec = "logistic"\nharmonize = "combat"'
EASY = "worst_site_auc = { min = 0.5 }\nauc_drop_noise = { level = 0.25, max = 0.5 }"


@pytest.fixture
def small(tmp_path):
    df = make_feature_table(n_per_site=(30, 35, 30), n_features=6, random_state=0)
    df.to_csv(tmp_path / "table.csv", index=False)

    def write(model=LOGISTIC, checks=EASY, name="suite.toml", data_extra="", stress_extra="",
              adv_extra=""):
        path = tmp_path / name
        path.write_text(SMALL.format(model=model, checks=checks, data_extra=data_extra,
                                     stress_extra=stress_extra, adv_extra=adv_extra),
                        encoding="utf-8")
        return path

    return write


def test_sample_suite_passes(tmp_path):
    out = tmp_path / "out"
    assert main(["robustness", "run", str(SUITE_DIR / "suite.toml"), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "sitekit.robustness.suite/1"
    assert results["verdict"] == "pass" and results["failed"] == []
    names = {c["name"] for c in results["checks"]}
    assert {"worst_site_auc", "site_predictability", "auc_drop_noise",
            "median_adversarial_distance"} <= names
    for check in results["checks"]:
        assert set(check) == {"name", "value", "op", "threshold", "passed", "description", "details"}
    for table in results["tables"].values():
        assert (out / table).is_file()
    # the harmonised site predictability is what the check reads, and it dropped from raw
    sp = pd.read_csv(out / "site_predictability.csv").set_index("space")["auc"]
    assert sp["raw"] > 0.9 and sp["harmonized"] < 0.625
    assert results["model"]["unseen_sites"] in ("adapt", "standardize")


def test_fragile_model_fails_with_exit_code_1(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["robustness", "run", str(SUITE_DIR / "fragile.toml"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAIL" in err and "worst_site_auc" in err and "site_predictability" in err
    results = json.loads((out / "results.json").read_text())  # outputs are written first
    assert results["verdict"] == "fail"
    assert {"worst_site_auc", "site_predictability"} <= set(results["failed"])


def test_checks_read_the_tables_and_raise_for_failure(small):
    path = small(checks="worst_site_auc = { min = 0.99 }\n"
                        "median_adversarial_distance = { min = 0.0 }\n"
                        "flip_rate = { budget = 0.25, max = 1.0 }")
    result = run_suite(path)
    loso = result.tables["loso"]
    auc = loso[(loso["metric"] == "roc_auc") & (loso["site"] != POOLED)]["value"]
    checks = result.checks.set_index("name")
    assert checks.loc["worst_site_auc", "value"] == auc.min()
    assert checks.loc["median_adversarial_distance", "value"] == pytest.approx(
        np.median(result.tables["adversarial"]["distance"]))
    assert result.failed == ["worst_site_auc"] and result.verdict == "fail"
    with pytest.raises(CheckFailedError, match=r"worst_site_auc = .* \(needs >= 0.99\)") as info:
        result.raise_for_failure()
    assert info.value.result is result


def test_existing_output_needs_force(small, tmp_path):
    path = small()
    out = tmp_path / "out"
    assert main(["robustness", "run", str(path), "--out", str(out)]) == 0
    assert main(["robustness", "run", str(path), "--out", str(out)]) == 2
    assert main(["robustness", "run", str(path), "--out", str(out), "--force"]) == 0


def test_skops_model_needs_an_explicit_trusted_list(small, tmp_path):
    df = pd.read_csv(tmp_path / "table.csv")
    feats = [c for c in df.columns if c.startswith("original_")]
    model = make_pipeline(FunctionTransformer(operator.pos), StandardScaler(),
                          LogisticRegression()).fit(df[feats], df["outcome"])
    sio.dump(model, tmp_path / "model.skops")
    untrusted = sio.get_untrusted_types(file=tmp_path / "model.skops")
    assert untrusted  # operator.pos is not trusted by default
    refused = small(model='file = "model.skops"\ntrusted = []', name="refused.toml")
    with pytest.raises(ModelFileError, match="not trusted"):
        run_suite(refused)
    assert main(["robustness", "run", str(refused), "--out", str(tmp_path / "o1")]) == 2
    trusted = small(model=f'file = "model.skops"\ntrusted = {json.dumps(untrusted)}',
                    name="trusted.toml")
    result = run_suite(trusted)
    assert result.info["model"]["source"] == "skops"
    assert result.info["data"]["n_test"] == len(df)  # a loaded model is evaluated on every row
    (tmp_path / "broken.skops").write_bytes(b"not a zip")
    broken = small(model='file = "broken.skops"\ntrusted = []', name="broken.toml")
    with pytest.raises(ModelFileError, match="broken.skops"):
        run_suite(broken)


@pytest.mark.parametrize(
    ("model", "checks", "message"),
    [
        (LOGISTIC, "worst_site_acu = { min = 0.5 }", "Did you mean 'worst_site_auc'"),
        (LOGISTIC, "worst_site_auc = { min = 0.5, max = 0.9 }", "exactly one of 'min' or 'max'"),
        (LOGISTIC, "auc_drop_noise = { max = 0.1 }", "needs 'level'"),
        ('spec = "logistc"', EASY, "Did you mean 'logistic'"),
        ('spec = "logistic"\nfile = "m.skops"', EASY, "exactly one of 'spec'"),
        ('file = "m.skops"', EASY, "trusted"),
    ],
)
def test_bad_suites_are_named_errors(small, model, checks, message):
    with pytest.raises(ValidationError, match=message):
        run_suite(small(model=model, checks=checks))


def test_bad_files_exit_2(tmp_path, small):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n", encoding="utf-8")
    assert main(["robustness", "run", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert main(["robustness", "run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    path = small()
    (tmp_path / "table.csv").unlink()
    assert main(["robustness", "run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o" / "results.json").exists()


def test_within_subject_units_from_a_stability_table(small, tmp_path):
    df = pd.read_csv(tmp_path / "table.csv")
    feats = [c for c in df.columns if c.startswith("original_")]
    pd.DataFrame({"feature": feats, "icc": 0.75}).to_csv(tmp_path / "stability.csv", index=False)
    within = dict(stress_extra='noise_unit = "within"', adv_extra='scale = "within"')
    with pytest.raises(ValidationError, match="stability"):
        run_suite(small(name="no_table.toml", **within))
    with_table = run_suite(small(data_extra='stability = "stability.csv"', **within))
    std_units = run_suite(small(name="std.toml"))
    assert with_table.info["data"]["stability"] == "stability.csv"
    # within SD = SD * sqrt(1 - 0.75) = SD / 2: distances in within-SD units are twice as large
    np.testing.assert_allclose(with_table.tables["adversarial"]["distance"],
                               2 * std_units.tables["adversarial"]["distance"], rtol=1e-9)


def test_black_box_model_suite_uses_hopskipjump_on_max_cases(small):
    path = small(model='spec = "random_forest"\nparams = { n_estimators = 15, max_depth = 3 }',
                 checks="median_adversarial_distance = { min = 0.0 }")
    result = run_suite(path)
    adv = result.tables["adversarial"]
    assert len(adv) == 10 and (adv["method"] == "hopskipjump").all()
    assert adv["flipped"].any()
    assert result.passed


def test_linear_model_suite_attacks_every_test_case(small):
    result = run_suite(small())
    assert len(result.tables["adversarial"]) == result.info["data"]["n_test"]
    assert (result.tables["adversarial"]["method"] == "exact").all()


# ------------------------------------------------------------------ issue 15 item 9, issue 14 item 7
@pytest.mark.parametrize(
    ("section", "text", "message"),
    [
        ("model", 'spec = "logistic"\nharmonise = "combat"', "unknown key 'harmonise' in \\[model\\]. Did you mean 'harmonize'"),
        ("model", 'spec = "logistic"\nparms = { C = 0.1 }', "unknown key 'parms' in \\[model\\]. Did you mean 'params'"),
        ("data", 'covariate = ["age"]', "unknown key 'covariate' in \\[data\\]. Did you mean 'covariates'"),
        ("stress", 'noise_level = [0.1]', "unknown key 'noise_level' in \\[stress\\]. Did you mean 'noise_levels'"),
        ("checks", "", "unknown key 'levle' in check 'auc_drop_noise'. Did you mean 'level'"),
    ],
)
def test_typos_in_a_suite_are_errors_with_a_suggestion(small, section, text, message):
    """Regression: typos in [data]/[model] were ignored and changed the verdict."""
    if section == "model":
        path = small(model=text)
    elif section == "data":
        path = small(data_extra=text)
    elif section == "stress":
        path = small(stress_extra=text)
    else:
        path = small(checks="auc_drop_noise = { levle = 0.25, max = 0.5 }")
    with pytest.raises(ValidationError, match=message):
        run_suite(path)


def _skops(model, path):
    sio.dump(model, path)
    return json.dumps(sio.get_untrusted_types(file=path))


def test_model_fitted_on_other_features_is_refused_before_any_work(small, tmp_path):
    """Regression: three minutes of work, then exit 3 'Unexpected error'."""
    df = pd.read_csv(tmp_path / "table.csv")
    feats = [c for c in df.columns if c.startswith("original_")]
    model = LogisticRegression().fit(df[feats[:4]], df["outcome"])
    trusted = _skops(model, tmp_path / "m.skops")
    path = small(model=f'file = "m.skops"\ntrusted = {trusted}')
    steps = []
    with pytest.raises(ValidationError, match="features do not match the model.*which the model was not fitted on"):
        run_suite(path, progress=steps.append)
    assert steps == []  # nothing ran
    out = tmp_path / "o"
    assert main(["robustness", "run", str(path), "--out", str(out)]) == 2
    assert not out.exists()
    # fitted on arrays: the count is checked
    model = LogisticRegression().fit(df[feats[:4]].to_numpy(), df["outcome"])
    trusted = _skops(model, tmp_path / "a.skops")
    with pytest.raises(ValidationError, match="fitted on 4 features but .* selects 6"):
        run_suite(small(model=f'file = "a.skops"\ntrusted = {trusted}', name="a.toml"))


def test_predict_only_model_is_refused(small, tmp_path):
    from sklearn.multiclass import OutputCodeClassifier

    df = pd.read_csv(tmp_path / "table.csv")
    feats = [c for c in df.columns if c.startswith("original_")]
    model = OutputCodeClassifier(LogisticRegression(), random_state=0).fit(df[feats], df["outcome"])
    trusted = _skops(model, tmp_path / "p.skops")
    path = small(model=f'file = "p.skops"\ntrusted = {trusted}')
    with pytest.raises(ValidationError, match="only predicts labels.*predict_proba"):
        run_suite(path)
    assert main(["robustness", "run", str(path), "--out", str(tmp_path / "o")]) == 2


def test_rows_with_empty_cells_are_counted(small, tmp_path, capsys):
    df = pd.read_csv(tmp_path / "table.csv")
    feats = [c for c in df.columns if c.startswith("original_")]
    df.loc[[3, 7], feats[0]] = np.nan
    df.loc[11, "age"] = np.nan
    df.to_csv(tmp_path / "table.csv", index=False)
    steps = []
    with pytest.warns(Warning, match="dropped 3 of 95 rows with empty cells"):
        result = run_suite(small(), progress=steps.append)
    assert result.info["data"]["n_dropped"] == 3 and result.info["data"]["n_samples"] == 92
    assert any("dropped 3 of 95 rows" in s for s in steps)
    assert main(["robustness", "run", str(small(name="b.toml")), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "3 of 95 rows had empty cells" in out
    assert "Stress baseline roc_auc" in out and "suite's own test split" in out


def test_site_labels_keep_leading_zeros_and_bad_cells_are_named(small, tmp_path):
    df = pd.read_csv(tmp_path / "table.csv")
    codes = {s: f"0{i}" for i, s in enumerate(sorted(df["site"].unique()), start=1)}
    df["site"] = df["site"].map(codes)
    df.to_csv(tmp_path / "table.csv", index=False)
    result = run_suite(small())
    assert sorted(result.info["data"]["sites"]) == ["01", "02", "03"]
    feats = [c for c in df.columns if c.startswith("original_")]
    df[feats[1]] = df[feats[1]].astype(object)
    df.loc[4, feats[1]] = "1,25"
    df.to_csv(tmp_path / "table.csv", index=False)
    with pytest.raises(ValidationError, match=rf"'{feats[1]}'.*'1,25' on line 6.*decimal comma"):
        run_suite(small())


def test_black_box_attack_reports_progress_and_matches_adversarial_budget(small, tmp_path):
    from sitekit.robustness.adversarial import adversarial_budget
    from sitekit.robustness.suite import _black_box_attack

    df = pd.read_csv(tmp_path / "table.csv")
    feats = [c for c in df.columns if c.startswith("original_")]
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=10, max_depth=3, random_state=0)
    model.fit(df[feats], df["outcome"])
    X, y = df[feats].iloc[:8], np.array([0, 0, 0, 0, 1, 1, 1, 1])
    attack = {"max_iter": 3, "max_eval": 50}
    steps = []
    _, budget = _black_box_attack(model, X, y, budgets=[0.25, 1.0], norm="l2", scale="std",
                                      scoring="roc_auc", random_state=0, attack=attack,
                                      step=steps.append)
    assert steps == ["adversarial: 8/8 cases attacked (HopSkipJump)"]
    ref = adversarial_budget(model, X, y, budgets=[0.25, 1.0], norm="l2", scale="std",
                             method="hopskipjump", scoring="roc_auc", random_state=0, **attack)
    pd.testing.assert_frame_equal(budget, ref, check_dtype=False)


def test_black_box_suite_reports_each_chunk(small):
    path = small(model='spec = "random_forest"\nparams = { n_estimators = 15, max_depth = 3 }',
                 checks="median_adversarial_distance = { min = 0.0 }",
                 adv_extra="", name="rf.toml")
    text = path.read_text().replace("max_cases = 10", "max_cases = 25")
    path.write_text(text)
    steps = []
    run_suite(path, progress=steps.append)
    attacked = [s for s in steps if "cases attacked" in s]
    assert attacked == [f"adversarial: {k}/25 cases attacked (HopSkipJump)" for k in (10, 20, 25)]


def test_result_set_is_replaced_whole(small, tmp_path, monkeypatch):
    """Issue 15 item 6: a run interrupted while writing leaves the old set, nothing else."""
    import sitekit.robustness.suite as suite_mod

    out = tmp_path / "o"
    first = run_suite(small(), out_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    real = suite_mod.write_table

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(suite_mod, "write_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        first.save(out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "suite.toml", "table.csv"]
    monkeypatch.undo()
    # a folder of other files is never replaced, even with force
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="holds other files"):
        run_suite(small(), out_dir=tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    (tmp_path / "empty").mkdir()
    run_suite(small(), out_dir=tmp_path / "empty")
    assert (tmp_path / "empty" / "results.json").exists()


@pytest.mark.slow
def test_killed_suite_run_leaves_the_old_set_or_the_new_one(small, tmp_path):
    """Fault injection (issue 15 item 6): SIGKILL/SIGINT at random points of `robustness run`."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[2]
    path = small()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sitekit", "robustness", "run", str(path), "--out", str(out),
           "--force"]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    full_run = time.perf_counter() - t0
    names = sorted(p.name for p in out.iterdir())
    rng = np.random.default_rng(1)
    codes = []
    for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGINT):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(float(rng.uniform(0.4, 1.05)) * full_run)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        codes.append(proc.returncode)
        # a whole set, old or new: every file, and results.json readable
        assert sorted(p.name for p in out.iterdir()) == names
        data = json.loads((out / "results.json").read_text())
        assert data["verdict"] in ("pass", "fail")
        assert pd.read_csv(out / "checks.csv")["name"].tolist() == [c["name"] for c in data["checks"]]
        assert b"Traceback" not in err, err.decode()
        # the rerun removes what a killed run left next to the set
        assert main(["robustness", "run", str(path), "--out", str(out), "--force"]) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "suite.toml", "table.csv"]
    assert sum(c != 0 for c in codes) >= 2, codes
