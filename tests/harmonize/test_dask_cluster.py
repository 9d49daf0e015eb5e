"""The dask engine on a distributed LocalCluster (2 workers, 1 thread each).

One cluster for the whole module (starting one costs seconds); small data.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from scale_data import assert_close, make_cohort

from sitekit.harmonize import _dask
from sitekit.harmonize._combat import ComBat

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        memory_limit="1GB",
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def parquet_table(tmp_path_factory):
    X, sites, cov = make_cohort(n_per_site=(60, 45, 70, 50), n_features=15, nan_fraction=0.03, seed=21)
    table = pd.concat([cov.assign(site=sites), X], axis=1)
    path = tmp_path_factory.mktemp("scale") / "table"
    path.mkdir()
    # > 10 partitions, so that output part names must sort in row order
    for k, start in enumerate(range(0, len(table), 20)):
        table.iloc[start : start + 20].to_parquet(path / f"part-{k:03d}.parquet")
    return path, table, list(X.columns)


@pytest.mark.parametrize("params", [{}, {"parametric": False, "ref_site": "B"}])
def test_parquet_on_local_cluster_equals_in_memory(client, parquet_table, params):
    path, table, feats = parquet_table
    covs = table[["age", "sex"]]
    expected = ComBat(**params).fit_transform(
        table[feats], sites=table["site"].to_numpy(), covariates=covs
    )
    ddf = dd.read_parquet(path)
    assert ddf.npartitions > 1
    with distributed.get_task_stream(client) as ts:
        model = _dask.fit(ComBat(**params), ddf[feats], sites=ddf["site"], covariates=ddf[["age", "sex"]])
        out = _dask.transform_frame(
            model, ddf, site_col="site", covariate_cols=["age", "sex"], features=feats
        ).compute()
    workers = {t["worker"] for t in ts.data}
    assert len(workers) == 2, "both workers took part"
    assert list(out.columns) == list(table.columns)
    assert out["site"].tolist() == table["site"].tolist()  # rows in input order
    assert_close(out[feats].to_numpy(), expected.to_numpy(), rel=1e-10)
    np.testing.assert_allclose(model.delta_star_, ComBat(**params).fit(
        table[feats], sites=table["site"].to_numpy(), covariates=covs).delta_star_, rtol=1e-9)


def test_cli_run_and_apply_on_a_scheduler(client, parquet_table, tmp_path):
    """`harmonize run/apply --scheduler ADDRESS` on a Parquet directory equals the in-memory CLI."""
    from sitekit.cli import main

    path, table, feats = parquet_table
    addr = client.scheduler.address
    csv = tmp_path / "table.csv"
    table.to_csv(csv, index=False)
    common = ["--site-col", "site", "--covariates", "age,sex"]
    assert main(["harmonize", "run", str(csv), *common, "--out", str(tmp_path / "mem" / "harmonized.csv")]) == 0
    assert main(["harmonize", "run", str(path), *common, "--scheduler", addr,
                 "--out", str(tmp_path / "dask" / "harmonized.parquet"),
                 "--model", str(tmp_path / "dask" / "model.npz")]) == 0
    expected = pd.read_csv(tmp_path / "mem" / "harmonized.csv")
    got = pd.read_parquet(tmp_path / "dask" / "harmonized.parquet")
    assert list(got.columns) == list(expected.columns)
    assert got["site"].tolist() == expected["site"].tolist()
    assert_close(got[feats].to_numpy(), expected[feats].to_numpy(), rel=1e-10)
    # apply with the saved model, on the cluster, to a Parquet directory
    assert main(["harmonize", "apply", str(path), "--model", str(tmp_path / "dask" / "model.npz"),
                 "--scheduler", addr, "--out", str(tmp_path / "applied.parquet")]) == 0
    applied = pd.read_parquet(tmp_path / "applied.parquet")
    assert_close(applied[feats].to_numpy(), expected[feats].to_numpy(), rel=1e-10)
    # refusals: an existing output, and methods the dask engine does not run
    assert main(["harmonize", "apply", str(path), "--model", str(tmp_path / "dask" / "model.npz"),
                 "--scheduler", addr, "--out", str(tmp_path / "applied.parquet")]) == 2
    assert main(["harmonize", "fit", str(path), *common, "--method", "covbat", "--scheduler", addr,
                 "--model", str(tmp_path / "cov.npz")]) == 2


def test_cli_fit_with_local_workers(parquet_table, tmp_path, capsys):
    """`--workers N` starts (and stops) its own LocalCluster; the model equals the in-memory fit."""
    from sitekit.cli import main

    path, table, feats = parquet_table
    assert main(["harmonize", "fit", str(path), "--site-col", "site", "--covariates", "age,sex",
                 "--workers", "1", "--model", str(tmp_path / "m.npz")]) == 0
    assert "dask: 1 workers" in capsys.readouterr().err
    model = ComBat.load(tmp_path / "m.npz")
    ref = ComBat().fit(table[feats], sites=table["site"].to_numpy(), covariates=table[["age", "sex"]])
    np.testing.assert_allclose(model.gamma_star_, ref.gamma_star_, rtol=1e-9, atol=1e-12)
    assert main(["harmonize", "fit", str(path), "--site-col", "site", "--workers", "1",
                 "--scheduler", "tcp://127.0.0.1:1", "--model", str(tmp_path / "x.npz")]) == 2


@pytest.mark.parametrize("route", ["arrow", "fused"])
def test_fit_reads_each_partition_once_in_the_task_that_reduces_it(client, tmp_path, route):
    """On a complete Parquet table (sites and covariates as its columns) no partition is
    stored on a worker between two tasks (or spilled).  A plain read_parquet of local
    files: each statistics task reads its file with pyarrow itself (no pandas conversion).
    Anything else (here a filter): dask fuses its read into the statistics task.  Both
    equal the in-memory fit."""
    X, sites, cov = make_cohort(n_per_site=(60, 45, 70, 50), n_features=15, nan_fraction=0.0, seed=22)
    table = pd.concat([cov.assign(site=sites), X], axis=1)
    n_files = 0
    for k, start in enumerate(range(0, len(table), 45)):
        table.iloc[start : start + 45].to_parquet(tmp_path / f"part-{k:03d}.parquet")
        n_files += 1
    filters = None if route == "arrow" else [("age", ">", -1e9)]  # keeps every row
    ddf = dd.read_parquet(tmp_path, filters=filters)
    feats = list(X.columns)
    with distributed.get_task_stream(client) as ts:
        model = _dask.fit(ComBat(), ddf[feats], sites=ddf["site"], covariates=ddf[["age", "sex"]])
    names = [str(t["key"][0] if isinstance(t["key"], tuple) else t["key"]) for t in ts.data]
    arrow = [n for n in names if "_arrow_comoments" in n]
    fused = [n for n in names if "_carry_comoments" in n]
    if route == "arrow":
        assert len(arrow) == n_files and not fused
    else:
        assert len(fused) == ddf.npartitions and not arrow
        assert all("read_parquet" in n for n in fused), fused  # the read is fused into the task
    ref = ComBat().fit(table[feats], sites=table["site"].to_numpy(), covariates=cov)
    for name in ("beta_", "var_pooled_", "gamma_star_", "delta_star_"):
        np.testing.assert_allclose(getattr(model, name), getattr(ref, name), rtol=1e-10, atol=1e-12)
