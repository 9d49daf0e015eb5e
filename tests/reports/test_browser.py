"""A real browser opens a report: every image renders, no console error, no request leaves the file.

Without Chromium (or playwright) the test is skipped with its reason in the summary, except
under CI (``CI=true``), where a missing browser fails: CI must not pass with fewer tests.
"""

import importlib
import os
from pathlib import Path

import pytest
from report_checks import check_report

from sitekit.reports import build_report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


def in_ci() -> bool:
    """True under CI (``CI=true``, as GitHub Actions, GitLab and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_browser(chromium: Path = CHROMIUM):
    """Return ``playwright.sync_api``; skip (outside CI) or fail (CI) when the browser is missing."""
    missing = []
    if not chromium.exists():
        missing.append(f"headless Chromium ({chromium})")
    try:
        sync_api = importlib.import_module("playwright.sync_api")
    except ImportError:
        sync_api = None
        missing.append("the playwright package")
    if missing:
        reason = f"{' and '.join(missing)} not installed; the browser check did not run"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: install chromium, e.g. apt-get install chromium)")
        pytest.skip(reason)
    return sync_api


def test_missing_browser_fails_under_ci_and_skips_outside(monkeypatch, tmp_path):
    """Regression (issue 14 item 10): the browser test passed silently without Chromium."""
    absent = tmp_path / "no-chromium"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_browser(absent)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        require_browser(absent)


def test_report_renders_offline_in_chromium(results_dir, tmp_path):
    sync_api = require_browser()
    html_path = build_report(results_dir).save_as_html(tmp_path / "report.html")
    html = check_report(html_path.read_text(encoding="utf-8"))
    n_img = html.count("<img ")
    assert n_img > 10

    outside, console_errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})

            def route(r):
                if r.request.url.startswith(("file://", "data:")):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("request", lambda req: None if req.url.startswith(("file://", "data:"))
                    else outside.append(req.url))
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.goto(html_path.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight,"
                " i.getBoundingClientRect().width])"
            )
            banner = page.inner_text("#overall")
            first_section = page.evaluate("document.querySelector('section').id")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=False)
            # prints: the print stylesheet hides the navigation; a PDF comes out
            page.emulate_media(media="print")
            nav_hidden = page.evaluate("getComputedStyle(document.querySelector('nav')).display")
            pdf = tmp_path / "report.pdf"
            page.pdf(path=str(pdf), format="A4")
        finally:
            browser.close()

    assert len(images) == n_img
    for complete, w, h, shown in images:
        assert complete and w > 0 and h > 0 and shown > 0
    assert not console_errors, console_errors
    assert not outside, f"requests left the file: {outside}"
    assert first_section == "summary" and banner.startswith("FAIL")
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert nav_hidden == "none"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes().count(b"/Type /Page") > 3
