"""CLI flags of the ComBat extensions: --method, --smooth, --target-site, --batch-cols, --adapt."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from ext_data import make_crossed_batches

from sitekit.cli import main
from sitekit.datasets import make_feature_table
from sitekit.harmonize import ComBat, CovBat, NestedComBat


def _table(tmp_path, n_per_site=(40, 50, 45, 30)):
    df = make_feature_table(n_per_site=n_per_site, n_features=6, random_state=0)
    path = tmp_path / "features.csv"
    df.to_csv(path, index=False)
    return df, path


def test_fit_smooth_target_and_apply(tmp_path):
    df, path = _table(tmp_path)
    model = tmp_path / "m.npz"
    rc = main(["harmonize", "fit", str(path), "--site-col", "site", "--covariates", "sex",
               "--smooth", "age:6", "--target-site", "site_B", "--exclude", "outcome",
               "--model", str(model)])
    assert rc == 0
    m = ComBat.load(model)
    assert m.smooth == {"age": 6} and m.target_site == "site_B"
    assert "age" in m.smooth_
    out = tmp_path / "h.csv"
    assert main(["harmonize", "apply", str(path), "--model", str(model), "--out", str(out)]) == 0
    got = pd.read_csv(out)
    feats = list(m.feature_names_in_)
    expect = m.transform(df[feats], sites=df["site"], covariates=df[["sex", "age"]])
    np.testing.assert_allclose(got[feats].to_numpy(), expect.to_numpy(), rtol=1e-10)
    assert list(got.columns) == list(df.columns)


def test_run_covbat(tmp_path):
    df, path = _table(tmp_path)
    out = tmp_path / "run"
    rc = main(["harmonize", "run", str(path), "--site-col", "site", "--covariates", "age,sex",
               "--exclude", "outcome", "--method", "covbat", "--n-components", "3",
               "--out", str(out / "harmonized.csv"), "--model", str(out / "model.npz"),
               "--diagnostics", str(out / "diagnostics.json")])
    assert rc == 0
    model = CovBat.load(out / "model.npz")
    assert model.n_components_ == 3
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["method"] == "covbat" and diag["n_components"] == 3
    got = pd.read_csv(out / "harmonized.csv")
    feats = list(model.feature_names_in_)
    np.testing.assert_allclose(
        got[feats].to_numpy(),
        model.transform(df[feats], sites=df["site"], covariates=df[["age", "sex"]]).to_numpy(),
        rtol=1e-10,
    )


def test_run_nested_and_apply(tmp_path):
    X, batches, cov = make_crossed_batches(n=150, p=5)
    df = pd.concat([batches, cov, X], axis=1)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "run"
    rc = main(["harmonize", "run", str(path), "--method", "nested", "--batch-cols", "vendor,recon",
               "--covariates", "age", "--out", str(out / "harmonized.csv"), "--model",
               str(out / "model.npz"), "--diagnostics", str(out / "diagnostics.json")])
    assert rc == 0
    model = NestedComBat.load(out / "model.npz")
    assert sorted(model.order_) == ["recon", "vendor"]
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["method"] == "nested" and len(diag["steps"]) == 2
    out2 = tmp_path / "applied.csv"
    assert main(["harmonize", "apply", str(path), "--model", str(out / "model.npz"), "--out", str(out2)]) == 0
    a = pd.read_csv(out2)
    b = pd.read_csv(out / "harmonized.csv")
    np.testing.assert_allclose(a[X.columns].to_numpy(), b[X.columns].to_numpy(), rtol=1e-10)


def test_apply_adapt_new_site(tmp_path):
    df, path = _table(tmp_path)
    train, new = df[df["site"] != "site_D"], df[df["site"] == "site_D"]
    train_path, new_path = tmp_path / "train.csv", tmp_path / "new.csv"
    train.to_csv(train_path, index=False)
    new.to_csv(new_path, index=False)
    model = tmp_path / "m.npz"
    assert main(["harmonize", "fit", str(train_path), "--site-col", "site", "--covariates", "age,sex",
                 "--exclude", "outcome", "--model", str(model)]) == 0
    out = tmp_path / "h.csv"
    # without --adapt the unknown site is an input error (exit 2)
    assert main(["harmonize", "apply", str(new_path), "--model", str(model), "--out", str(out)]) == 2
    adapted = tmp_path / "adapted.npz"
    rc = main(["harmonize", "apply", str(new_path), "--model", str(model), "--adapt",
               "--model-out", str(adapted), "--out", str(out)])
    assert rc == 0
    m = ComBat.load(adapted)
    assert "site_D" in list(m.sites_)
    assert "site_D" not in list(ComBat.load(model).sites_)
    got = pd.read_csv(out)
    feats = list(m.feature_names_in_)
    expect = ComBat.load(model).adapt(new[feats], sites=new["site"], covariates=new[["age", "sex"]])
    np.testing.assert_allclose(
        got[feats].to_numpy(),
        expect.transform(new[feats], sites=new["site"], covariates=new[["age", "sex"]]).to_numpy(),
        rtol=1e-10,
    )
    # the adapted model applies without --adapt
    out3 = tmp_path / "h3.csv"
    assert main(["harmonize", "apply", str(new_path), "--model", str(adapted), "--out", str(out3)]) == 0


def test_flag_errors(tmp_path):
    _, path = _table(tmp_path)
    m = str(tmp_path / "m.npz")
    base = ["harmonize", "fit", str(path), "--exclude", "outcome", "--model", m]
    assert main(base + ["--method", "nested"]) == 2                      # needs --batch-cols
    assert main(base) == 2                                               # needs --site-col
    assert main(base + ["--site-col", "site", "--batch-cols", "a"]) == 2  # batch-cols w/o nested
    assert main(base + ["--site-col", "site", "--n-components", "3"]) == 2
    assert main(base + ["--site-col", "site", "--method", "covbat", "--target-site", "site_A"]) == 2
    assert main(base + ["--site-col", "site", "--smooth", "age:x", "--covariates", "age"]) == 2
    assert main(base + ["--site-col", "site", "--target-site", "site_Q"]) == 2
    out = str(tmp_path / "o.csv")
    assert main(["harmonize", "fit", str(path), "--site-col", "site", "--exclude", "outcome",
                 "--model", m]) == 0
    assert main(["harmonize", "apply", str(path), "--model", m, "--out", out,
                 "--model-out", str(tmp_path / "x.npz")]) == 2           # --model-out needs --adapt


def test_apply_adapt_covbat_model(tmp_path):
    df, path = _table(tmp_path)
    train, new = df[df["site"] != "site_D"], df[df["site"] == "site_D"]
    train_path, new_path = tmp_path / "train.csv", tmp_path / "new.csv"
    train.to_csv(train_path, index=False)
    new.to_csv(new_path, index=False)
    run = tmp_path / "run"
    assert main(["harmonize", "run", str(train_path), "--site-col", "site", "--covariates", "age,sex",
                 "--exclude", "outcome", "--method", "covbat", "--out", str(run / "harmonized.csv"),
                 "--model", str(run / "model.npz")]) == 0
    adapted = tmp_path / "adapted.npz"
    out = tmp_path / "h.csv"
    assert main(["harmonize", "apply", str(path), "--model", str(run / "model.npz"), "--adapt",
                 "--model-out", str(adapted), "--out", str(out)]) == 0
    m = CovBat.load(adapted)
    assert list(m.sites_) == ["site_A", "site_B", "site_C", "site_D"]
    assert pd.read_csv(out).shape == df.shape
