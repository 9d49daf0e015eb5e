"""Bad input to `sitekit robustness run` and `robustness features` (issue 14 item 7, issue 15
item 11): refused before any work, exit 2, one line naming the culprit, nothing written."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.multiclass import OutputCodeClassifier

from .conftest import write_suite


def _feats(table):
    df = pd.read_csv(table)
    return df, [c for c in df.columns if c.startswith("original_")]


def _save(bad, model, name="m.skops"):
    sio.dump(model, bad.path(name))
    trusted = sio.get_untrusted_types(file=bad.path(name))
    return f'file = "{name}"\ntrusted = {json.dumps(trusted)}'


def test_model_on_other_features_is_refused_before_any_work(bad, table):
    df, feats = _feats(table)
    model = LogisticRegression().fit(df[feats[:3]], df["outcome"])
    write_suite(bad, model=_save(bad, model))
    t0 = time.perf_counter()
    bad.run(["robustness", "run", "suite.toml", "--out", "out"],
            fragments=["features do not match the model", feats[3], "[data] features"])
    assert time.perf_counter() - t0 < 30  # refused up front, not after the analyses


def test_model_on_other_feature_count_is_refused(bad, table):
    df, feats = _feats(table)
    model = LogisticRegression().fit(df[feats[:3]].to_numpy(), df["outcome"])
    write_suite(bad, model=_save(bad, model))
    bad.run(["robustness", "run", "suite.toml", "--out", "out"],
            fragments=["fitted on 3 features", "selects 6"])


def test_predict_only_model_is_refused(bad, table):
    df, feats = _feats(table)
    model = OutputCodeClassifier(LogisticRegression(), random_state=0).fit(df[feats], df["outcome"])
    write_suite(bad, model=_save(bad, model))
    bad.run(["robustness", "run", "suite.toml", "--out", "out"],
            fragments=["only predicts labels", "predict_proba"])


def test_regressor_is_refused(bad, table):
    df, feats = _feats(table)
    model = LinearRegression().fit(df[feats], df["outcome"])
    write_suite(bad, model=_save(bad, model))
    bad.run(["robustness", "run", "suite.toml", "--out", "out"], fragments=["not a classifier"])


def test_untrusted_and_broken_model_files(bad, table):
    bad.write("broken.skops", "not a zip")
    write_suite(bad, model='file = "broken.skops"\ntrusted = []')
    bad.run(["robustness", "run", "suite.toml", "--out", "out"], fragments=["broken.skops"])
    write_suite(bad, model='file = "nope.skops"\ntrusted = []', name="s2.toml")
    bad.run(["robustness", "run", "s2.toml", "--out", "out"], fragments=["nope.skops", "does not exist"])


def test_bad_model_params(bad, table):
    write_suite(bad, model='spec = "logistic"\nparams = { CC = 1.0 }')
    bad.run(["robustness", "run", "suite.toml", "--out", "out"], fragments=["[model] params", "CC"])


FEATURES_CASES = [
    ("n-abc", ["--n", "abc"], ["'--n'", "'abc'"]),
    ("perturbations-missing", ["--perturbations", "nope.toml"], ["nope.toml", "does not exist"]),
    ("perturbations-not-toml", ["--perturbations", "m.csv"], ["m.csv", "not valid TOML"]),
    ("manifest-missing", ["--manifest-missing"], ["nope.csv"]),
]


@pytest.mark.parametrize(("extra", "fragments"), [c[1:] for c in FEATURES_CASES],
                         ids=[c[0] for c in FEATURES_CASES])
def test_robustness_features_bad_input(bad, extra, fragments):
    bad.write("m.csv", "subject_id,image,mask\nS0,a.nii.gz,b.nii.gz\n")
    bad.write("p.toml", '[[perturbation]]\nname = "RandomGaussianBlur"\nfwhm_mm = [3.0, 7.0]\n')
    manifest = "nope.csv" if extra == ["--manifest-missing"] else "m.csv"
    args = ["robustness", "features", manifest, "--perturbations", "p.toml", "--out", "o"]
    if extra != ["--manifest-missing"]:
        args += extra
    if "--perturbations" in extra:
        args = ["robustness", "features", manifest, *extra, "--out", "o"]
    bad.run(args, fragments=fragments)
