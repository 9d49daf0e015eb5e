"""Bad suite files (issue 15 item 9): typos and wrong types are errors with a suggestion,
found before any work; nothing is written."""

from __future__ import annotations

import pytest

from sitekit.exceptions import ValidationError
from sitekit.robustness import run_suite

from .conftest import write_suite

CASES = [
    # (id, write_suite keyword arguments, message fragments)
    ("harmonise", {"model": 'spec = "logistic"\nharmonise = "combat"'},
     ["unknown key 'harmonise' in [model]", "Did you mean 'harmonize'"]),
    ("parms", {"model": 'spec = "logistic"\nparms = { C = 0.1 }'},
     ["unknown key 'parms' in [model]", "Did you mean 'params'"]),
    ("covariate", {"data_extra": 'covariate = ["age"]'},
     ["unknown key 'covariate' in [data]", "Did you mean 'covariates'"]),
    ("stabilty", {"data_extra": 'stabilty = "stability.csv"'},
     ["unknown key 'stabilty' in [data]", "Did you mean 'stability'"]),
    ("unknown-check-key", {"checks": "auc_drop_noise = { levl = 0.25, max = 0.1 }"},
     ["unknown key 'levl' in check 'auc_drop_noise'", "Did you mean 'level'"]),
    ("unknown-check", {"checks": "worst_site_acu = { min = 0.5 }"},
     ["'worst_site_acu'", "Did you mean 'worst_site_auc'"]),
    ("covariates-not-list", {"data_extra": 'covariates = "age"'},
     ["[data] covariates must be a list"]),
    ("params-not-table", {"model": 'spec = "logistic"\nparams = 0.1'},
     ["[model] params must be a table"]),
    ("params-with-file", {"model": 'file = "m.skops"\ntrusted = []\nparams = { C = 1 }'},
     ["params only apply to 'spec'"]),
    ("bad-spec", {"model": 'spec = "logistc"'}, ["Did you mean 'logistic'"]),
    ("bad-harmonize", {"model": 'spec = "logistic"\nharmonize = "neurocombat"'},
     ["harmonize must be \"combat\""]),
    ("no-bound", {"checks": "worst_site_auc = { level = 1 }"}, ["unknown key 'level'"]),
    ("both-bounds", {"checks": "worst_site_auc = { min = 0.5, max = 0.9 }"},
     ["exactly one of 'min' or 'max'"]),
    ("features-missing", {"features": '["original_nope", "original_firstorder_Mean"]'},
     ["'original_nope'"]),
    ("features-no-match", {"features": '"^wavelet_"'}, ["matches no column"]),
    ("bad-regex", {"features": '"(["'}, ["not a valid regex"]),
    ("missing-table", {"table": "nope.csv"}, ["nope.csv", "does not exist"]),
]


@pytest.mark.parametrize(("kwargs", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_suite_cli(bad, table, kwargs, fragments):
    write_suite(bad, **kwargs)
    bad.run(["robustness", "run", "suite.toml", "--out", "out"], fragments=["suite.toml", *fragments]
            if kwargs.get("table") is None else fragments)


@pytest.mark.parametrize(("kwargs", "fragments"), [c[1:] for c in CASES[:6]],
                         ids=[c[0] for c in CASES[:6]])
def test_bad_suite_api(bad, table, kwargs, fragments):
    write_suite(bad, **kwargs)
    bad.call(lambda: run_suite(bad.path("suite.toml"), out_dir=bad.path("out")), ValidationError,
             fragments)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[data\n", ["not valid TOML"]),
        ('[data]\ntable = "table.csv"\nlable = "outcome"\nsite = "site"\n[model]\nspec = "logistic"'
         '\n[checks]\nworst_site_auc = { min = 0.5 }\n', ["Did you mean 'label'"]),
        ('[dataa]\ntable = "t.csv"\n', ["unknown key 'dataa'", "Did you mean 'data'"]),
        ('[model]\nspec = "logistic"\n[checks]\nworst_site_auc = { min = 0.5 }\n', ["missing [data]"]),
        ('data = 3\n[model]\nspec = "logistic"\n[checks]\nx = 1\n', ["[data] must be a table"]),
    ],
    ids=["not-toml", "lable", "unknown-section", "missing-section", "section-not-table"],
)
def test_broken_suite_files(bad, text, fragments):
    bad.write("suite.toml", text)
    bad.run(["robustness", "run", "suite.toml", "--out", "out"], fragments=fragments)


def test_existing_result_set_needs_force_and_is_untouched(bad, table):
    write_suite(bad)
    bad.write("out/results.json", "{}")
    bad.write("out/loso.csv", "old")
    bad.run(["robustness", "run", "suite.toml", "--out", "out"], fragments=["out", "--force"])


def test_folder_of_other_files_is_never_replaced(bad, table):
    write_suite(bad)
    bad.write("mine/notes.txt", "keep")
    bad.run(["robustness", "run", "suite.toml", "--out", "mine", "--force"],
            fragments=["mine", "holds other files", "new or empty folder"])
