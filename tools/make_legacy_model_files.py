"""Write one model file of every kind with sitekit 0.1, plus the expected outputs.

Run once with sitekit 0.1 (main before the single persistence layer)::

    PYTHONPATH=$PWD python tools/make_legacy_model_files.py tests/harmonize/data/legacy_0.1

It writes, from seeded synthetic data:

* ``input.csv`` (3 sites, age and sex, 6 features), ``new_site.csv`` (a site ``s3``
  unseen in fit), ``nested_input.csv`` (two crossed batch variables);
* one model file per kind: ComBat plain, ``ref_site``, ``mean_only``, non-parametric,
  adapted to ``s3``, GAM (``smooth=``), ``target_site``; CovBat; NestedComBat;
* the federated files: round-1 and round-2 site summaries, the round-1 message and the
  final model;
* ``<model>.expected.csv``: the model's ``transform`` of its input with sitekit 0.1
  (17 significant digits), which the tests compare with the outputs of the current code.

The files in the repository were made by this script; do not regenerate them with a newer
sitekit (they exist to prove that files written by 0.1 still load).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

import sitekit
from sitekit.harmonize import ComBat, CovBat, NestedComBat
from sitekit.harmonize import federated as fed

FEATURES = [f"f{g}" for g in range(6)]


def make_table(random_state: int, sites: list[str], n: int) -> pd.DataFrame:
    """Sites with additive and multiplicative effects and an age/sex effect to keep."""
    rng = np.random.default_rng(random_state)
    rows = []
    for i, site in enumerate(sites):
        age = rng.uniform(30, 80, n)
        sex = rng.choice(["F", "M"], n)
        base = rng.normal(0.0, 1.0, (n, len(FEATURES)))
        shift = rng.normal(0.0, 1.5, len(FEATURES)) * (i + 1)
        scale = rng.uniform(0.6, 1.8, len(FEATURES))
        X = base * scale + shift + 0.04 * age[:, None] + 0.5 * (sex == "M")[:, None] + 10.0
        frame = pd.DataFrame(X, columns=FEATURES)
        frame.insert(0, "sex", sex)
        frame.insert(0, "age", age)
        frame.insert(0, "site", site)
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def make_nested(random_state: int, n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(random_state)
    vendor = rng.choice(["GE", "Siemens", "Philips"], n)
    recon = rng.choice(["OSEM", "PSF"], n)
    age = rng.uniform(30, 80, n)
    X = rng.normal(0.0, 1.0, (n, len(FEATURES))) + 0.03 * age[:, None]
    for labels in (vendor, recon):
        for lv in np.unique(labels):
            m = labels == lv
            X[m] = X[m] * rng.uniform(0.7, 1.4, len(FEATURES)) + rng.normal(0.0, 0.8, len(FEATURES))
    frame = pd.DataFrame(X, columns=FEATURES)
    frame.insert(0, "age", age)
    frame.insert(0, "recon", recon)
    frame.insert(0, "vendor", vendor)
    return frame


def write_expected(path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False, float_format="%.17g")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df = make_table(0, ["s0", "s1", "s2"], 40)
    new = make_table(1, ["s3"], 25)
    nested = make_nested(2)
    write_expected(out / "input.csv", df)
    write_expected(out / "new_site.csv", new)
    write_expected(out / "nested_input.csv", nested)
    X, sites, cov = df[FEATURES], df["site"], df[["age", "sex"]]

    combat_models = {
        "combat_plain": ComBat(),
        "combat_ref_site": ComBat(ref_site="s1"),
        "combat_mean_only": ComBat(mean_only=True),
        "combat_nonparametric": ComBat(parametric=False),
        "combat_gam": ComBat(smooth=["age"]),
        "combat_target_site": ComBat(target_site="s2"),
        "covbat": CovBat(n_components=3),
    }
    for name, model in combat_models.items():
        model.fit(X, sites=sites, covariates=cov)
        model.save(out / f"{name}.npz", force=True)
        write_expected(out / f"{name}.expected.csv", model.transform(X, sites=sites, covariates=cov))

    base = ComBat().fit(X, sites=sites, covariates=cov)
    adapted = base.adapt(new[FEATURES], sites=new["site"], covariates=new[["age", "sex"]])
    adapted.save(out / "combat_adapted.npz", force=True)
    both = pd.concat([df, new], ignore_index=True)
    write_expected(
        out / "combat_adapted.expected.csv",
        adapted.transform(both[FEATURES], sites=both["site"], covariates=both[["age", "sex"]]),
    )

    nc = NestedComBat(batch_cols=["vendor", "recon"]).fit(
        nested[FEATURES], batches=nested[["vendor", "recon"]], covariates=nested[["age"]]
    )
    nc.save(out / "nested.npz", force=True)
    write_expected(
        out / "nested.expected.csv",
        nc.transform(nested[FEATURES], batches=nested[["vendor", "recon"]], covariates=nested[["age"]]),
    )

    # federated: every site summarises its rows, the coordinator combines
    parts = {s: df[df["site"] == s] for s in ["s0", "s1", "s2"]}
    round1 = []
    for s, part in parts.items():
        summary = fed.summarize_site(part[FEATURES], sites=part["site"], covariates=part[["age", "sex"]])
        summary.save(out / f"federated_summary1_{s}.npz", force=True)
        round1.append(summary)
    message = fed.combine(round1)
    message.save(out / "federated_message1.npz", force=True)
    round2 = []
    for s, part in parts.items():
        summary = fed.summarize_site(
            part[FEATURES], sites=part["site"], covariates=part[["age", "sex"]], message=message
        )
        summary.save(out / f"federated_summary2_{s}.npz", force=True)
        round2.append(summary)
    model = fed.combine(round2, message=message)
    model.save(out / "federated_model.npz", force=True)
    write_expected(out / "federated_model.expected.csv", model.transform(X, sites=sites, covariates=cov))
    (out / "VERSION").write_text(f"written by sitekit {sitekit.__version__}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/harmonize/data/legacy_0.1"))
