"""ComBat extensions (issue 8): time of each method against plain ComBat and neuroCombat.

Usage::

    .venv/bin/python benchmarks/harmonize_ext.py            # 4,000 samples x 400 features
    .venv/bin/python benchmarks/harmonize_ext.py --quick    # 1,000 x 100, a few seconds

All methods run on the same table (8 sites; age and sex covariates; for NestedComBat two
crossed batch variables, vendor x reconstruction).  neuroCombat (plain linear ComBat, the
reference tool) is the baseline of the ratios; there is no installed reference for CovBat,
ComBat-GAM, Nested ComBat or adapting to new sites, so their cost is shown relative to
sitekit's plain ComBat.  The machine is shared: compare ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
import warnings

import numpy as np
import pandas as pd
from neuroCombat import neuroCombat

from sitekit.harmonize import ComBat, CovBat, NestedComBat


def make_data(n: int, p: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vendor = rng.choice(["GE", "Philips", "Siemens", "Canon"], n)
    recon = rng.choice(["OSEM", "PSF"], n)
    sites = np.char.add(np.char.add(vendor.astype(str), "_"), recon.astype(str))
    age = rng.uniform(25, 85, n)
    sex = rng.choice(["F", "M"], n)
    X = rng.normal(size=(n, p)) + 0.02 * age[:, None] + 0.3 * (sex == "M")[:, None]
    for labels in (vendor, recon):
        for lv in np.unique(labels):
            m = labels == lv
            X[m] = X[m] * rng.uniform(0.7, 1.4, p) + rng.normal(0, 0.8, p)
    cols = [f"f{j:04d}" for j in range(p)]
    return (pd.DataFrame(X, columns=cols), sites, pd.DataFrame({"age": age, "sex": sex}),
            pd.DataFrame({"vendor": vendor, "recon": recon}))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 x 100 instead of 4,000 x 400")
    args = ap.parse_args()
    n, p, reps = (1000, 100, 3) if args.quick else (4000, 400, 3)
    X, sites, cov, batches = make_data(n, p)
    hold = sites == np.unique(sites)[-1]
    warnings.simplefilter("ignore")

    def neuro():
        covars = pd.DataFrame({"batch": sites, "age": cov["age"], "sex": cov["sex"]})
        with contextlib.redirect_stdout(io.StringIO()):
            neuroCombat(X.to_numpy().T, covars, "batch", categorical_cols=["sex"], continuous_cols=["age"])

    fitted = ComBat().fit(X[~hold], sites=sites[~hold], covariates=cov[~hold])
    cases = [
        ("neuroCombat (reference, linear)", neuro),
        ("sitekit ComBat", lambda: ComBat().fit_transform(X, sites=sites, covariates=cov)),
        ("ComBat(smooth=['age']) (GAM)",
         lambda: ComBat(smooth=["age"]).fit_transform(X, sites=sites, covariates=cov)),
        ("ComBat(target_site=...)",
         lambda: ComBat(target_site=sites[0]).fit_transform(X, sites=sites, covariates=cov)),
        ("CovBat(n_components=0.95)", lambda: CovBat().fit_transform(X, sites=sites, covariates=cov)),
        ("NestedComBat(vendor, recon), auto order",
         lambda: NestedComBat(batch_cols=["vendor", "recon"]).fit_transform(
             X, batches=batches, covariates=cov)),
        (f"ComBat.adapt (new site, {int(hold.sum())} rows)",
         lambda: fitted.adapt(X[hold], sites=sites[hold], covariates=cov[hold])),
    ]
    print(f"{n} samples x {p} features, {len(np.unique(sites))} sites, median of {reps} runs")
    results = [(name, timed(fn, reps)) for name, fn in cases]
    ref, base = results[0][1], results[1][1]
    print(f"{'method':45s} {'time (s)':>9s} {'/neuroCombat':>13s} {'/sitekit ComBat':>16s}")
    for name, t in results:
        print(f"{name:45s} {t:9.3f} {t / ref:13.2f} {t / base:16.2f}")


if __name__ == "__main__":
    main()
