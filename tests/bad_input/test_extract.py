"""Bad input to `sitekit extract` (issue 15 items 7, 8, 10, 11): exit 2, one line naming the
culprit, nothing written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

# the small synthetic cases of the extraction tests (tests/features/conftest.py)
_spec = importlib.util.spec_from_file_location(
    "_features_data", Path(__file__).resolve().parents[1] / "features" / "conftest.py")
_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_data)
_write_cases = _data.write_manifest

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

FAST = "setting:\n  binWidth: 0.5\nfeatureClass:\n  firstorder:\n"


@pytest.fixture
def cases(bad):
    """A manifest of three small cases (manifest.csv) and fast parameters (p.yaml)."""
    _write_cases(bad.root, 3)
    bad.write("p.yaml", FAST)
    return bad.path("manifest.csv")


def _edit_manifest(path, fn):
    df = pd.read_csv(path, dtype=str)
    fn(df).to_csv(path, index=False)


MANIFEST_CASES = [
    ("missing-column", lambda df: df.drop(columns=["mask"]), ["'mask'", "subject_id, site, image, mask"]),
    ("duplicate-id", lambda df: df.assign(subject_id=["S00", "S00", "S02"]), ["duplicate subject_id", "S00"]),
    ("empty-site", lambda df: df.assign(site=["A", None, "B"]), ["empty 'site'", "line(s) 3"]),
    ("bad-label", lambda df: df.assign(label_value=["1", "two", "1"]), ["'label_value'", "two"]),
    ("bad-suv", lambda df: df.assign(suv=["bw", "lbm", ""]), ["'suv'", "lbm"]),
    ("provenance-clash", lambda df: df.assign(image_hash="x"), ["image_hash", "rename"]),
]


@pytest.mark.parametrize(("spoil", "fragments"), [c[1:] for c in MANIFEST_CASES],
                         ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifest(bad, cases, spoil, fragments):
    _edit_manifest(cases, spoil)
    bad.run(["extract", "manifest.csv", "--out", "f.parquet", "--params", "p.yaml"],
            fragments=["manifest.csv", *fragments])


def test_semicolon_manifest(bad, cases):
    df = pd.read_csv(cases, dtype=str)
    df.to_csv(cases, index=False, sep=";")
    bad.run(["extract", "manifest.csv", "--out", "f.parquet"],
            fragments=["manifest.csv", "semicolon-separated"], absent=["lacks the column"])


def test_duplicated_manifest_header(bad, cases):
    text = cases.read_text().splitlines()
    cases.write_text("\n".join([text[0].replace("age", "site"), *text[1:]]) + "\n")
    bad.run(["extract", "manifest.csv", "--out", "f.parquet"],
            fragments=["duplicated column name", "'site' (2x)"])


OPTION_CASES = [
    ("workers-abc", ["--workers", "abc"], ["'--workers'", "'abc'", "sitekit extract --help"]),
    ("workers-0", ["--workers", "0"], ["workers", ">= 1"]),
    ("workers-and-scheduler", ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], ["either"]),
    ("params-missing", ["--params", "nope.yaml"], ["nope.yaml", "does not exist"]),
    ("params-not-yaml", ["--params", "manifest.csv"], ["manifest.csv"]),
    ("suv-choice", ["--suv", "lbm"], ["'--suv'", "lbm"]),
    ("calibration-missing", ["--earl-calibration", "nope.json"], ["nope.json"]),
]


@pytest.mark.parametrize(("extra", "fragments"), [c[1:] for c in OPTION_CASES],
                         ids=[c[0] for c in OPTION_CASES])
def test_bad_options(bad, cases, extra, fragments):
    bad.run(["extract", "manifest.csv", "--out", "f.parquet", *extra], fragments=fragments)


OUTPUT_CASES = [
    ("unknown-suffix", "f.xlsx", ["f.xlsx", "unknown suffix"]),
    ("over-the-manifest", "manifest.csv", ["manifest.csv", "overwrite the manifest"]),
    ("under-a-file", "manifest.csv/f.parquet", ["manifest.csv/f.parquet", "is a file, not a folder"]),
    ("a-folder", "images", ["'--out'", "images", "directory"]),
]


@pytest.mark.parametrize(("out", "fragments"), [c[1:] for c in OUTPUT_CASES],
                         ids=[c[0] for c in OUTPUT_CASES])
def test_bad_outputs(bad, cases, out, fragments):
    err = bad.run(["extract", "manifest.csv", "--out", out, "--params", "p.yaml"],
                  fragments=fragments)
    assert ".tmp" not in err


def test_existing_outputs_need_force_or_resume(bad, cases):
    from sitekit.cli import main

    assert main(["extract", "manifest.csv", "--out", "f.parquet", "--params", "p.yaml"]) == 0
    bad.run(["extract", "manifest.csv", "--out", "f.parquet", "--params", "p.yaml"],
            fragments=["f.parquet", "--force", "--resume"])
    bad.run(["extract", "manifest.csv", "--out", "f.parquet", "--resume"],  # other parameters
            fragments=["other parameters", "--params"])


def test_missing_manifest(bad):
    bad.run(["extract", "nope.csv", "--out", "f.parquet"], fragments=["nope.csv", "does not exist"])


def test_hostile_subject_ids_never_become_paths(bad, cases):
    """Issue 15 item 7: ids become part-file names only after sanitising (no escape)."""
    from sitekit.cli import main

    _edit_manifest(cases, lambda df: df.assign(subject_id=["../../ESCAPED", "a/b", "S02"]))
    assert main(["extract", "manifest.csv", "--out", "out/f.parquet", "--params", "p.yaml"]) == 0
    assert not (bad.root.parent / "ESCAPED").exists() and not (bad.root / "ESCAPED").exists()
    assert sorted(p.name for p in (bad.root / "out").iterdir()) == ["f.errors.csv", "f.parquet"]
    got = pd.read_parquet(bad.root / "out" / "f.parquet")["subject_id"].tolist()
    assert got == ["../../ESCAPED", "a/b", "S02"]  # kept as data, never as a path
