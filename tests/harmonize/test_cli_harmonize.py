"""`sitekit harmonize fit | apply | run` on CSV, TSV and Parquet tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from combat_data import make_sites_data

from sitekit.cli import main
from sitekit.harmonize import ComBat
from sitekit.io import read_table


@pytest.fixture
def table(tmp_path):
    X, sites, cov = make_sites_data(covariates=True, seed=2)
    df = X.reset_index()
    df.insert(1, "site", sites.to_numpy())
    df["age"] = cov["age"].to_numpy()
    df["sex"] = cov["sex"].to_numpy()
    df["note"] = "scan ok"
    df["subject_id"] = np.arange(len(df)) + 1000
    df["n_lesions"] = pd.array(np.arange(len(df)) % 4, dtype="Int64")
    path = tmp_path / "features.csv"
    df.to_csv(path, index=False)
    return path, df, [f"f{j}" for j in range(8)]


def expected(df, feats, **params):
    return ComBat(**params).fit_transform(df[feats], sites=df["site"], covariates=df[["age", "sex"]])


def test_fit_then_apply(table, tmp_path):
    path, df, feats = table
    model = tmp_path / "m.npz"
    out = tmp_path / "out.csv"
    assert main(["harmonize", "fit", str(path), "--site-col", "site", "--covariates", "age,sex",
                 "--model", str(model)]) == 0
    loaded = ComBat.load(model)
    # id, note, subject_id and the label-like n_lesions (4 integer values) are left out
    assert list(loaded.feature_names_in_) == feats
    assert main(["harmonize", "apply", str(path), "--model", str(model), "--out", str(out)]) == 0
    res = read_table(out)
    assert list(res.columns) == list(df.columns)  # order kept
    pd.testing.assert_frame_equal(res.drop(columns=feats), read_table(path).drop(columns=feats))
    np.testing.assert_allclose(res[feats].to_numpy(), expected(df, feats).to_numpy(), rtol=1e-12)


def test_run_writes_table_model_and_diagnostics(table, tmp_path):
    path, df, feats = table
    out = tmp_path / "res"
    assert main(["harmonize", "run", str(path), "--site-col", "site", "--covariates", "age,sex",
                 "--features", ",".join(feats), "--nonparametric", "--out",
                 str(out / "harmonized.csv")]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "harmonized.csv", "harmonized.diagnostics.json", "harmonized.model.npz"]
    res = read_table(out / "harmonized.csv")
    np.testing.assert_allclose(res[feats].to_numpy(), expected(df, feats, parametric=False).to_numpy(),
                               rtol=1e-12)
    diag = json.loads((out / "harmonized.diagnostics.json").read_text())
    assert diag["outputs"] == {"table": "harmonized.csv", "model": "harmonized.model.npz"}
    assert diag["sites"] == ["site0", "site1", "site2"] and diag["site_col"] == "site"
    assert diag["input"] == str(path.resolve()) and len(diag["input_sha256"]) == 64
    assert diag["covariate_columns"] == ["age", "sex[M]"]
    assert len(diag["priors"]) == 3 and len(diag["estimates"]["gamma_hat"][0]) == len(feats)
    assert ComBat.load(out / "harmonized.model.npz").parametric is False
    # outputs exist now: refused without --force, accepted with it
    args = ["harmonize", "run", str(path), "--site-col", "site", "--covariates", "age,sex",
            "--out", str(out / "harmonized.csv")]
    assert main(args) == 2
    assert main([*args, "--force"]) == 0


@pytest.mark.parametrize("suffix", [".tsv", ".parquet"])
def test_other_formats(table, tmp_path, suffix):
    path, df, feats = table
    other = tmp_path / f"features{suffix}"
    if suffix == ".parquet":
        df.to_parquet(other, index=False)
    else:
        df.to_csv(other, sep="\t", index=False)
    out = tmp_path / "res"
    assert main(["harmonize", "run", str(other), "--site-col", "site", "--covariates", "age,sex",
                 "--exclude", "n_lesions", "--mean-only", "--out", str(out / f"harmonized{suffix}")]) == 0
    res = read_table(out / f"harmonized{suffix}")
    np.testing.assert_allclose(res[feats].to_numpy(), expected(df, feats, mean_only=True).to_numpy(),
                               rtol=1e-12)
    if suffix == ".parquet":  # dtypes of pass-through columns kept
        assert res["n_lesions"].dtype == df["n_lesions"].dtype


def test_errors_map_to_exit_code_2(table, tmp_path, capsys):
    path, df, feats = table
    model = tmp_path / "m.npz"
    assert main(["harmonize", "fit", str(path), "--site-col", "site", "--features", "f0,f1,f2",
                 "--model", str(model)]) == 0
    new = df.copy()
    new.loc[0, "site"] = "site9"
    new_path = tmp_path / "new.csv"
    new.to_csv(new_path, index=False)
    assert main(["harmonize", "apply", str(new_path), "--model", str(model), "--out",
                 str(tmp_path / "o.csv")]) == 2
    assert "site9" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
    assert main(["harmonize", "fit", str(path), "--site-col", "site", "--nonparametric",
                 "--mean-only", "--model", str(tmp_path / "x.npz")]) == 2
    assert main(["harmonize", "fit", str(path), "--site-col", "nope", "--model",
                 str(tmp_path / "x.npz")]) == 2
    assert main(["harmonize", "apply", str(path), "--model", str(model), "--out", str(path)]) == 2
    assert "also an input" in capsys.readouterr().err


def test_default_selection_leaves_label_and_id_columns_out(tmp_path, capsys):
    """Regression (issue 14 item 4): the binary `outcome` column of the sample table was
    harmonised without a word; now it is left out, and the choice is printed."""
    X, sites, cov = make_sites_data(covariates=True, seed=3)
    df = X.reset_index(drop=True)
    df.insert(0, "site", sites.to_numpy())
    df["outcome"] = np.arange(len(df)) % 2
    df["grade"] = np.arange(len(df)) % 3 + 1
    df["patient_id"] = np.arange(len(df))
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "h.csv"
    assert main(["harmonize", "run", str(path), "--site-col", "site", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Harmonising 8 feature column(s): f0, f1" in printed
    assert "outcome (binary: 0, 1)" in printed and "grade (integer with 3 values" in printed
    assert "patient_id (id-like name)" in printed
    res = read_table(out)
    pd.testing.assert_series_equal(res["outcome"], df["outcome"])  # unchanged
    # glob patterns, and an explicit choice of a label-like column is honoured
    out2 = tmp_path / "h2.csv"
    assert main(["harmonize", "run", str(path), "--site-col", "site", "--features", "f[0-3],grade",
                 "--out", str(out2)]) == 0
    assert "Harmonising 5 feature column(s): f0, f1, f2, f3, grade" in capsys.readouterr().out
    assert main(["harmonize", "run", str(path), "--site-col", "site", "--features", "zz*",
                 "--out", str(tmp_path / "h3.csv")]) == 2
    assert "'zz*' matches no column" in capsys.readouterr().err


@pytest.mark.parametrize("command,out,fragment", [
    ("run", "res", "does not end in .csv or .tsv or .tab or .parquet"),
    ("run", "res/", "is a folder"),
    ("apply", "res", "does not end in"),
    ("run", "out.npz", "does not end in"),
])
def test_out_is_always_a_table_path(table, tmp_path, capsys, command, out, fragment):
    """Regression (issue 14 item 5): `run --out out.csv` created a folder, `apply --out` a
    file; now --out is the table in both, and a contradicting form is refused."""
    path, df, feats = table
    model = tmp_path / "m.npz"
    main(["harmonize", "fit", str(path), "--site-col", "site", "--model", str(model)])
    capsys.readouterr()
    target = str(tmp_path / out) + ("/" if out.endswith("/") else "")
    if command == "run":
        args = ["harmonize", "run", str(path), "--site-col", "site", "--out", target]
    else:
        args = ["harmonize", "apply", str(path), "--model", str(model), "--out", target]
    assert main(args) == 2
    assert fragment in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.csv", "m.npz"]


def test_key_file_signs_and_checks(table, tmp_path, capsys):
    path, df, feats = table
    key = tmp_path / "key.txt"
    key.write_text("shared secret\n")
    model = tmp_path / "signed.npz"
    assert main(["harmonize", "fit", str(path), "--site-col", "site", "--covariates", "age,sex",
                 "--model", str(model), "--key-file", str(key)]) == 0
    assert ComBat.load(model, key=b"shared secret").get_params() == ComBat().get_params()
    out = tmp_path / "out.csv"
    assert main(["harmonize", "apply", str(path), "--model", str(model), "--out", str(out),
                 "--key-file", str(key)]) == 0
    np.testing.assert_allclose(read_table(out)[feats].to_numpy(), expected(df, feats).to_numpy(),
                               rtol=1e-12)
    capsys.readouterr()
    assert main(["harmonize", "apply", str(path), "--model", str(model), "--out",
                 str(tmp_path / "o2.csv")]) == 2
    assert "is signed" in capsys.readouterr().err
