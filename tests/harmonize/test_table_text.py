"""Issue 15 item 8: harmonize never changes a user's data silently.

Site and id codes keep their leading zeros through a round trip; a feature column broken by a
bad cell or by decimal commas is refused (naming column, line and value) instead of passing
through unharmonized; --sep/--decimal read such exports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sitekit.exceptions import SitekitError, ValidationError
from sitekit.harmonize import harmonize_table


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame({"subject_id": [f"{i:03d}" for i in range(n)],
                       "site": ["01", "02", "03", "04"] * 10, "age": rng.uniform(40, 80, n)})
    for j in range(4):
        df[f"f{j}"] = rng.normal(10, 2, n) + np.repeat([0.0, 1.0, -1.0, 0.5], 10)[rng.permutation(n)]
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    return df, path


def test_codes_keep_their_leading_zeros(table, tmp_path):
    df, path = table
    res = harmonize_table(path, out=tmp_path / "o" / "h.csv", site_col="site")
    out = pd.read_csv(tmp_path / "o" / "h.csv", dtype=str)
    assert out["subject_id"].tolist() == df["subject_id"].tolist()
    assert out["site"].tolist() == df["site"].tolist()
    assert "subject_id" not in res.selection.features
    assert [str(s) for s in res.model.sites_] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("bad,fragment", [("12.3.4", "'12.3.4' on line 7"), ("abc", "'abc' on line 7")])
def test_a_bad_cell_in_a_feature_is_refused(table, tmp_path, bad, fragment):
    df, path = table
    broken = df.astype({"f1": object})
    broken.loc[5, "f1"] = bad
    broken.to_csv(path, index=False)
    with pytest.raises(ValidationError, match="'f1'") as err:
        harmonize_table(path, out=tmp_path / "o" / "h.csv", site_col="site")
    assert fragment in str(err.value)
    assert not (tmp_path / "o").exists()


def test_decimal_commas_are_refused_with_the_fix_then_read(table, tmp_path):
    df, path = table
    dc = df.copy()
    for c in ["age", "f0", "f1", "f2", "f3"]:
        dc[c] = dc[c].map(lambda v: f"{v:.4f}".replace(".", ","))
    dc.to_csv(path, index=False, sep=";")
    with pytest.raises(SitekitError, match="semicolon"):
        harmonize_table(path, out=tmp_path / "o" / "h.csv", site_col="site")
    res = harmonize_table(path, out=tmp_path / "o" / "h.csv", site_col="site", sep=";", decimal=",")
    assert res.selection.features == ["age", "f0", "f1", "f2", "f3"]
    proc = subprocess.run([sys.executable, "-m", "sitekit", "harmonize", "run", str(path),
                           "--site-col", "site", "--covariates", "age", "--out",
                           str(tmp_path / "c" / "h.csv")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--sep ';'" in proc.stderr + proc.stdout
    proc = subprocess.run([sys.executable, "-m", "sitekit", "harmonize", "run", str(path),
                           "--site-col", "site", "--covariates", "age", "--sep", ";", "--decimal", ",",
                           "--out", str(tmp_path / "c" / "h.csv")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(tmp_path / "c" / "h.csv", dtype=str)["site"].iloc[0] == "01"
