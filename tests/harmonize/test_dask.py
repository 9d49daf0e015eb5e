"""The dask engine equals in-memory ComBat (default scheduler; cluster tests are separate)."""

from __future__ import annotations

import warnings

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from scale_data import assert_close, make_cohort

from sitekit.exceptions import DataWarning, ValidationError
from sitekit.harmonize import _dask
from sitekit.harmonize._combat import ComBat

REL = 1e-10  # tolerance in feature SDs (the "1e-10 relative")

OPTIONS = [
    {},
    {"parametric": False},
    {"ref_site": "B"},
    {"mean_only": True},
    {"eb": False},
]


@pytest.mark.parametrize("params", OPTIONS, ids=lambda p: ",".join(p) or "default")
def test_dataframe_equals_in_memory(cohort, params):
    X, sites, cov = cohort
    expected = ComBat(**params).fit_transform(X, sites=sites, covariates=cov)
    ddf = dd.from_pandas(X, npartitions=5)
    model = _dask.fit(ComBat(**params), ddf, sites=sites, covariates=cov)
    out = _dask.transform(model, ddf, sites=sites, covariates=cov)
    assert isinstance(out, dd.DataFrame)
    got = out.compute()
    assert list(got.columns) == list(X.columns)
    assert got.index.equals(X.index)
    assert_close(got, expected, rel=REL)
    # the fitted state itself agrees, not only the output
    ref = ComBat(**params).fit(X, sites=sites, covariates=cov)
    np.testing.assert_allclose(model.gamma_star_, ref.gamma_star_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.delta_star_, ref.delta_star_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.beta_, ref.beta_, rtol=1e-9, atol=1e-12)
    assert list(model.feature_names_in_) == list(X.columns)
    assert model.covariate_encoding_ == ref.covariate_encoding_


def test_array_with_column_chunks_equals_in_memory():
    X, sites, cov = make_cohort(n_features=9, nan_fraction=0.05, seed=3)
    expected = ComBat(parametric=False).fit_transform(X.to_numpy(), sites=sites, covariates=cov)
    arr = da.from_array(X.to_numpy(), chunks=(37, 4))  # uneven rows, several column chunks
    model = _dask.fit(ComBat(parametric=False), arr, sites=sites, covariates=cov)
    out = _dask.transform(model, arr, sites=sites, covariates=cov)
    assert isinstance(out, da.Array) and out.shape == arr.shape
    assert_close(out.compute(), expected, rel=REL)
    assert not hasattr(model, "feature_names_in_")


def test_dask_sites_and_covariates_from_the_same_frame():
    X, sites, cov = make_cohort(seed=5)
    table = pd.concat([X, cov.assign(site=sites)], axis=1)
    ddf = dd.from_pandas(table, npartitions=4)
    feats = list(X.columns)
    expected = ComBat().fit_transform(X, sites=sites, covariates=cov)
    model = _dask.fit(ComBat(), ddf[feats], sites=ddf["site"], covariates=ddf[["age", "sex"]])
    got = _dask.transform(model, ddf[feats], sites=ddf["site"], covariates=ddf[["age", "sex"]])
    # the labels travel with the rows: one task per partition reads and harmonises it
    assert got.npartitions == ddf.npartitions and got.divisions == ddf.divisions
    assert all("_transform_carried" in str(k) for k in got.__dask_keys__())
    assert_close(got.compute(), expected, rel=REL)
    assert (got.compute().index == X.index).all()
    # pass-through columns kept, in order
    full = _dask.transform_frame(
        model, ddf, site_col="site", covariate_cols=["age", "sex"], features=feats
    ).compute()
    assert list(full.columns) == list(table.columns)
    assert_close(full[feats], expected, rel=REL)
    assert full["sex"].tolist() == cov["sex"].tolist()


def test_transform_is_lazy_and_blockwise(cohort):
    X, sites, cov = cohort
    ddf = dd.from_pandas(X, npartitions=6)
    model = ComBat().fit(X, sites=sites, covariates=cov)
    out = _dask.transform(model, ddf, sites=sites, covariates=cov)
    assert out.npartitions == ddf.npartitions
    assert out.divisions == ddf.divisions
    # one task per partition harmonises that partition alone
    parts = out.to_delayed()
    first = parts[0].compute()
    assert len(first) == len(ddf.partitions[0].compute())


