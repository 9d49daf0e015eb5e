"""Reports built from result folders: sections, verdicts at the top, ids hidden, self-contained."""

import json
import os

import pandas as pd
import pytest
from report_checks import check_report, check_saved_report
from report_fixtures import SUBJECT_IDS, write_earl, write_stability, write_suite

from sitekit.cli import EXIT_BAD_INPUT, EXIT_OK, main
from sitekit.exceptions import MissingFileError, OutputExistsError, ValidationError
from sitekit.reports import (
    Report,
    Section,
    build_report,
    discover_results,
)


def test_discovers_every_kind(results_dir):
    kinds = sorted(f.kind for f in discover_results(results_dir))
    assert kinds == ["earl", "extract", "harmonize", "stability", "stability", "suite"]


def test_full_report_sections_and_fail_at_top(results_dir, tmp_path):
    rep = build_report(results_dir, command_line="sitekit report results --out r.html")
    assert [s.id for s in rep.sections] == ["earl", "extraction", "feature_robustness",
                                            "harmonization", "model_robustness"]
    assert rep.status == "FAIL" and not rep.warnings
    data = check_saved_report(
        rep, tmp_path / "out" / "report.html",
        required=["Summary", "EARL phantom accreditation", "Harmonisation", "Provenance",
                  'alt="sphere localisation site_B"', "Sphere localisation",
                  "shaded: filters with every sphere and metric in band",
                  "Calibration at each held-out site",
                  "site_B", "Harmonisation effect", "sitekit report results --out r.html",
                  "input_hashes", "scikit-learn"],
        forbidden=SUBJECT_IDS,
    )
    html = (tmp_path / "out" / "report.html").read_text()
    # the failing EARL site says FAIL before any section content
    summary = html[html.index('id="summary"'):html.index('id="earl"')]
    assert 'class="banner fail"' in summary
    assert '"fail">FAIL</span></td><td>EARL EARL1 site site_B' in summary
    # every figure has a one-line caption
    assert html.count("<img ") == html.count("<figcaption>") > 10
    for cap in html.split("<figcaption>")[1:]:
        assert "\n" not in cap.split("</figcaption>")[0]
    assert data["status"] == "FAIL"
    earl = data["sections"]["earl"]["per_site"]
    assert {r["site"]: r["verdict"] for r in earl} == {"site_B": "FAIL", "site_C": "PASS"}
    h = data["sections"]["harmonization"]["site_effects"]
    assert h[0]["share"] > h[1]["share"]  # ComBat removes site effects


def test_passing_earl_site_and_suite(tmp_path):
    root = tmp_path / "r"
    write_earl(root / "earl", fwhm_by_site={"site_C": 8.3})
    write_suite(root / "suite", passed=True)
    rep = build_report(root)
    earl = [v for v in rep.verdicts if v.label.startswith("EARL")]
    assert [v.status for v in earl] == ["PASS"]
    assert rep.status == "PASS"
    html = check_report(rep.to_html(), required=['class="banner pass"'])
    assert "FAIL" not in html.split('id="earl"')[0]


def test_failing_suite_fails_report(tmp_path):
    write_suite(tmp_path / "suite", passed=False)
    rep = build_report(tmp_path / "suite")
    assert rep.status == "FAIL"
    v = [x for x in rep.verdicts if x.status == "FAIL"][0]
    assert "median_adversarial_distance" in v.detail


def test_ids_hidden_unless_asked(small_results_dir):
    hidden = build_report(small_results_dir)
    text = hidden.to_html() + json.dumps(hidden.to_dict())
    for sid in (*SUBJECT_IDS, "SUBJ-0001", "SUBJ-0003"):
        assert sid not in text
    shown = build_report(small_results_dir, show_ids=True)
    assert all(s in shown.to_html() for s in SUBJECT_IDS)
    assert shown.provenance["subject_ids_shown"] is True


def test_two_suites_compare_loso_models(tmp_path):
    write_suite(tmp_path / "suite_combat", harmonize="combat")
    write_suite(tmp_path / "suite_raw", harmonize="none")
    rep = build_report(tmp_path)
    assert [s.id for s in rep.sections] == ["model_robustness", "model_robustness_2"]
    loso = rep.sections[0].results["loso"]
    assert sorted(loso["model"].unique()) == ["suite_combat (ComBat)", "suite_raw (no harmonisation)"]
    assert len([v for v in rep.verdicts if v.label.startswith("Model robustness suite")]) == 2


def test_stability_runs_merge_into_one_section(tmp_path):
    write_stability(tmp_path / "stab" / "noise", perturbation="noise", seed=0)
    write_stability(tmp_path / "stab" / "blur", perturbation="blur", seed=3)
    rep = build_report(tmp_path / "stab")
    (sec,) = rep.sections
    per = sec.results["per_perturbation"]
    assert list(per["perturbation"]) == ["blur", "noise"]
    assert sec.results["n_features"] == 18


def test_escaping_and_repr_html():
    s = Section("x", "Title <b>")
    s.add_text("<script>alert(1)</script>")
    s.add_table(pd.DataFrame({"a": ["<img src=x>"]}))
    rep = Report("T & <T>", [s])
    html = rep.to_html()
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "&lt;img src=x&gt;" in html and "T &amp; &lt;T&gt;" in html
    check_report(html)
    assert rep._repr_html_().startswith("<iframe")


