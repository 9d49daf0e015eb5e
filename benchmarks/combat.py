"""ComBat: sitekit vs neuroCombat, side by side in one run.

Usage::

    .venv/bin/python benchmarks/combat.py            # the sizes of issue 3
    .venv/bin/python benchmarks/combat.py --quick    # smaller, ~20 s

Cases (issue 18 adds 4-6; each prints the machine load, os.getloadavg, beside its figures)
-----
1. parametric fit + transform, 5,000 samples x 10,000 features, 10 sites: time and peak
   memory (tracemalloc, in units of the input matrix) of both tools, and their agreement.
2. non-parametric fit + transform, 2,000 x 1,000, 4 sites: time of both tools.
3. non-parametric with 2,000 samples per site (2 sites x 2,000 x 200 features): whether
   the output is finite (the reference implementations underflow to NaN there).

4. float32 vs float64 parametric fit + transform, 5,000 x 10,000, 10 sites, against the
   numpy floor (a bare standardise pass: mean, SD, new output), best of three; peak memory
   (tracemalloc, in units of the float64 input) and the float32-float64 difference in SD.
5. non-parametric exact (``prior_features=None``) vs sampled (``prior_features=2000``),
   2,000 x 10,000, 4 sites: time (best of three) and the difference in feature SDs (max,
   p99, median) at ``random_state=0`` and the largest over ``random_state=1..4``.
6. non-parametric with the default (sampled beyond 5,000 features), 200 x 100,000, 4 sites.

neuroCombat takes features x samples; the transposed copy is made before timing.  The
machine is shared, so compare the ratios of one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd
from neuroCombat import neuroCombat

from sitekit.harmonize import ComBat


def make_data(n_samples: int, n_features: int, n_sites: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sites = np.arange(n_samples) % n_sites
    rng.shuffle(sites)
    loc = rng.normal(0, 1, size=(n_sites, n_features))
    scale = np.sqrt(1 / rng.gamma(8, 1 / 7, size=(n_sites, n_features)))
    mu = rng.uniform(0, 100, n_features)
    sd = rng.uniform(0.5, 5, n_features)
    X = rng.standard_normal((n_samples, n_features))
    X *= scale[sites]
    X += loc[sites]
    X *= sd
    X += mu
    return X, sites


def run_sitekit(X, sites, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ComBat(**params).fit_transform(X, sites=sites)


def run_neurocombat(Xt, sites, **params):
    covars = pd.DataFrame({"batch": sites})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return neuroCombat(dat=Xt, covars=covars, batch_col="batch", **params)["data"]


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def peak_memory(fn, *args, **kw) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn(*args, **kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out
    return peak


def case_parametric(n, p, k, memory: bool = True):
    X, sites = make_data(n, p, k)
    Xt = np.ascontiguousarray(X.T)
    # sitekit: first run, then two more (median of three); neuroCombat once (it is slow)
    t_first, out_sk = timed(run_sitekit, X, sites)
    del out_sk
    t_nc, out_nc = timed(run_neurocombat, Xt, sites)
    times = [t_first]
    for _ in range(2):
        t, out_sk = timed(run_sitekit, X, sites)
        times.append(t)
    t_sk = statistics.median(times)
    diff = np.max(np.abs(out_sk - out_nc.T) / X.std(axis=0))
    del out_sk, out_nc
    print(f"\n[1] parametric fit+transform, {n} x {p}, {k} sites (input {X.nbytes / 1e6:.0f} MB)")
    print(f"    sitekit     {t_sk:8.2f} s (median of 3; first run {t_first:.2f} s)")
    print(f"    neuroCombat {t_nc:8.2f} s   -> sitekit is {t_nc / t_sk:5.1f}x faster "
          f"({t_nc / t_first:.1f}x against the first run)")
    print(f"    max |difference| / feature SD: {diff:.1e}")
    if memory:
        m_sk = peak_memory(run_sitekit, X, sites)
        m_nc = peak_memory(run_neurocombat, Xt, sites)
        print(f"    peak extra memory (tracemalloc), in input-matrix units: "
              f"sitekit {m_sk / X.nbytes:4.2f}x, neuroCombat {m_nc / X.nbytes:4.2f}x")
    return t_sk, t_nc


def case_nonparametric(n, p, k):
    X, sites = make_data(n, p, k, seed=1)
    Xt = np.ascontiguousarray(X.T)
    t_sk, out_sk = timed(run_sitekit, X, sites, parametric=False)
    t_nc, out_nc = timed(run_neurocombat, Xt, sites, parametric=False)
    diff = np.abs(out_sk - out_nc.T) / X.std(axis=0)
    print(f"\n[2] non-parametric fit+transform, {n} x {p}, {k} sites")
    print(f"    sitekit     {t_sk:8.2f} s")
    print(f"    neuroCombat {t_nc:8.2f} s   -> sitekit is {t_nc / t_sk:5.1f}x faster")
    print(f"    |difference| / feature SD: median {np.nanmedian(diff):.1e}, max {np.nanmax(diff):.1e}; "
          f"neuroCombat NaN cells: {int(np.isnan(out_nc).sum())} "
          "(at this many samples per site its probability-domain likelihoods underflow)")
    return t_sk, t_nc


def case_underflow(per_site, p):
    X, sites = make_data(2 * per_site, p, 2, seed=2)
    Xt = np.ascontiguousarray(X.T)
    t_sk, out_sk = timed(run_sitekit, X, sites, parametric=False)
    t_nc, out_nc = timed(run_neurocombat, Xt, sites, parametric=False)
    print(f"\n[3] non-parametric, {per_site} samples per site x {p} features, 2 sites")
    print(f"    sitekit     {t_sk:8.2f} s, finite output: {bool(np.isfinite(out_sk).all())}")
    print(f"    neuroCombat {t_nc:8.2f} s, finite output: {bool(np.isfinite(out_nc).all())} "
          f"(NaN cells: {int(np.isnan(out_nc).sum())} of {out_nc.size})")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f} on {os.cpu_count()} cores"


def numpy_floor(X):
    """The hardware floor of a standardise pass: mean, SD, one new output."""
    mean = X.mean(axis=0)
    sd = X.std(axis=0)
    out = np.subtract(X, mean)
    out /= sd
    return out


def best_of(k, fn, *args, **kw):
    best = np.inf
    for _ in range(k):
        t, out = timed(fn, *args, **kw)
        del out
        best = min(best, t)
    return best


def case_float32(n, p, k):
    X, sites = make_data(n, p, k)
    X32 = X.astype(np.float32)
    print(f"\n[4] float32 vs float64, parametric fit+transform, {n} x {p}, {k} sites ({load()})")
    t_floor = best_of(3, numpy_floor, X)
    t64 = best_of(3, run_sitekit, X, sites)
    t32 = best_of(3, run_sitekit, X32, sites)
    t_floor32 = best_of(3, numpy_floor, X32)
    out64 = run_sitekit(X32.astype(np.float64), sites)
    out32 = run_sitekit(X32, sites)
    diff = np.max(np.abs(out32.astype(np.float64) - out64) / out64.std(axis=0))
    dtype = out32.dtype
    del out64, out32
    m64 = peak_memory(run_sitekit, X, sites)
    m32 = peak_memory(run_sitekit, X32, sites)
    print(f"    numpy floor float64 {t_floor:6.2f} s   float32 {t_floor32:6.2f} s   (best of 3)")
    print(f"    sitekit float64     {t64:6.2f} s = {t64 / t_floor:4.2f}x the float64 floor")
    print(f"    sitekit float32     {t32:6.2f} s = {t32 / t_floor:4.2f}x the float64 floor, "
          f"{t32 / t64:4.2f}x float64")
    print(f"    output dtype for float32 input: {dtype}; max |float32 - float64| = {diff:.1e} SD")
    print(f"    peak extra memory (tracemalloc) in float64-input units: float64 {m64 / X.nbytes:4.2f}x, "
          f"float32 {m32 / X.nbytes:4.2f}x")
    print(f"    ({load()})")


def case_sampled(n, p, k, support=2000):
    X, sites = make_data(n, p, k, seed=1)
    sd = X.std(axis=0)
    print(f"\n[5] non-parametric exact vs prior_features={support}, {n} x {p}, {k} sites ({load()})")
    t_exact, exact = timed(run_sitekit, X, sites, parametric=False, prior_features=None)
    t_s, sampled = timed(run_sitekit, X, sites, parametric=False, prior_features=support,
                         random_state=0)
    t_exact = min(t_exact, best_of(2, run_sitekit, X, sites, parametric=False, prior_features=None))
    t_s = min(t_s, best_of(2, run_sitekit, X, sites, parametric=False, prior_features=support,
                           random_state=0))
    err = np.abs(sampled - exact) / sd
    seeds = [np.abs(run_sitekit(X, sites, parametric=False, prior_features=support, random_state=rs)
                    - exact) / sd for rs in range(1, 5)]
    raw = run_sitekit(X, sites, parametric=False, eb=False)
    shrink = np.abs(raw - exact) / sd
    print(f"    exact   {t_exact:7.2f} s")
    print(f"    sampled {t_s:7.2f} s   ({t_exact / t_s:.1f}x faster)")
    print(f"    |sampled - exact| in feature SDs: max {err.max():.1e}, p99 {np.quantile(err, 0.99):.1e}, "
          f"median {np.median(err):.1e}  (the EB shrinkage itself: max {shrink.max():.2f}, "
          f"median {np.median(shrink):.1e})")
    print(f"    random_state=1..4: largest max {max(e.max() for e in seeds):.1e}, "
          f"largest p99 {max(np.quantile(e, 0.99) for e in seeds):.1e}")
    print(f"    ({load()})")


def case_wide(n, p, k):
    X, sites = make_data(n, p, k, seed=3)
    print(f"\n[6] non-parametric, default prior_features ('auto'), {n} x {p}, {k} sites ({load()})")
    t, out = timed(run_sitekit, X, sites, parametric=False, random_state=0)
    print(f"    sitekit {t:7.2f} s, finite output: {bool(np.isfinite(out).all())} "
          f"({'under' if t < 60 else 'OVER'} a minute; {load()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (~20 s)")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    ap.add_argument("--case", type=int, choices=[1, 2, 3, 4, 5, 6], action="append", default=None,
                    help="run these cases only (repeat the option)")
    args = ap.parse_args()
    run_sitekit(*make_data(60, 20, 3))  # warm-up (first-call overheads)
    run_neurocombat(*(lambda X, s: (np.ascontiguousarray(X.T), s))(*make_data(60, 20, 3)))
    sizes = {
        1: ((1000, 2000, 5), (5000, 10000, 10)),
        2: ((500, 300, 4), (2000, 1000, 4)),
        3: ((2000, 50), (2000, 200)),
        4: ((1000, 2000, 5), (5000, 10000, 10)),
        5: ((400, 2500, 4), (2000, 10000, 4)),
        6: ((100, 8000, 4), (200, 100_000, 4)),
    }
    print(f"machine: {load()}")
    cases = ((1, case_parametric), (2, case_nonparametric), (3, case_underflow),
             (4, case_float32), (5, case_sampled), (6, case_wide))
    for case, fn in cases:
        if args.case is None or case in args.case:
            size = sizes[case][0 if args.quick else 1]
            if case == 1:
                fn(*size, memory=not args.no_memory)
            elif case == 5 and args.quick:
                fn(*size, support=500)
            else:
                fn(*size)


if __name__ == "__main__":
    main()