def test_edge_cases_match_in_memory_with_same_warnings():
    X, sites, cov = make_cohort(seed=7)
    X["const"] = 4.0
    X.loc[sites == "C", "feat_1"] = 2.5  # constant within one site
    X.loc[sites == "A", "feat_2"] = np.nan  # never observed at one site
    with warnings.catch_warnings(record=True) as w_mem:
        warnings.simplefilter("always")
        expected = ComBat().fit_transform(X, sites=sites, covariates=cov)
    with warnings.catch_warnings(record=True) as w_dask:
        warnings.simplefilter("always")
        model = _dask.fit(ComBat(), dd.from_pandas(X, npartitions=3), sites=sites, covariates=cov)
    got = model.transform(X, sites=sites, covariates=cov)
    assert_close(got, expected, rel=REL)
    msgs = sorted(str(w.message) for w in w_mem if issubclass(w.category, DataWarning))
    assert msgs and msgs == sorted(
        str(w.message) for w in w_dask if issubclass(w.category, DataWarning)
    )
    np.testing.assert_array_equal(got["const"], X["const"])


def test_saved_model_of_dask_fit_round_trips(tmp_path, cohort):
    X, sites, cov = cohort
    model = _dask.fit(ComBat(), dd.from_pandas(X, npartitions=2), sites=sites, covariates=cov)
    model.save(tmp_path / "m.npz")
    loaded = ComBat.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(
        loaded.transform(X, sites=sites, covariates=cov),
        model.transform(X, sites=sites, covariates=cov),
    )


def test_errors_are_named():
    X, sites, cov = make_cohort(seed=2)
    with pytest.raises(ValidationError, match="one site"):
        _dask.fit(ComBat(), dd.from_pandas(X, npartitions=2), sites=np.repeat("A", len(X)))
    bad = X.copy()
    bad.iloc[3, 2] = np.inf
    with pytest.raises(ValidationError, match="infinite"):
        _dask.fit(ComBat(), dd.from_pandas(bad, npartitions=2), sites=sites)
    with pytest.raises(ValidationError, match="not numeric"):
        _dask.fit(ComBat(), dd.from_pandas(X.assign(s=sites), npartitions=2), sites=sites)
    with pytest.raises(ValidationError, match="labels but X has"):
        _dask.fit(ComBat(), dd.from_pandas(X, npartitions=2), sites=sites[:-1])


def test_combat_dispatches_dask_input(cohort):
    """ComBat.fit/transform/fit_transform take dask collections directly."""
    X, sites, cov = cohort
    ddf = dd.from_pandas(X, npartitions=3)
    expected = ComBat().fit_transform(X, sites=sites, covariates=cov)
    out = ComBat().fit_transform(ddf, sites=sites, covariates=cov)
    assert isinstance(out, dd.DataFrame)
    assert_close(out.compute(), expected, rel=REL)
    arr = da.from_array(X.to_numpy(), chunks=(50, -1))
    model = ComBat().fit(arr, sites=sites, covariates=cov)
    assert isinstance(model.transform(arr, sites=sites, covariates=cov), da.Array)


def test_spline_covariates_and_target_site_through_dask(cohort):
    """Extensions of ComBat built on the same design hooks work unchanged on dask input."""
    X, sites, cov = cohort
    params = {"smooth": ["age"], "target_site": "A"}
    expected = ComBat(**params).fit_transform(X, sites=sites, covariates=cov)
    got = ComBat(**params).fit_transform(dd.from_pandas(X, npartitions=4), sites=sites, covariates=cov)
    assert_close(got.compute(), expected, rel=REL)


