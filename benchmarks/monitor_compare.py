"""The monitor's streams through alibi-detect (KS, MMD) and frouros (CUSUM), for the docs table.

This script runs in a SEPARATE environment (these tools are not sitekit dependencies)::

    python3 -m venv /tmp/cmpenv
    /tmp/cmpenv/bin/pip install alibi-detect frouros pandas "tensorflow-cpu<2.19"
    .venv/bin/python benchmarks/monitor.py --streams /tmp/streams     # sitekit's numbers
    /tmp/cmpenv/bin/python benchmarks/monitor_compare.py /tmp/streams  # the other tools

It reads the CSV streams that ``benchmarks/monitor.py --streams`` writes (in-control
10-site streams ``incontrol_*.csv`` and 4-site streams with a 5 % calibration step at
site_C after the reference year, ``drift_*.csv``) and charts ``log(liver_suvmean)`` per site
the way each tool is used:

* alibi-detect ``KSDrift`` and ``MMDDrift`` (TensorFlow backend, 100 permutations): the
  site's reference period against consecutive windows of 30 new studies, at the default
  ``p_val=0.05`` and at the per-window level the sitekit budget gives
  (``alpha = 30 / chart ARL0``);
* frouros ``MMD`` with its permutation test (100 permutations, RBF kernel, median
  heuristic), same windows, ``p < 0.05``;
* frouros ``CUSUM`` (one-sided, Page 1954) on the values standardised by the reference
  mean and SD, with its defaults (``delta=0.005, lambda_=50``) and with sitekit's ``k``
  and ``h`` (it subtracts the running mean of everything seen, not the reference mean).

Reported per detector: false alarms per 1,000 studies per site on the in-control streams,
and, on the drift streams, the fraction of runs that flag site_C and the median / p90
delay in studies of site_C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

WINDOW = 30
SIGNAL = "liver_suvmean"


def _series(df: pd.DataFrame):
    df = df.sort_values("time", kind="stable")
    for site, g in df.groupby("site", sort=True):
        x = np.log(g[SIGNAL].to_numpy(float))
        ref = g["period"].to_numpy() == "reference"
        yield site, x[ref], x[~ref]


def windowed(make_detector):
    """Alarm indices (1-based, end of the window) of a two-sample test on 30-study windows."""

    def run(ref, new):
        det = make_detector(ref)
        hits = []
        for end in range(WINDOW, len(new) + 1, WINDOW):
            if det(new[end - WINDOW:end]):
                hits.append(end)
        return hits

    return run


def alibi_ks(p_val):
    from alibi_detect.cd import KSDrift

    def make(ref):
        cd = KSDrift(ref[:, None].astype(np.float32), p_val=p_val)
        return lambda w: bool(cd.predict(w[:, None].astype(np.float32))["data"]["is_drift"])

    return windowed(make)


def alibi_mmd(p_val):
    from alibi_detect.cd import MMDDrift

    def make(ref):
        cd = MMDDrift(ref[:, None].astype(np.float32), p_val=p_val, backend="tensorflow",
                      n_permutations=100)
        return lambda w: bool(cd.predict(w[:, None].astype(np.float32))["data"]["is_drift"])

    return windowed(make)


def frouros_mmd(p_val):
    from functools import partial

    from frouros.callbacks.batch import PermutationTestDistanceBased
    from frouros.detectors.data_drift import MMD
    from frouros.utils.kernels import rbf_kernel

    def make(ref):
        sigma = float(np.median(np.abs(ref[:, None] - ref[None, :]))) or 1.0  # median heuristic
        det = MMD(kernel=partial(rbf_kernel, sigma=sigma), callbacks=[
            PermutationTestDistanceBased(num_permutations=100, num_jobs=1, random_state=0,
                                         name="perm")])
        det.fit(X=ref[:, None])
        return lambda w: det.compare(X=w[:, None])[1]["perm"]["p_value"] < p_val

    return windowed(make)


def frouros_cusum(delta, lambda_):
    from frouros.detectors.concept_drift import CUSUM, CUSUMConfig

    def run(ref, new):
        mu, sd = ref.mean(), ref.std(ddof=1)
        det = CUSUM(config=CUSUMConfig(delta=delta, lambda_=lambda_, min_num_instances=30))
        for v in ref:  # warm up on the reference, as a user would
            det.update(value=float((v - mu) / sd))
        det.reset() if det.drift else None
        hits = []
        for i, v in enumerate(new, start=1):
            det.update(value=float((v - mu) / sd))
            if det.drift:
                hits.append(i)
                det.reset()
                for r in ref:
                    det.update(value=float((r - mu) / sd))
        return hits

    return run


def evaluate(name, run, incontrol, drift):
    alarms = studies = 0
    for df in incontrol:
        for _, ref, new in _series(df):
            alarms += len(run(ref, new))
            studies += len(new)
    delays = []
    for df in drift:
        for site, ref, new in _series(df):
            if site == "site_C":
                hits = run(ref, new)
                delays.append(hits[0] if hits else np.inf)
    d = np.array(delays, dtype=float)
    fin = d[np.isfinite(d)]
    return {"detector": name, "in_control_studies": studies, "drift_runs": len(delays),
            "false_alarms_per_1000": 1000.0 * alarms / max(studies, 1),
            "detected": float(np.isfinite(d).mean()) if d.size else float("nan"),
            "median_delay": float(np.median(d)) if d.size else float("nan"),
            "p90_delay": float(np.percentile(fin, 90)) if fin.size else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("streams", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--slow-streams", type=int, default=2,
                    help="In-control and drift streams used for the permutation (MMD) tests.")
    ap.add_argument("--h", type=float, default=13.21,
                    help="sitekit's CUSUM h for the 4-site network (chart ARL0 2000, 240 "
                         "reference studies, reference correction on).")
    args = ap.parse_args()
    incontrol = [pd.read_csv(f, parse_dates=["time"]) for f in sorted(args.streams.glob("incontrol_*.csv"))]
    drift = [pd.read_csv(f, parse_dates=["time"]) for f in sorted(args.streams.glob("drift_*.csv"))]
    if not incontrol or not drift:
        sys.exit(f"no streams in {args.streams}; run benchmarks/monitor.py --streams first")
    alpha_budget = WINDOW / 2000.0
    detectors = [
        ("alibi-detect KSDrift p=0.05", alibi_ks(0.05)),
        (f"alibi-detect KSDrift p={alpha_budget:.3f} (budget)", alibi_ks(alpha_budget)),
        ("frouros CUSUM defaults", frouros_cusum(0.005, 50.0)),
        (f"frouros CUSUM k=0.25, h={args.h:.2f}", frouros_cusum(0.25, args.h)),
    ]
    slow = [("frouros MMD (permutation) p=0.05", frouros_mmd(0.05))]
    try:
        import tensorflow  # noqa: F401

        slow += [("alibi-detect MMDDrift p=0.05", alibi_mmd(0.05))]
    except ImportError:
        print("TensorFlow not installed: alibi-detect's MMDDrift skipped", file=sys.stderr)
    rows = []
    n_slow = args.slow_streams
    for name, run in detectors + slow:
        t = time.perf_counter()
        if (name, run) in slow:  # permutation tests: fewer streams (~0.5 s per window)
            rows.append(evaluate(name, run, incontrol[:n_slow], drift[:10 * n_slow]))
        else:
            rows.append(evaluate(name, run, incontrol, drift))
        rows[-1]["seconds"] = time.perf_counter() - t
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format="%.2f"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
