"""Model-robustness benchmarks: sitekit against the reference tools, side by side.

1. Minimal adversarial distance of a linear model (Pipeline StandardScaler + LogisticRegression):
   sitekit's exact closed form vs adversarial-robustness-toolbox HopSkipJump (time per case and
   the distance HSJ finds relative to the true minimum).
2. Per-feature site-effect tests: ``site_effects`` (vectorised Kruskal-Wallis + BH) vs a loop of
   ``scipy.stats.kruskal`` over features.
3. Leave-one-site-out with ComBat fitted per fold vs a plain scikit-learn LeaveOneGroupOut loop
   without harmonisation (the price of doing harmonisation right).

Run:  .venv/bin/python benchmarks/robustness.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sitekit.datasets import make_feature_table
from sitekit.harmonize import ComBat
from sitekit.robustness import leave_one_site_out, minimal_perturbation, site_effects


def _time(fn, repeat=1):
    best = np.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_adversarial(n_cases: int) -> None:
    df = make_feature_table(n_per_site=(100, 100, 100), n_features=20, random_state=0)
    feats = [c for c in df.columns if c.startswith("original_")]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(df[feats], df["outcome"])
    X = df[feats].iloc[:n_cases]
    t_exact, exact = _time(lambda: minimal_perturbation(model, X, scale="std"), repeat=3)
    t_hsj, hsj = _time(lambda: minimal_perturbation(model, X, scale="std", method="hopskipjump",
                                                    random_state=0, max_iter=20, max_eval=1000))
    ratio = (hsj["distance"] / exact["distance"]).to_numpy()
    print(f"\n1. minimal L2 distance, {n_cases} cases x {len(feats)} features (linear model)")
    print(f"   {'method':<28}{'s/case':>12}{'median d/d_exact':>20}")
    print(f"   {'sitekit exact':<28}{t_exact / n_cases:>12.2e}{1.0:>20.3f}")
    print(f"   {'ART HopSkipJump (20 it)':<28}{t_hsj / n_cases:>12.2e}{np.median(ratio):>20.3f}")
    print(f"   speed ratio HSJ / exact: {t_hsj / t_exact:,.0f}x; "
          f"HSJ never below the exact minimum: {bool((ratio >= 1 - 1e-4).all())}")


def bench_site_effects(n_features: int) -> None:
    rng = np.random.default_rng(0)
    sites = np.repeat(["a", "b", "c", "d"], 100)
    X = pd.DataFrame(rng.normal(size=(400, n_features)) + (sites == "b")[:, None] * 0.3,
                     columns=[f"f{i}" for i in range(n_features)])

    def loop():
        p = [stats.kruskal(*[X.loc[sites == s, c] for s in "abcd"]).pvalue for c in X.columns]
        return stats.false_discovery_control(p)

    t_ours, ours = _time(lambda: site_effects(X, sites), repeat=3)
    t_loop, ref = _time(loop)
    print(f"\n2. Kruskal-Wallis + BH, 400 samples x {n_features} features")
    print(f"   {'sitekit site_effects':<28}{t_ours:>10.3f} s")
    print(f"   {'scipy.stats.kruskal loop':<28}{t_loop:>10.3f} s   ratio {t_loop / t_ours:.1f}x; "
          f"max |q diff| {np.max(np.abs(ours['q_value'] - ref)):.1e}")


def bench_loso() -> None:
    df = pd.read_csv("sample_data/features.csv")
    feats = [c for c in df.columns if c.startswith("original_")]
    X, y, sites = df[feats], df["outcome"].to_numpy(), df["site"].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1))

    def plain():
        aucs = []
        for tr, te in LeaveOneGroupOut().split(X, y, groups=sites):
            m = model.fit(X.iloc[tr], y[tr])
            aucs.append(roc_auc_score(y[te], m.predict_proba(X.iloc[te])[:, 1]))
        return aucs

    t_plain, aucs = _time(plain, repeat=3)
    t_ours, res = _time(lambda: leave_one_site_out(
        model, X, y, sites=sites, harmonizer=ComBat(), covariates=df[["age", "sex"]],
        scoring="roc_auc", n_bootstrap=0), repeat=3)
    t_boot, _ = _time(lambda: leave_one_site_out(
        model, X, y, sites=sites, harmonizer=ComBat(), covariates=df[["age", "sex"]],
        n_bootstrap=1000, random_state=0))
    per_site = res[res["site"] != "(pooled)"]["value"]
    print("\n3. leave-one-site-out on sample_data/features.csv (270 x 30, 4 sites)")
    print(f"   {'sklearn LOGO loop, no harmonisation':<42}{t_plain:>8.3f} s  worst AUC {min(aucs):.3f}")
    print(f"   {'sitekit LOSO + ComBat per fold (adapt)':<42}{t_ours:>8.3f} s  worst AUC "
          f"{per_site.min():.3f}   ratio {t_ours / t_plain:.1f}x")
    print(f"   {'  + 6 metrics, 1000 bootstrap CIs':<42}{t_boot:>8.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smaller sizes.")
    args = parser.parse_args()
    bench_adversarial(10 if args.quick else 40)
    bench_site_effects(200 if args.quick else 2000)
    bench_loso()


if __name__ == "__main__":
    main()