def _direct_comoments(Y, Dc, codes, K):
    """The per-site statistics of block_comoments, computed the plain way (no scaling)."""
    Y = np.asarray(Y, dtype=np.float64)
    out = {"n": [], "ymean": [], "cyy": [], "cdy": [], "dmean": [], "ymin": [], "ymax": []}
    for i in range(K):
        y, d = Y[codes == i], Dc[codes == i]
        out["n"].append(len(y))
        out["ymean"].append(y.mean(axis=0))
        out["cyy"].append(((y - y.mean(axis=0)) ** 2).sum(axis=0))
        out["cdy"].append((d - d.mean(axis=0)).T @ (y - y.mean(axis=0)))
        out["dmean"].append(d.mean(axis=0))
        out["ymin"].append(y.min(axis=0))
        out["ymax"].append(y.max(axis=0))
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sorted_sites", [False, True])
def test_block_comoments_by_feature_groups_equal_direct_sums(monkeypatch, order, dtype, sorted_sites):
    """The cache-blocked statistics pass equals plain per-site sums, whatever the memory
    order, dtype, site order or group width (forced small here: 7 groups, the last short)."""
    from sitekit.harmonize import _eb

    rng = np.random.default_rng(3)
    n, F, K = 240, 40, 4
    codes = rng.integers(0, K, n)
    if sorted_sites:
        codes = np.sort(codes)
    Y = np.asarray(rng.normal(50, 2, (n, F)) + codes[:, None] * 3.0, dtype=dtype, order=order)
    Y[:, 5] = 7.0  # constant everywhere
    Y[codes == 1, 9] = -2.5  # constant at one site
    Dc = np.c_[rng.normal(40, 10, n), rng.integers(0, 2, n)]
    monkeypatch.setattr(_eb, "_GROUP_ELEMENTS", n * 6)
    got = _eb.block_comoments(Y, Dc, codes, K)
    ref = _direct_comoments(Y, Dc, codes, K)
    np.testing.assert_array_equal(got.n, ref["n"])
    np.testing.assert_array_equal(got.ymin, ref["ymin"])  # exact: constant features rely on it
    np.testing.assert_array_equal(got.ymax, ref["ymax"])
    assert (got.ymin[1, 9] == got.ymax[1, 9]) and (got.ymin[:, 5] == got.ymax[:, 5]).all()
    np.testing.assert_allclose(got.ymean, ref["ymean"], rtol=1e-13)
    np.testing.assert_allclose(got.dmean, ref["dmean"], rtol=1e-13)
    np.testing.assert_allclose(got.cyy, ref["cyy"], rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(got.cdy, ref["cdy"], rtol=1e-11, atol=1e-8)
    assert (got.scale == 1.0).all()


def test_block_comoments_scales_extreme_features_and_flags_nan_and_inf():
    from sitekit.harmonize import _eb

    rng = np.random.default_rng(4)
    n, F, K = 90, 6, 3
    codes = rng.integers(0, K, n)
    Y = np.asfortranarray(rng.normal(0, 1, (n, F)))
    Y[:, 2] = Y[:, 2] * 1e300 + 1e301  # squares overflow float64 without the scaling
    got = _eb.block_comoments(Y, np.zeros((n, 0)), codes, K)
    assert np.isfinite(got.cyy).all() and got.scale[2] > 1e300 and got.scale[0] == 1.0
    ref = _direct_comoments(Y / got.scale, np.zeros((n, 0)), codes, K)
    np.testing.assert_allclose(got.cyy, ref["cyy"], rtol=1e-12)
    for bad in (np.nan, np.inf, -np.inf):
        Z = Y.copy()
        Z[17, 4] = bad
        assert _eb.block_comoments(Z, np.zeros((n, 0)), codes, K) is None


def _parquet_cohort(tmp_path, *, row_group_size=None):
    X, sites, cov = make_cohort(n_per_site=(60, 45, 70, 50), n_features=8, seed=31)
    X = X.assign(feat_0=X["feat_0"].astype(np.float32), counts=np.arange(len(X)) % 7 * 3)
    table = pd.concat([cov.assign(site=sites), X], axis=1)
    for k, start in enumerate(range(0, len(table), 90)):
        table.iloc[start : start + 90].to_parquet(tmp_path / f"part-{k:03d}.parquet",
                                                  row_group_size=row_group_size)
    return table, list(X.columns), cov


@pytest.mark.parametrize("split", [False, True])
def test_parquet_files_read_with_pyarrow_equal_in_memory(tmp_path, split):
    """A plain read_parquet: the fit reads the files (or their row groups) itself; float32
    and integer feature columns, string sites and a categorical covariate as in memory."""
    table, feats, cov = _parquet_cohort(tmp_path, row_group_size=25)
    ddf = dd.read_parquet(tmp_path, split_row_groups=split)
    pieces = _dask._local_parquet_pieces(ddf[feats], ddf["site"], ddf[["age", "sex"]])
    assert pieces is not None
    assert len(pieces[0]) == (10 if split else 3)  # every row group (4 + 4 + 2), or every file, once
    assert pieces[1:] == (feats, "site", ["age", "sex"])
    model = _dask.fit(ComBat(), ddf[feats], sites=ddf["site"], covariates=ddf[["age", "sex"]])
    ref = ComBat().fit(table[feats], sites=table["site"].to_numpy(), covariates=cov)
    for name in ("beta_", "var_pooled_", "gamma_star_", "delta_star_"):
        np.testing.assert_allclose(getattr(model, name), getattr(ref, name), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_parquet_reads_that_dask_must_do_are_not_bypassed(tmp_path):
    """Filters, a partition selection, hive keys, an index, or labels from another read:
    the fit reads through dask (and still equals in memory where the rows are the same)."""
    flat = tmp_path / "flat"
    flat.mkdir()
    table, feats, cov = _parquet_cohort(flat)
    pieces = _dask._local_parquet_pieces
    filtered = dd.read_parquet(flat, filters=[("age", ">", -1e9)])
    assert pieces(filtered[feats], filtered["site"], None) is None
    some = dd.read_parquet(flat).partitions[:2]
    assert pieces(some[feats], some["site"], None) is None
    indexed = dd.read_parquet(flat, index="age")
    assert pieces(indexed[feats], indexed["site"], None) is None
    labels = dd.read_parquet(flat, columns=["site"])["site"]
    assert pieces(dd.read_parquet(flat)[feats], labels, None) is None
    hive = tmp_path / "hive"
    table.to_parquet(hive, partition_cols=["site"])
    by_site = dd.read_parquet(hive)
    assert pieces(by_site[feats], by_site["site"], None) is None
    model = _dask.fit(ComBat(), by_site[feats], sites=by_site["site"], covariates=by_site[["age", "sex"]])
    ref = ComBat().fit(table[feats], sites=table["site"].to_numpy(), covariates=cov)
    np.testing.assert_allclose(model.gamma_star_, ref.gamma_star_, rtol=1e-9, atol=1e-12)
    model = _dask.fit(ComBat(), filtered[feats], sites=filtered["site"], covariates=filtered[["age", "sex"]])
    np.testing.assert_allclose(model.gamma_star_, ref.gamma_star_, rtol=1e-10, atol=1e-12)


def test_parquet_with_inf_or_nan_cells(tmp_path):
    table, feats, cov = _parquet_cohort(tmp_path)
    bad = table.copy()
    bad.loc[100, "feat_3"] = np.inf
    (tmp_path / "inf").mkdir()
    bad.to_parquet(tmp_path / "inf" / "part-000.parquet")
    ddf = dd.read_parquet(tmp_path / "inf")
    with pytest.raises(ValidationError, match="infinite"):
        _dask.fit(ComBat(), ddf[feats], sites=ddf["site"], covariates=ddf[["age"]])
    holes = table.copy()
    holes.loc[[5, 100, 200], "feat_3"] = np.nan
    holes["counts"] = holes["counts"].astype("Int64")  # an integer column with a null
    holes.loc[7, "counts"] = pd.NA
    (tmp_path / "nan").mkdir()
    for k, start in enumerate(range(0, len(holes), 90)):
        holes.iloc[start : start + 90].to_parquet(tmp_path / "nan" / f"part-{k:03d}.parquet")
    ddf = dd.read_parquet(tmp_path / "nan")
    model = _dask.fit(ComBat(), ddf[feats], sites=ddf["site"], covariates=ddf[["age", "sex"]])
    assert _dask._local_parquet_pieces(ddf[feats], ddf["site"], ddf[["age", "sex"]]) is not None
    ref = ComBat().fit(holes[feats].astype(float), sites=holes["site"].to_numpy(), covariates=cov)
    np.testing.assert_allclose(model.gamma_star_, ref.gamma_star_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.var_pooled_, ref.var_pooled_, rtol=1e-10)
