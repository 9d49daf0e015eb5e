"""The monitoring report section: figures tested by their data, the section by its strings."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from sitekit.cli.monitor import demo_step  # noqa: E402
from sitekit.reports.html import Report  # noqa: E402
from sitekit.reports.sections.monitor import (  # noqa: E402
    is_monitor_results,
    load_monitor_results,
    monitor_section,
    plot_alarm_timeline,
    plot_control_chart,
)


def test_plot_control_chart_data():
    h = pd.DataFrame({"signal": ["a"] * 3 + ["b"] * 3, "time": [1, 2, 3] * 2,
                      "statistic": [1.0, 2.0, 5.0, 0.5, 0.5, 0.5], "threshold": [4.0] * 6,
                      "alarm": [False, False, True, False, False, False]})
    ax = plot_control_chart(h, title="s")
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["a"].get_ydata()) == [0.25, 0.5, 1.25]
    assert list(lines["_alarm"].get_xdata()) == [3]
    assert lines["threshold"].get_ydata()[0] == 1.0
    assert ax.get_title() == "s"


def test_plot_alarm_timeline_rows():
    a = pd.DataFrame({"site": ["x", "y"], "signal": ["s", "s"], "time": [1.0, 2.0]})
    ax = plot_alarm_timeline(a, sites=["x", "y", "z"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x", "y", "z"]
    assert list(ax.get_lines()[0].get_ydata()) == [0.0, 1.0]


def test_section_from_demo(tmp_path):
    res = demo_step(tmp_path, random_state=1)
    assert is_monitor_results(res) and not is_monitor_results(tmp_path)
    results = load_monitor_results(res)
    results["summary"].loc[0, "signals_alarmed"] = "<script>alert(1)</script>"
    sec = monitor_section(results)
    status = {v.label: v.status for v in sec.verdicts}
    assert status["Monitoring site site_B"] == "WARN"
    html = Report("monitoring", [sec]).to_html()
    for needed in ("Post-deployment monitoring", "Per-site summary", "ComBat.adapt",
                   "Control charts"):
        assert needed in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
