"""Bad input to `sitekit report`: exit 2, one line naming the folder or file, nothing written."""

from __future__ import annotations

import pytest

CASES = [
    ("missing-folder", ["report", "nope", "--out", "r.html"], ["nope"]),
    ("no-results", ["report", "empty", "--out", "r.html"], ["No sitekit results", "empty"]),
    ("out-under-a-file", ["report", "empty", "--out", "afile/r.html"], []),
    ("missing-argument", ["report"], ["RESULTS_DIR", "sitekit report --help"]),
]


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_report_bad_input(bad, args, fragments):
    (bad.root / "empty").mkdir()
    bad.write("afile", "x")
    bad.run(args, fragments=fragments)


def test_existing_report_needs_force(bad):
    from sitekit.cli import main

    results = bad.root / "res"
    results.mkdir()
    (results / "stability.csv").write_text(
        "feature,icc,ci_low,ci_high,koo_li,robust,n_subjects,n_copies\n"
        "f1,0.95,0.9,0.98,excellent,True,3,3\n")
    assert main(["report", "res", "--out", "r.html"]) == 0
    bad.run(["report", "res", "--out", "r.html"], fragments=["r.html", "--force"])