def test_save_refuses_overwrite_without_force(tmp_path):
    rep = Report("T", [])
    rep.save_as_html(tmp_path / "r.html")
    with pytest.raises(OutputExistsError):
        rep.save_as_html(tmp_path / "r.html")
    rep.save_as_html(tmp_path / "r.html", force=True)
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "INFO"
    umask = os.umask(0)
    os.umask(umask)
    # the usual mode of a new file, not the 0600 of the temporary file it was written as
    assert (tmp_path / "r.html").stat().st_mode & 0o777 == 0o666 & ~umask


def test_bad_folder_errors(tmp_path):
    with pytest.raises(MissingFileError):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="No sitekit results"):
        build_report(tmp_path / "empty")


def test_unreadable_part_becomes_warning(tmp_path):
    write_suite(tmp_path / "suite")
    d = tmp_path / "stab"
    d.mkdir()
    (d / "stability.csv").write_text("feature,icc\nf1,notanumber\n")
    rep = build_report(tmp_path)
    assert [s.id for s in rep.sections] == ["model_robustness"]
    assert any("stability" in w for w in rep.warnings)
    assert "could not be read" in rep.to_html()


def test_cli_report(small_results_dir, tmp_path, capsys):
    results_dir = small_results_dir
    out = tmp_path / "cli" / "report.html"
    assert main(["report", str(results_dir), "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "FAIL" in printed and str(out.resolve()) in printed
    check_report(out.read_text(), forbidden=SUBJECT_IDS)
    assert out.with_suffix(".json").exists()
    assert main(["report", str(results_dir), "--out", str(out)]) == EXIT_BAD_INPUT
    assert main(["report", str(results_dir), "--out", str(out), "--force", "--show-ids"]) == EXIT_OK
    assert SUBJECT_IDS[0] in out.read_text()
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "x.html")]) == EXIT_BAD_INPUT


def test_changed_harmonisation_input_is_flagged(tmp_path):
    from report_fixtures import write_harmonize

    d = write_harmonize(tmp_path / "h")
    table = tmp_path / "features_input.csv"
    df = pd.read_csv(table)
    df.loc[0, "age"] += 1.0
    df.to_csv(table, index=False)
    rep = build_report(d)
    assert [v.status for v in rep.verdicts if v.label == "Harmonisation input"] == ["WARN"]
    assert "changed after the harmonisation run" in rep.to_html()


# ------------------------------------------------------------ issue 14 item 8 regressions
def test_harmonization_section_kept_for_tables_with_empty_cells(tmp_path):
    """Regression (issue 14 item 8): a table with empty cells (which ComBat handles) lost its
    harmonisation section to a 'could not be read' warning."""
    from report_fixtures import write_harmonize

    d = write_harmonize(tmp_path / "h", empty_cells=6)
    assert pd.read_csv(tmp_path / "features_input.csv").isna().sum().sum() == 24
    rep = build_report(d)
    assert [s.id for s in rep.sections] == ["harmonization"] and not rep.warnings
    share = rep.sections[0].results["site_effects"]
    assert share["share"].iloc[0] > 0.5 > share["share"].iloc[1]


def test_earl_summary_reads_as_acquired_then_with_filter(tmp_path):
    """Regression (issue 14 item 8): the demo's headline FAIL came from the deliberately
    unfiltered EARL check; each site now reads 'as acquired -> with filter'."""
    root = tmp_path / "r"
    write_earl(root / "earl" / "check", fwhm_by_site={"site_B": 5.0, "site_C": 8.3})
    filtered = write_earl(root / "earl" / "check_filtered",
                          fwhm_by_site={"site_B": 8.3, "site_C": 8.3})
    for name in ("calibration.json", "curves.csv"):  # the calibration is the unfiltered run's
        (filtered / name).unlink()
    rep = build_report(root)
    earl = {v.label: v for v in rep.verdicts if v.label.startswith("EARL")}
    b = earl["EARL EARL1 site site_B: as acquired -> with filter (6.6 mm)"]
    assert b.status == "PASS"
    assert b.detail.startswith("as acquired FAIL (") and "-> with filter (6.6 mm) PASS" in b.detail
    assert earl["EARL EARL1 site site_C: as acquired -> with filter (0.0 mm)"].status == "PASS"
    assert rep.status == "PASS"
    # a site that still fails after the filter fails the report
    write_earl(root / "earl" / "check_filtered", fwhm_by_site={"site_B": 5.0, "site_C": 8.3})
    still = build_report(root)
    assert still.status == "FAIL"
    assert [v.status for v in still.verdicts if "site_B" in v.label] == ["FAIL"]


def test_provenance_names_the_suite_file_not_the_results_folder(tmp_path):
    """Regression (issue 14 item 8): provenance said 'suite file suite' (the results folder)."""
    d = write_suite(tmp_path / "suite")
    res = json.loads((d / "results.json").read_text())
    res["suite"] = {"path": "/study/ci/robustness_suite.toml", "sha256": "ab" * 32}
    (d / "results.json").write_text(json.dumps(res))
    inputs = build_report(d).provenance["inputs"]
    assert inputs["suite file (robustness_suite.toml)"] == "sha256:" + "ab" * 32
    assert not any(k.startswith("suite file suite") for k in inputs)




def test_pass_banner_names_the_warnings():
    """A report with WARN verdicts and no failure must not claim that every check passed."""
    from sitekit.reports import Report, Section, Verdict

    sec = Section("x", "X")
    sec.verdicts += [Verdict("a", "PASS", ""), Verdict("b", "WARN", "look")]
    html = Report("t", [sec]).to_html()
    banner = html[html.index('id="overall"'):html.index("</div>", html.index('id="overall"'))]
    assert "every check passed" not in banner and "1 warning needs a look" in banner
    sec.verdicts.pop()
    html = Report("t", [sec]).to_html()
    assert "PASS: every check passed." in html
