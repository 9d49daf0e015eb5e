"""The monitoring section: per-site control charts, the alarms table and a per-site summary.

Reads the results folder that :meth:`sitekit.monitor.SiteMonitor.write_results` writes
(``monitor.json`` marks it) with :func:`load_monitor_results`; the plot functions are pure
(``plot_x(df, *, ax=None) -> Axes``) and draw only what the tables hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from sitekit._typing import PathLike
from sitekit.exceptions import CorruptFileError, MissingFileError
from sitekit.reports import figures as F
from sitekit.reports.html import Section, Verdict

__all__ = [
    "ID",
    "TITLE",
    "build",
    "MARKER",
    "is_monitor_results",
    "load_monitor_results",
    "plot_control_chart",
    "plot_alarm_timeline",
    "monitor_section",
]

ID = "monitor"
TITLE = "Post-deployment monitoring"

#: The file that marks a monitoring results folder.
MARKER = "monitor.json"
_ALARM_COLOUR = F.FAIL_COLOR


def is_monitor_results(path: PathLike) -> bool:
    """True when ``path`` is a folder written by ``SiteMonitor.write_results``."""
    p = Path(path)
    if not (p / MARKER).is_file():
        return False
    try:
        return json.loads((p / MARKER).read_text()).get("kind") == "sitekit-monitor-results"
    except (OSError, ValueError):
        return False


def load_monitor_results(path: PathLike) -> dict:
    """Read a monitoring results folder.

    Parameters
    ----------
    path : str or path-like
        The folder (with ``monitor.json``, ``history.csv``, ``alarms.csv``,
        ``summary.csv``, ``reference.csv``).

    Returns
    -------
    dict
        ``{"meta": dict, "history": DataFrame, "alarms": DataFrame, "summary": DataFrame,
        "reference": DataFrame}``; times are parsed as dates when the monitor used dates.
    """
    p = Path(path)
    if not (p / MARKER).is_file():
        raise MissingFileError(f"'{p}' is not a monitoring results folder (no {MARKER}); write "
                               "one with 'sitekit monitor update --results' or "
                               "SiteMonitor.write_results.")
    try:
        meta = json.loads((p / MARKER).read_text())
    except ValueError as exc:
        raise CorruptFileError(f"'{p / MARKER}' is not valid JSON ({exc}).") from None
    out = {"meta": meta}
    for name in ("history", "alarms", "summary", "reference"):
        f = p / f"{name}.csv"
        if not f.is_file():
            raise MissingFileError(f"Monitoring results '{p}' lack {f.name}; write them again.")
        df = pd.read_csv(f, keep_default_na=True)
        if "time" in df.columns and meta.get("time_kind") == "datetime" and len(df):
            df["time"] = pd.to_datetime(df["time"])
        for col in ("suggestion", "rule", "signals_alarmed"):
            if col in df.columns:
                df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
        out[name] = df
    return out


def plot_control_chart(data, *, title: str | None = None, ax: Axes | None = None) -> Axes:
    """One site's control charts: each signal's statistic as a fraction of its threshold.

    Parameters
    ----------
    data : DataFrame
        Rows of ``SiteMonitor.history_`` for one site: ``signal, time, statistic,
        threshold, alarm``.
    title : str, default=None
    ax : matplotlib Axes, default=None

    Returns
    -------
    matplotlib.axes.Axes
        One line per signal (``statistic / threshold``), the threshold as a dashed line at
        1, alarms as crosses.
    """
    df = F._require(data, ["signal", "time", "statistic", "threshold", "alarm"],
                    "plot_control_chart")
    ax = F._axes(ax, figsize=(6.4, 3.2))
    for i, (signal, g) in enumerate(df.groupby("signal", sort=True)):
        ratio = g["statistic"].to_numpy(float) / g["threshold"].to_numpy(float)
        ax.plot(g["time"], ratio, color=F._color(i), lw=1.0, label=str(signal))
        hit = g["alarm"].astype(bool).to_numpy()
        if hit.any():
            ax.plot(g["time"].to_numpy()[hit], ratio[hit], "x", color=_ALARM_COLOUR, ms=7,
                    mew=2, label="_alarm")
    ax.axhline(1.0, color="black", ls="--", lw=1.0, label="threshold")
    ax.set_ylabel("statistic / threshold")
    ax.set_xlabel("time")
    ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left")
    return ax


def plot_alarm_timeline(data, *, sites=None, ax: Axes | None = None) -> Axes:
    """Alarms over time, one row per site, marked by the alarmed signal.

    Parameters
    ----------
    data : DataFrame
        ``SiteMonitor.alarms_``: ``site, signal, time``.
    sites : list of str, default=None
        Rows to show (default: the sites with alarms).
    ax : matplotlib Axes, default=None

    Returns
    -------
    matplotlib.axes.Axes
    """
    df = F._require(data, ["site", "signal", "time"], "plot_alarm_timeline")
    sites = sorted(set(df["site"])) if sites is None else list(sites)
    ax = F._axes(ax, figsize=(6.4, 0.5 + 0.45 * max(len(sites), 1)))
    ypos = {s: k for k, s in enumerate(sites)}
    for i, (signal, g) in enumerate(df.groupby("signal", sort=True)):
        y = g["site"].map(ypos).to_numpy(float)
        ax.plot(g["time"], y, "o", color=F._color(i), label=str(signal), ms=5)
    ax.set_yticks(range(len(sites)), sites)
    ax.set_ylim(-0.7, len(sites) - 0.3)
    ax.set_xlabel("time")
    if len(df):
        ax.legend(fontsize="small", loc="upper left")
    return ax


def monitor_section(results: dict) -> Section:
    """The monitoring section of the HTML report.

    Parameters
    ----------
    results : dict
        As returned by :func:`load_monitor_results`.

    Returns
    -------
    sitekit.reports.html.Section
        A verdict per site (``WARN`` when it alarmed), the per-site summary for a
        post-market monitoring file, the alarms with their suggestions, the control charts
        per site and the calibration settings.
    """
    meta, history = results["meta"], results["history"]
    alarms, summary = results["alarms"], results["summary"]
    prm = meta.get("parameters", {})
    sec = Section(
        ID, TITLE,
        intro=(f"Per-site control charts ({prm.get('chart', 'cusum')}) on "
               f"{len(prm.get('signals', []))} signal(s); thresholds set for an in-control "
               f"average run length of {prm.get('arl0')} studies"
               + (" for the whole network (Bonferroni split over "
                  f"{prm.get('n_charts')} charts)" if prm.get("split") == "bonferroni" else
                  " per chart") + "."),
    )
    for _, r in summary.iterrows():
        detail = (f"{int(r['n_alarms'])} alarm(s) on {r['signals_alarmed']}; latest suggests: "
                  f"{r['suggestion']}" if r["n_alarms"] else
                  f"{int(r['n_studies'])} studies charted, no alarm")
        sec.verdicts.append(Verdict(f"Monitoring site {r['site']}",
                                    "WARN" if r["n_alarms"] else "PASS", detail))
    sec.add_text("Per-site summary", "heading")
    sec.add_table(summary[["site", "n_reference", "n_studies", "n_alarms", "signals_alarmed",
                           "last_alarm", "status"]],
                  "One row per site: reference studies, studies charted since, alarms and the "
                  "signals that raised them (for the post-market monitoring file).")
    if len(alarms):
        sec.add_text("Alarms and what they suggest", "heading")
        cols = [c for c in ["site", "signal", "time", "statistic", "threshold", "direction",
                            "rule", "suggestion"] if c in alarms.columns]
        sec.add_table(alarms[cols], "Every alarm: the chart statistic crossed its threshold "
                                    "(batch-effect test: -log10 p above -log10 alpha).",
                      max_rows=60)
        sec.add_figure(plot_alarm_timeline(alarms, sites=list(summary["site"])),
                       "Alarms over time per site, coloured by the signal that raised them.")
    sec.add_text("Control charts", "heading")
    for site, g in history.groupby("site", sort=True):
        sec.add_figure(plot_control_chart(g, title=str(site)),
                       f"{site}: chart statistic over its threshold per signal (1 = threshold, "
                       "dashed); crosses are alarms, after which the chart restarts.")
    sec.add_text(f"Calibration: {prm.get('calibration', '')}; shift to detect "
                 f"{prm.get('shift')} SD; per-chart ARL0 {_fmt(prm.get('chart_arl0'))}; "
                 f"reference correction {'on' if prm.get('reference_correction') else 'off'}.",
                 "note")
    sec.results = {"summary": summary, "alarms": alarms, "parameters": prm}
    return sec


def _fmt(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if not np.isfinite(f) else f"{f:.0f}"


def build(results: Mapping[str, Any]) -> Section:
    """The section interface: ``results`` is what :func:`load_monitor_results` returns, or
    ``{"path": folder}`` to read it.

    Parameters
    ----------
    results : mapping

    Returns
    -------
    Section
    """
    if "path" in results and "meta" not in results:
        results = load_monitor_results(results["path"])
    return monitor_section(dict(results))
