"""ICC at scale: ``sitekit.robustness.icc.icc`` vs looping ``pingouin.intraclass_corr``.

Usage::

    .venv/bin/python benchmarks/stability.py           # 1,000 features x 100 cases x 10 perturbations
    .venv/bin/python benchmarks/stability.py --quick   # 200 features, pingouin on 5 of them

1. ICC of every feature: sitekit computes all features in one vectorised call (all six forms
   with their confidence intervals, the same work pingouin does per call); pingouin is called
   once per feature on that feature's long table (the usual ``groupby("feature").apply``
   loop).  pingouin is timed on a subset of features and extrapolated linearly to all of
   them (each call is independent and the same size).  Target: >= 100x.
2. The values of both tools on the subset agree (max abs difference printed).
3. For information: the NTCV perturbation chain on a 32^3 case (no reference tool).

The machine is shared, so compare ratios from the same run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import pingouin as pg
import SimpleITK as sitk

from sitekit.robustness.icc import icc
from sitekit.robustness.perturbations import get_chain


def make_ratings(n_subjects: int, n_raters: int, n_features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    between = rng.normal(size=(n_subjects, 1, n_features)) * rng.uniform(0.1, 3.0, n_features)
    within = rng.normal(size=(n_subjects, n_raters, n_features))
    return between + within + rng.uniform(-10, 10, n_features)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--features", type=int, default=None)
    ap.add_argument("--subset", type=int, default=None, help="features timed with pingouin")
    args = ap.parse_args()
    n_subjects, n_raters = 100, 10
    n_features = args.features or (200 if args.quick else 1000)
    subset = args.subset or (5 if args.quick else 25)

    pg.options["round"] = None
    pg.options["round.column.CI95"] = None
    y = make_ratings(n_subjects, n_raters, n_features)
    names = [f"f{j}" for j in range(n_features)]

    # --- sitekit: every feature, one call
    icc(y, form="all", feature_names=names)  # warm-up
    t_sitekit = best_of(lambda: icc(y, form="all", feature_names=names), 3)
    t_sitekit_one = best_of(lambda: icc(y, form="ICC(1,1)", feature_names=names), 3)
    ours = icc(y, form="all", feature_names=names).set_index(["feature", "form"])

    # --- pingouin: one call per feature on the long table of that feature
    long = pd.DataFrame({
        "subject": np.repeat(np.arange(n_subjects), n_raters * subset),
        "rater": np.tile(np.repeat(np.arange(n_raters), subset), n_subjects),
        "feature": np.tile(names[:subset], n_subjects * n_raters),
        "value": y[:, :, :subset].ravel(),
    })
    groups = [(f, g) for f, g in long.groupby("feature", sort=False)]

    def run_pingouin():
        return {f: pg.intraclass_corr(g, targets="subject", raters="rater", ratings="value")
                for f, g in groups}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_pingouin()  # warm-up
        t_pg_subset = best_of(run_pingouin, 2)
        ref = run_pingouin()
    t_pg = t_pg_subset / subset * n_features

    pmap = {"ICC(1,1)": "ICC(1,1)", "ICC(2,1)": "ICC(A,1)", "ICC(3,1)": "ICC(C,1)",
            "ICC(1,k)": "ICC(1,k)", "ICC(2,k)": "ICC(A,k)", "ICC(3,k)": "ICC(C,k)"}
    diff = 0.0
    for f, table in ref.items():
        t = table.set_index("Type")
        for form, pform in pmap.items():
            lo, hi = t.loc[pform, "CI95"]
            row = ours.loc[(f, form)]
            diff = max(diff, abs(row["icc"] - t.loc[pform, "ICC"]), abs(row["ci_low"] - lo),
                       abs(row["ci_high"] - hi), abs(row["p_value"] - t.loc[pform, "pval"]))

    print(f"ICC, {n_features:,} features x {n_subjects} cases x {n_raters} perturbations")
    print(f"{'tool':<42}{'time (s)':>12}{'ratio':>10}")
    print(f"{'pingouin loop (extrapolated from ' + str(subset) + ' features)':<42}{t_pg:>12.2f}{1:>10.0f}")
    print(f"{'sitekit icc(form=all), one call':<42}{t_sitekit:>12.4f}{t_pg / t_sitekit:>10.0f}x")
    print(f"{'sitekit icc(form=ICC(1,1)), one call':<42}{t_sitekit_one:>12.4f}{t_pg / t_sitekit_one:>10.0f}x")
    print(f"pingouin per feature: {t_pg_subset / subset * 1e3:.1f} ms; "
          f"max |difference| over {subset} features x 6 forms (ICC, CI, p): {diff:.2e}")
    target = t_pg / t_sitekit >= 100
    print(f"target >= 100x: {'met' if target else 'MISSED'}")

    # --- perturbation chain, for information
    rng = np.random.default_rng(0)
    z, yy, x = np.mgrid[:32, :32, :32].astype(float)
    r = np.sqrt((x - 15.5) ** 2 + (yy - 15.5) ** 2 + (z - 15.5) ** 2)
    img = sitk.GetImageFromArray((1 + 8 * np.exp(-r**2 / 18) + 0.1 * rng.normal(size=r.shape)).astype(np.float32))
    img.SetSpacing((2.0, 2.0, 2.0))
    mask = sitk.GetImageFromArray((r <= 5).astype(np.uint8))
    mask.CopyInformation(img)
    chain = get_chain("NTCV", random_state=0)
    reps = 5 if args.quick else 20
    t_chain = best_of(lambda: [chain(img, mask) for _ in range(reps)], 2) / reps
    print(f"NTCV chain on a 32^3 case: {t_chain * 1e3:.1f} ms per perturbed copy")


if __name__ == "__main__":
    main()
