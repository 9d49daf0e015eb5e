"""Site monitoring: calibration, network false-alarm rate and detection delays by Monte Carlo.

Usage::

    .venv/bin/python benchmarks/monitor.py                 # full run (a few minutes)
    .venv/bin/python benchmarks/monitor.py --quick         # smaller, ~1 min
    .venv/bin/python benchmarks/monitor.py --streams DIR   # also write the streams that
                                                           # benchmarks/monitor_compare.py reads

Cases
-----
1. Calibration of one chart (two-sided CUSUM, k = 0.25, target ARL0 500): studies per
   false alarm of restarted charts on in-control N(0, 1) data, with known in-control
   parameters, and with the location/scale estimated from n reference studies, without and
   with the reference correction.  EWMA (lambda 0.1) with known parameters.
2. Network: 10 sites of :func:`sitekit.datasets.make_study_stream` in control, the
   liver SUVmean charted at every site, ``SiteMonitor(arl0=500, split="bonferroni")``:
   false alarms per round of one study per site (the docs promise 1/500).
3. Detection: a 5 % calibration step at site_C (per-study CV 10 %), 4 sites and 10 sites:
   the delay (studies of site_C from the step to its first alarm) and how often another
   site alarmed first.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sitekit.datasets import make_study_stream
from sitekit.monitor import (
    SiteMonitor,
    cusum,
    cusum_threshold,
    ewma,
    ewma_threshold,
    robust_reference,
)

LIVER = "liver_suvmean:reference_region:log"


def chart_arl(h, *, n_ref, n_charts, n_steps, seed, chart="cusum", lam=0.1):
    rng = np.random.default_rng(seed)
    if n_ref is None:
        loc, sc = np.zeros(n_charts), np.ones(n_charts)
    else:
        ref = rng.standard_normal((n_ref, n_charts))
        est = np.array([robust_reference(ref[:, j])[:2] for j in range(n_charts)])
        loc, sc = est[:, 0], est[:, 1]
    z = (rng.standard_normal((n_steps, n_charts)) - loc) / sc
    if chart == "cusum":
        alarm = cusum(z, k=0.25, h=h)[2]
    else:
        alarm = ewma(z, lam=lam, limit=h)[2]
    return n_steps * n_charts / max(int(alarm.sum()), 1)


def case_calibration(quick: bool) -> list[dict]:
    rows = []
    n_charts, n_steps = (300, 3000) if quick else (1000, 6000)
    h0 = cusum_threshold(500.0, 0.25)
    rows.append({"chart": "cusum", "n_reference": "known", "correction": "-", "h": h0,
                 "arl_mc": chart_arl(h0, n_ref=None, n_charts=n_charts, n_steps=n_steps, seed=0)})
    lam = 0.1
    lim = ewma_threshold(500.0, lam) * np.sqrt(lam / (2 - lam))
    rows.append({"chart": "ewma", "n_reference": "known", "correction": "-", "h": lim,
                 "arl_mc": chart_arl(lim, n_ref=None, n_charts=n_charts, n_steps=n_steps,
                                     seed=1, chart="ewma")})
    for n in (100, 240, 500):
        hc = cusum_threshold(500.0, 0.25, n_reference=n)
        for corr, h in (("off", h0), ("on", hc)):
            rows.append({"chart": "cusum", "n_reference": n, "correction": corr, "h": h,
                         "arl_mc": chart_arl(h, n_ref=n, n_charts=n_charts, n_steps=n_steps,
                                             seed=10 + n)})
    return rows


def case_network(quick: bool, streams: Path | None) -> dict:
    n_rep = 10 if quick else 40
    alarms = rounds = 0
    for rep in range(n_rep):
        df = make_study_stream(sites=10, n_months=62, reference_months=12, drift_site=None,
                               replacement_site=None, random_state=1000 + rep)
        ref, new = df[df["period"] == "reference"], df[df["period"] == "monitoring"]
        mon = SiteMonitor(signals=[LIVER], arl0=500).fit(ref, sites=ref["site"])
        a = mon.update(new, sites=new["site"], times=new["time"])
        alarms += len(a)
        rounds += len(new) // 10
        if streams is not None and rep < 5:
            df.to_csv(streams / f"incontrol_{rep}.csv", index=False)
    return {"replicates": n_rep, "sites": 10, "rounds": rounds, "false_alarms": alarms,
            "rounds_per_false_alarm": rounds / max(alarms, 1), "promised": 500}


def case_detection(quick: bool, n_sites, streams: Path | None) -> dict:
    n_rep = 30 if quick else 100
    delays, other_first = [], []
    for rep in range(n_rep):
        df, ev = make_study_stream(sites=n_sites, n_months=30, reference_months=12,
                                   drift=0.05, drift_month=12, replacement_site=None,
                                   random_state=rep, return_events=True)
        ref, new = df[df["period"] == "reference"], df[df["period"] == "monitoring"]
        mon = SiteMonitor(signals=[LIVER], arl0=500).fit(ref, sites=ref["site"])
        a = mon.update(new, sites=new["site"], times=new["time"])
        at_c = a[a["site"] == "site_C"]
        delays.append(float(at_c["study"].iloc[0]) if len(at_c) else np.inf)
        t = at_c["time"].iloc[0] if len(at_c) else new["time"].max()
        other_first.append(bool(((a["site"] != "site_C") & (a["time"] <= t)).any()))
        if streams is not None and n_sites is None and rep < 40:
            df.to_csv(streams / f"drift_{rep}.csv", index=False)
    d = np.array(delays)
    fin = d[np.isfinite(d)]
    return {"sites": n_sites or 4, "replicates": n_rep, "detected": float(np.isfinite(d).mean()),
            "median": float(np.median(d)), "mean": float(fin.mean()),
            "p10": float(np.percentile(fin, 10)), "p90": float(np.percentile(fin, 90)),
            "other_site_alarm_first": float(np.mean(other_first))}


def case_same_streams(streams: Path) -> dict:
    """sitekit on exactly the CSV streams that monitor_compare.py feeds the other tools."""
    alarms = studies = 0
    for f in sorted(streams.glob("incontrol_*.csv")):
        df = pd.read_csv(f, parse_dates=["time"])
        ref, new = df[df["period"] == "reference"], df[df["period"] == "monitoring"]
        mon = SiteMonitor(signals=[LIVER], arl0=500).fit(ref, sites=ref["site"])
        alarms += len(mon.update(new, sites=new["site"], times=new["time"]))
        studies += len(new)
    delays = []
    for f in sorted(streams.glob("drift_*.csv")):
        df = pd.read_csv(f, parse_dates=["time"])
        ref, new = df[df["period"] == "reference"], df[df["period"] == "monitoring"]
        mon = SiteMonitor(signals=[LIVER], arl0=500).fit(ref, sites=ref["site"])
        a = mon.update(new, sites=new["site"], times=new["time"])
        at_c = a[a["site"] == "site_C"]
        delays.append(float(at_c["study"].iloc[0]) if len(at_c) else np.inf)
    d = np.array(delays)
    fin = d[np.isfinite(d)]
    return {"detector": "sitekit SiteMonitor (CUSUM, arl0=500, Bonferroni)",
            "in_control_studies": studies, "drift_runs": len(delays),
            "false_alarms_per_1000": 1000.0 * alarms / max(studies, 1),
            "detected": float(np.isfinite(d).mean()), "median_delay": float(np.median(d)),
            "p90_delay": float(np.percentile(fin, 90))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--streams", type=Path, default=None,
                    help="Write the in-control and drift streams (CSV) for monitor_compare.py.")
    ap.add_argument("--json", type=Path, default=None, help="Write the results as JSON.")
    ap.add_argument("--cases", default="calibration,network,detection",
                    help="Comma-separated cases to run: calibration, network, detection, "
                         "same_streams (sitekit on the --streams CSVs; run after writing them).")
    args = ap.parse_args()
    if args.streams is not None:
        args.streams.mkdir(parents=True, exist_ok=True)
    cases = set(args.cases.split(","))
    t0 = time.perf_counter()
    out = {}
    if "calibration" in cases:
        out["calibration"] = case_calibration(args.quick)
        print("1. calibration (target ARL0 500)")
        print(pd.DataFrame(out["calibration"]).to_string(index=False, float_format="%.2f"),
              flush=True)
    if "network" in cases:
        out["network"] = case_network(args.quick, args.streams)
        print("\n2. network of 10 sites, Bonferroni split:", json.dumps(out["network"]), flush=True)
    if "same_streams" in cases:
        out["same_streams"] = case_same_streams(args.streams)
        print("\n4. on the comparison streams:", json.dumps(out["same_streams"]), flush=True)
    if "detection" in cases:
        out["detection"] = [case_detection(args.quick, None, args.streams),
                            case_detection(args.quick, 10, None)]
        print("\n3. detection of a 5 % step at one site (studies of that site):")
        print(pd.DataFrame(out["detection"]).to_string(index=False, float_format="%.2f"))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
