"""The EARL section: recovery against the bands, pass/fail per site (as acquired and with the
harmonising filter), the calibrated post-filter and its RC curves."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd

from sitekit.reports import figures as F
from sitekit.reports.html import FigureBlock, Section, Verdict
from sitekit.reports.sections._common import _fmt, keyword_build

__all__ = ["ID", "TITLE", "build", "earl_section", "is_filtered_run"]

#: The section id (HTML anchor, JSON key) and title.
ID = "earl"
TITLE = "EARL phantom accreditation"


def earl_section(check: pd.DataFrame | None, *, calibration: dict | None = None,
                 curves: pd.DataFrame | None = None, measurements: pd.DataFrame | None = None,
                 previews: dict[str, bytes] | None = None, notes: list[str] | None = None) -> Section:
    """The EARL section: RC curves with bands, pass/fail per site, calibration curves.

    Parameters
    ----------
    check : DataFrame or None
        ``site, standard, sphere_mm, metric, rc, lower, upper, passed, margin``.
    calibration : dict, default=None
        ``{site: {"standard", "chosen_fwhm_mm", "smallest_fwhm_mm", "centre_fwhm_mm", "note"}}``.
    curves : DataFrame, default=None
        RC against FWHM: ``site, fwhm_mm, sphere_mm, metric, rc``.
    measurements : DataFrame, default=None
        Per-sphere measurements; shown as a table.
    previews : dict of str to bytes, default=None
        ``{label: PNG bytes}`` of the sphere-localisation previews (``spheres_<site>.png``).
    notes : list of str, default=None
        Plain notes (e.g. "no Gaussian filter reaches EARL2 RCmax").
    """
    sec = Section(ID, TITLE,
                  intro="Recovery coefficients (RC) of the NEMA/IEC phantom spheres against the "
                        "EARL bands; a site passes a standard when every sphere and metric is in band.")
    results: dict = {}
    if check is not None and len(check):
        chk = check.copy()
        if "site" not in chk.columns:
            chk["site"] = "scan"
        if "standard" not in chk.columns:
            chk["standard"] = "EARL"
        chk["passed"] = chk["passed"].astype(bool)
        if "verified" not in chk.columns:
            chk["verified"] = True
        chk["verified"] = chk["verified"].astype(bool)
        # limits marked unverified (EARL2 PEAK) are shown but do not decide the verdict
        chk["_counts"] = chk["verified"]
        chk["_fail"] = ~chk["passed"] & chk["verified"]
        chk["_fail_unverified"] = ~chk["passed"] & ~chk["verified"]
        chk["_margin"] = chk["margin"].where(chk["verified"]) if "margin" in chk.columns else np.nan
        keys = ["run", "site", "standard"] if "run" in chk.columns else ["site", "standard"]
        per_site = (
            chk.groupby(keys, sort=True)
            .agg(n_checks=("_counts", "sum"), n_failed=("_fail", "sum"),
                 n_unverified_failed=("_fail_unverified", "sum"), worst_margin=("_margin", "min"))
            .reset_index()
        )
        per_site["passed"] = per_site["n_failed"] == 0
        chk = chk.drop(columns=["_counts", "_fail", "_fail_unverified", "_margin"])
        per_site["verdict"] = np.where(per_site["passed"], "PASS", "FAIL")
        per_site["detail"] = [_detail(r, "margin" in chk.columns) for _, r in per_site.iterrows()]
        sec.verdicts.extend(_site_verdicts(per_site, calibration or {}))
        per_site = per_site.drop(columns=["detail"])
        sec.add_text("Pass/fail per site", "heading")
        sec.add_table(per_site[[*keys, "verdict", "n_failed", "n_checks", "n_unverified_failed",
                                *(["worst_margin"] if "margin" in chk.columns else [])]],
                      "One row per site and standard; the margin is the distance to the nearest "
                      "band limit (negative = outside); limits marked unverified (EARL2 PEAK) "
                      "are reported but do not decide the verdict.")
        failed = chk[~chk["passed"]]
        if len(failed):
            cols = [c for c in ["run", "site", "standard", "sphere_mm", "metric", "rc", "lower",
                                "upper", "margin", "verified"] if c in failed.columns]
            sec.add_table(failed[cols], "Checks out of band.", max_rows=40)
        results["per_site"] = per_site
        results["check"] = chk
        sec.add_text("Recovery against sphere size", "heading")
        fig_keys = (["run"] if "run" in chk.columns else []) + ["standard", "metric"]
        for key, g in chk.groupby(fig_keys, sort=True):
            name = " ".join(str(k) for k in key)
            ax = F.plot_rc_curve(g.drop(columns=["run"], errors="ignore"), title=name)
            sec.add_figure(ax, f"{name}: RC per sphere and site (lines) against the shaded "
                               "acceptance band; red crosses are spheres out of band.")
    if previews:
        sec.add_text("Sphere localisation", "heading")
        for label, png in previews.items():
            sec.blocks.append(FigureBlock(
                "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                f"{label}: the sphere plane with the spheres found outlined in green; each "
                "sphere should sit inside its outline.", f"sphere localisation {label}"))
    if measurements is not None and len(measurements):
        results["measurements"] = measurements
    if calibration:
        sec.add_text("Harmonising post-filter (calibration)", "heading")
        rows = []
        for site, entry in sorted(calibration.items()):
            rows.append({
                "site": site,
                "standard": entry.get("standard", ""),
                "chosen_fwhm_mm": entry.get("chosen_fwhm_mm"),
                "smallest_fwhm_mm": entry.get("smallest_fwhm_mm"),
                "centre_fwhm_mm": entry.get("centre_fwhm_mm"),
                "note": entry.get("note") or "",
            })
            if entry.get("chosen_fwhm_mm") is None:
                sec.verdicts.append(Verdict(f"EARL calibration site {site}", "WARN",
                                            entry.get("note") or "no Gaussian filter reaches the standard"))
        cal = pd.DataFrame(rows)
        sec.add_table(cal, "Gaussian post-filter per site: the chosen FWHM (mm) is applied to "
                           "the site's patient images; empty when no filter reaches the standard.")
        results["calibration"] = cal
    if curves is not None and len(curves):
        cv = curves.copy()
        if "site" not in cv.columns:
            cv["site"] = "scan"
        for site, g in cv.groupby("site", sort=True):
            metrics = list(pd.unique(g["metric"])) if "metric" in g.columns else [None]
            metric = "rc_a50" if "rc_a50" in metrics else ("A50" if "A50" in metrics else metrics[0])
            sub = g if metric is None else g[g["metric"] == metric]
            if "standard" in sub.columns:
                sub = sub[sub["standard"] == sub["standard"].iloc[0]]
            chosen = (calibration or {}).get(site, {}).get("chosen_fwhm_mm")
            compliant = None
            if "in_band" in g.columns:
                std_rows = g if "standard" not in g.columns else g[g["standard"] == sub["standard"].iloc[0]]
                if "verified" in std_rows.columns:
                    std_rows = std_rows[std_rows["verified"].astype(bool)]
                ok = std_rows.groupby("fwhm_mm")["in_band"].apply(lambda v: bool(v.astype(bool).all()))
                if ok.any():
                    compliant = (float(ok[ok].index.min()), float(ok[ok].index.max()))
            ax = F.plot_rc_vs_fwhm(sub, chosen_fwhm=chosen, compliant=compliant,
                                   title=f"{site}" + (f" {metric}" if metric else ""))
            sec.add_figure(ax, f"{site}: {metric or 'RC'} of each sphere as the post-filter FWHM "
                               "grows; dashed: the chosen filter"
                               + ("; shaded: filters with every sphere and metric in band."
                                  if compliant else "."))
        results["curves_sites"] = sorted(cv["site"].astype(str).unique())
    for n in notes or []:
        sec.add_text(n, "note")
    sec.results = results
    return sec


def is_filtered_run(run) -> bool:
    """True for a check run on post-filtered phantoms: its folder name says ``filter``.

    ``sitekit demo`` checks the phantoms as acquired (``earl/check``) and again after the
    harmonising filter (``earl/check_filtered``); any run named with ``filter`` counts.

    Parameters
    ----------
    run : str
        The run label (the check's folder name).

    Returns
    -------
    bool
    """
    return "filter" in str(run).lower()


def _detail(r, has_margin: bool) -> str:
    detail = (f"{r['n_failed']} of {r['n_checks']} sphere/metric checks out of band"
              if not r["passed"] else f"all {r['n_checks']} sphere/metric checks in band")
    if has_margin:
        detail += f"; worst margin {_fmt(r['worst_margin'], 3)}"
    if r["n_unverified_failed"]:
        detail += (f"; {r['n_unverified_failed']} more outside limits marked unverified "
                   "(not counted)")
    return detail


def _site_verdicts(per_site: pd.DataFrame, calibration: dict) -> list[Verdict]:
    """One verdict per site and standard, read "as acquired -> with filter".

    With a check of the post-filtered phantoms the site's status is that of the filtered
    check (the images the study uses), and the detail shows both.  With only the check as
    acquired, a failing site with a calibrated filter keeps its FAIL and the detail names the
    filter that the calibration predicts will bring it in band.
    """
    out: list[Verdict] = []
    runs = per_site["run"] if "run" in per_site.columns else pd.Series("", index=per_site.index)
    filtered = runs.map(is_filtered_run)
    paired: set = set()
    if filtered.any() and (~filtered).any():
        for (site, standard), g in per_site.groupby(["site", "standard"], sort=True):
            raw = g[~filtered.loc[g.index]]
            flt = g[filtered.loc[g.index]]
            if raw.empty or flt.empty:
                continue
            a, f = raw.iloc[0], flt.iloc[0]
            fwhm = (calibration.get(str(site)) or {}).get("chosen_fwhm_mm")
            with_filter = "with filter" + (f" ({float(fwhm):.1f} mm)" if fwhm is not None else "")
            out.append(Verdict(
                f"EARL {standard} site {site}: as acquired -> {with_filter}", f["verdict"],
                f"as acquired {a['verdict']} ({a['detail']}) -> {with_filter} {f['verdict']} "
                f"({f['detail']})"))
            paired.update(g.index)
    for idx, r in per_site.iterrows():
        if idx in paired:
            continue
        run = f" ({r['run']})" if "run" in per_site.columns else ""
        detail = r["detail"]
        entry = calibration.get(str(r["site"])) or {}
        if not r["passed"] and entry.get("chosen_fwhm_mm") is not None and not filtered.loc[idx]:
            detail += (f"; as acquired -> with the calibrated {float(entry['chosen_fwhm_mm']):.1f} mm "
                       "filter: predicted in band by the calibration (no check of the filtered "
                       "phantom in these results)")
        out.append(Verdict(f"EARL {r['standard']} site {r['site']}{run}", r["verdict"], detail))
    return out


build = keyword_build(earl_section)
