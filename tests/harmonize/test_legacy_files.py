"""Model files written by sitekit 0.1 still load and give the outputs 0.1 gave.

The files in ``data/legacy_0.1`` were written by ``tools/make_legacy_model_files.py`` with
sitekit 0.1 (before the single persistence layer); the ``*.expected.csv`` files hold the
transform outputs of 0.1.  Regression guard for issue 13 item 1 (files written by 0.1 still
load).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sitekit.harmonize import ComBat, CovBat, NestedComBat

DATA = Path(__file__).parent / "data" / "legacy_0.1"
FEATURES = [f"f{g}" for g in range(6)]

CASES = [
    ("combat_plain", ComBat, "input"),
    ("combat_ref_site", ComBat, "input"),
    ("combat_mean_only", ComBat, "input"),
    ("combat_nonparametric", ComBat, "input"),
    ("combat_gam", ComBat, "input"),
    ("combat_target_site", ComBat, "input"),
    ("combat_adapted", ComBat, "both"),
    ("covbat", CovBat, "input"),
    ("nested", NestedComBat, "nested"),
    ("federated_model", ComBat, "input"),
]


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{name}.csv")


def _transform(model, which: str) -> pd.DataFrame:
    if which == "nested":
        df = _read("nested_input")
        return model.transform(df[FEATURES], batches=df[["vendor", "recon"]], covariates=df[["age"]])
    df = _read("input")
    if which == "both":
        df = pd.concat([df, _read("new_site")], ignore_index=True)
    return model.transform(df[FEATURES], sites=df["site"], covariates=df[["age", "sex"]])


@pytest.mark.parametrize("name,cls,which", CASES, ids=[c[0] for c in CASES])
def test_legacy_file_loads_and_gives_the_same_output(name, cls, which):
    model = cls.load(DATA / f"{name}.npz")
    assert isinstance(model, cls)
    got = _transform(model, which)
    expected = _read(f"{name}.expected")
    assert list(got.columns) == list(expected.columns)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12, atol=1e-12)
