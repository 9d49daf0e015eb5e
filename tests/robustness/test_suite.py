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
from sitekit.exceptions import CheckFailedError, ModelFileError, ValidationError
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
    assert results["model"]["unseen_site"] in ("adapt", "standardize")


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
