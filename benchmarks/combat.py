"""ComBat: sitekit vs neuroCombat, side by side in one run.

Usage::

    .venv/bin/python benchmarks/combat.py            # the sizes of issue 3
    .venv/bin/python benchmarks/combat.py --quick    # smaller, ~20 s

Cases
-----
1. parametric fit + transform, 5,000 samples x 10,000 features, 10 sites: time and peak
   memory (tracemalloc, in units of the input matrix) of both tools, and their agreement.
2. non-parametric fit + transform, 2,000 x 1,000, 4 sites: time of both tools.
3. non-parametric with 2,000 samples per site (2 sites x 2,000 x 200 features): whether
   the output is finite (the reference implementations underflow to NaN there).

neuroCombat takes features x samples; the transposed copy is made before timing.  The
machine is shared, so compare the ratios of one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (~20 s)")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    ap.add_argument("--case", type=int, choices=[1, 2, 3], default=None, help="run one case only")
    args = ap.parse_args()
    run_sitekit(*make_data(60, 20, 3))  # warm-up (first-call overheads)
    run_neurocombat(*(lambda X, s: (np.ascontiguousarray(X.T), s))(*make_data(60, 20, 3)))
    sizes = {
        1: ((1000, 2000, 5), (5000, 10000, 10)),
        2: ((500, 300, 4), (2000, 1000, 4)),
        3: ((2000, 50), (2000, 200)),
    }
    for case, fn in ((1, case_parametric), (2, case_nonparametric), (3, case_underflow)):
        if args.case in (None, case):
            size = sizes[case][0 if args.quick else 1]
            if case == 1:
                fn(*size, memory=not args.no_memory)
            else:
                fn(*size)


if __name__ == "__main__":
    main()
