"""NestedComBat / OPNested: several batch variables harmonised in sequence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ext_data import make_crossed_batches
from scipy import sparse, stats

from sitekit.exceptions import ModelFileError, UnknownSiteError, ValidationError
from sitekit.harmonize import ComBat, NestedComBat
from sitekit.harmonize._nested import batch_effect_test


def _n_significant(X, batches, alpha=0.05):
    """Independent check: scipy's kruskal per feature, BH FDR within each batch variable."""
    out = {}
    X = np.asarray(X)
    for col in batches.columns:
        labels = batches[col].to_numpy()
        p = np.array([
            stats.kruskal(*[X[labels == lv, g] for lv in np.unique(labels)]).pvalue
            for g in range(X.shape[1])
        ])
        out[col] = int((stats.false_discovery_control(p) < alpha).sum())
    return out


@pytest.fixture
def crossed_batches():
    return make_crossed_batches()


def test_nested_removes_both_crossed_batch_effects(crossed_batches):
    # Must-show: with two crossed batch variables no feature keeps a significant effect
    # of either (Kruskal-Wallis, BH FDR 0.05).  Measured (seed 0, 240 x 15):
    # before: vendor 15/15, recon 9/15 features significant; after: 0 and 0 (ComBat over
    # vendor alone leaves recon at 10/15).
    X, batches, cov = crossed_batches
    before = _n_significant(X, batches)
    assert before["vendor"] >= 12 and before["recon"] >= 8
    model = NestedComBat(batch_cols=["vendor", "recon"])
    Y = model.fit_transform(X, batches=batches, covariates=cov)
    assert _n_significant(Y, batches) == {"vendor": 0, "recon": 0}
    assert set(model.order_) == {"vendor", "recon"}
    assert len(model.steps_) == 2 and all(isinstance(s, ComBat) for s in model.steps_)
    scores = model.order_scores_
    assert len(scores) == 2 and scores["chosen"].sum() == 1
    chosen = scores[scores["chosen"]].iloc[0]
    assert chosen["order"] == ",".join(model.order_)
    assert (scores["n_significant"] >= chosen["n_significant"]).all()
    # the age effect is protected
    age = cov["age"].to_numpy()
    np.testing.assert_allclose(np.polyfit(age, Y.mean(axis=1), 1)[0], 0.02, atol=0.01)


def test_single_combat_leaves_the_other_variable(crossed_batches):
    X, batches, cov = crossed_batches
    Y = ComBat().fit_transform(X, sites=batches["vendor"], covariates=cov)
    assert _n_significant(Y, batches)["recon"] > 0


def test_batch_effect_test_matches_scipy(crossed_batches):
    X, batches, _ = crossed_batches
    X = X.copy()
    X.iloc[5, 3] = np.nan
    X["f07"] = np.round(X["f07"])  # ties
    res = batch_effect_test(X, batches)
    assert list(res.columns) == ["batch_col", "feature", "statistic", "p_value", "q_value", "significant"]
    for col in batches.columns:
        labels = batches[col].to_numpy()
        for g in (0, 3, 7):
            x = X.iloc[:, g].to_numpy()
            ok = np.isfinite(x)
            ref = stats.kruskal(*[x[ok & (labels == lv)] for lv in np.unique(labels)])
            row = res[(res.batch_col == col) & (res.feature == X.columns[g])].iloc[0]
            np.testing.assert_allclose(row["statistic"], ref.statistic, rtol=1e-10)
            np.testing.assert_allclose(row["p_value"], ref.pvalue, rtol=1e-8)


@pytest.mark.parametrize("order", ["exhaustive", "greedy", "given", ["recon", "vendor"]])
def test_order_strategies(crossed_batches, order):
    X, batches, cov = crossed_batches
    model = NestedComBat(batch_cols=["vendor", "recon"], order=order).fit(
        X, batches=batches, covariates=cov
    )
    if order == "given":
        assert model.order_ == ["vendor", "recon"]
        assert len(model.order_scores_) == 1
    elif isinstance(order, list):
        assert model.order_ == order
    elif order == "exhaustive":
        assert len(model.order_scores_) == 2
        best = model.order_scores_.sort_values(["n_significant", "sum_statistic"]).iloc[0]
        assert best["chosen"] and best["order"] == ",".join(model.order_)
    else:  # greedy (regression, issue 14 item 10: this case asserted nothing)
        assert len(model.order_scores_) == 1  # only its final order is evaluated
        assert sorted(model.order_) == ["recon", "vendor"]
        # its first step is the variable whose harmonisation alone leaves the least effect
        scores = {}
        for col in ("vendor", "recon"):
            out = NestedComBat(batch_cols=[col]).fit_transform(X, batches=batches, covariates=cov)
            scores[col] = NestedComBat._score(batch_effect_test(out, batches))
        assert model.order_[0] == min(scores, key=scores.get)


def test_greedy_for_many_batch_variables():
    rng = np.random.default_rng(3)
    n, p = 200, 8
    batches = pd.DataFrame({c: rng.choice(["a", "b"], n) for c in ["u", "v", "w", "x", "y"]})
    X = rng.normal(size=(n, p))
    for c in batches:
        X += (batches[c].to_numpy() == "a")[:, None] * rng.normal(0, 0.7, p)
    model = NestedComBat(batch_cols=list(batches.columns)).fit(X, batches=batches)
    assert sorted(model.order_) == sorted(batches.columns)
    assert len(model.order_scores_) == 1  # greedy evaluates only its final order
    assert model.batch_effects_["significant"].sum() == 0


def test_transform_new_samples_and_unknown_level(crossed_batches):
    X, batches, cov = crossed_batches
    model = NestedComBat(batch_cols=["vendor", "recon"]).fit(X.iloc[:200], batches=batches.iloc[:200],
                                                             covariates=cov.iloc[:200])
    full = model.transform(X, batches=batches, covariates=cov)
    again = model.transform(X.iloc[200:], batches=batches.iloc[200:], covariates=cov.iloc[200:])
    np.testing.assert_allclose(again.to_numpy(), full.iloc[200:].to_numpy(), atol=1e-10)
    bad = batches.iloc[:3].copy()
    bad["vendor"] = "Canon"
    with pytest.raises(UnknownSiteError):
        model.transform(X.iloc[:3], batches=bad, covariates=cov.iloc[:3])


def test_validation_messages(crossed_batches):
    X, batches, _ = crossed_batches
    with pytest.raises(ValidationError, match="not found in 'batches'"):
        NestedComBat(batch_cols=["vendor", "scanner"]).fit(X, batches=batches)
    with pytest.raises(ValidationError, match="Did you mean 'greedy'"):
        NestedComBat(batch_cols=["vendor"], order="greedi").fit(X, batches=batches)
    with pytest.raises(ValidationError, match="permutation"):
        NestedComBat(batch_cols=["vendor", "recon"], order=["vendor"]).fit(X, batches=batches)
    with pytest.raises(ValidationError, match="at least one"):
        NestedComBat(batch_cols=[]).fit(X, batches=batches)
    holes = batches.copy()
    holes.loc[4, "recon"] = None
    with pytest.raises(ValidationError, match="missing values"):
        NestedComBat(batch_cols=["vendor", "recon"]).fit(X, batches=holes)
    with pytest.raises(ValidationError, match="rows"):
        NestedComBat(batch_cols=["vendor"]).fit(X, batches=batches.iloc[:10])


def test_nan_cells_pass_through(crossed_batches):
    X, batches, cov = crossed_batches
    X = X.copy()
    X.iloc[[1, 50, 51], [0, 4, 4]] = np.nan
    Y = NestedComBat(batch_cols=["vendor", "recon"]).fit_transform(X, batches=batches, covariates=cov)
    assert np.array_equal(np.isnan(Y.to_numpy()), np.isnan(X.to_numpy()))


def test_save_load_roundtrip_numpy_input(tmp_path):
    X, batches, cov = make_crossed_batches(seed=1, n=120, p=6)
    Xa = X.to_numpy()
    model = NestedComBat(batch_cols=["vendor", "recon"]).fit(Xa, batches=batches, covariates=cov)
    out = model.transform(Xa, batches=batches, covariates=cov)
    assert isinstance(out, np.ndarray)
    path = model.save(tmp_path / "nested.npz")
    loaded = NestedComBat.load(path)
    assert loaded.order_ == model.order_
    assert loaded.get_params() == model.get_params()
    np.testing.assert_allclose(loaded.transform(Xa, batches=batches, covariates=cov), out, atol=0)
    pd.testing.assert_frame_equal(loaded.order_scores_, model.order_scores_, check_dtype=False)
    with pytest.raises(ModelFileError):
        ComBat.load(path)  # not a ComBat file
    from sklearn.base import clone

    assert clone(model).get_params() == model.get_params()


def test_adapt_new_level_of_one_batch_variable(crossed_batches):
    X, batches, cov = crossed_batches
    train = (batches["vendor"] != "Siemens").to_numpy()
    model = NestedComBat(batch_cols=["vendor", "recon"]).fit(
        X[train], batches=batches[train], covariates=cov[train]
    )
    with pytest.raises(UnknownSiteError):
        model.transform(X, batches=batches, covariates=cov)
    adapted = model.adapt(X[~train], batches=batches[~train], covariates=cov[~train])
    assert "Siemens" in adapted.levels_["vendor"] and "Siemens" not in model.levels_["vendor"]
    out = adapted.transform(X, batches=batches, covariates=cov)
    assert _n_significant(out, batches)["vendor"] == 0
    with pytest.raises(ValidationError, match="already known"):
        adapted.adapt(X[~train], batches=batches[~train], covariates=cov[~train])


def test_ref_site_per_batch_variable(crossed_batches):
    """NestedComBat accepts ref_site (issue 13): one reference level per batch variable."""
    X, batches, cov = crossed_batches
    ref = {"vendor": "GE", "recon": "OSEM"}
    model = NestedComBat(batch_cols=["vendor", "recon"], ref_site=ref)
    out = model.fit_transform(X, batches=batches, covariates=cov)
    for col, step in zip(model.order_, model.steps_):
        assert step.ref_site == ref[col]
    both = ((batches["vendor"] == "GE") & (batches["recon"] == "OSEM")).to_numpy()
    np.testing.assert_allclose(out[both].to_numpy(), X[both].to_numpy(), rtol=0, atol=1e-9)
    assert not np.allclose(out[~both].to_numpy(), X[~both].to_numpy())
    partial = NestedComBat(batch_cols=["vendor", "recon"], order="given", ref_site={"recon": "OSEM"})
    partial.fit(X, batches=batches, covariates=cov)
    assert [s.ref_site for s in partial.steps_] == [None, "OSEM"]


@pytest.mark.parametrize("bad,match", [
    ("GE", "must be None or a dict"),
    ({"scanner": "GE"}, "not batch columns"),
])
def test_ref_site_bad(crossed_batches, bad, match):
    X, batches, _ = crossed_batches
    with pytest.raises(ValidationError, match=match):
        NestedComBat(batch_cols=["vendor", "recon"], ref_site=bad).fit(X, batches=batches)


def test_ref_site_unknown_level(crossed_batches):
    X, batches, _ = crossed_batches
    with pytest.raises(UnknownSiteError, match="ref_site"):
        NestedComBat(batch_cols=["vendor", "recon"], order="given",
                     ref_site={"vendor": "Canon"}).fit(X, batches=batches)


def test_sparse_and_1d_input_refused_the_sklearn_way(crossed_batches):
    """Regression: sparse X gave 'X must be 2-dimensional'; 1-D X must say how to reshape."""
    X, batches, _ = crossed_batches
    with pytest.raises(TypeError, match="dense data is required"):
        NestedComBat(batch_cols=["vendor", "recon"]).fit(sparse.csr_matrix(X.to_numpy()), batches=batches)
    with pytest.raises(ValidationError, match="Reshape your data"):
        NestedComBat(batch_cols=["vendor", "recon"]).fit(X.to_numpy()[:, 0], batches=batches)


def test_target_site_per_batch_variable(crossed_batches):
    X, batches, cov = crossed_batches
    model = NestedComBat(batch_cols=["vendor", "recon"], order="given",
                         target_site={"vendor": "Siemens"})
    out = model.fit_transform(X, batches=batches, covariates=cov)
    assert [s.target_site for s in model.steps_] == ["Siemens", None]
    # the vendor step alone equals ComBat with that target site
    first = ComBat(target_site="Siemens").fit_transform(
        X, sites=batches["vendor"].to_numpy(), covariates=cov)
    second = ComBat().fit_transform(first, sites=batches["recon"].to_numpy(), covariates=cov)
    np.testing.assert_allclose(out.to_numpy(), second.to_numpy(), rtol=0, atol=1e-10)
    with pytest.raises(ValidationError, match="both a 'ref_site' and a 'target_site'"):
        NestedComBat(batch_cols=["vendor", "recon"], ref_site={"vendor": "GE"},
                     target_site={"vendor": "GE"}).fit(X, batches=batches)


def test_unseen_sites_adapt_equals_adapt(crossed_batches):
    X, batches, cov = crossed_batches
    train = (batches["vendor"] != "Philips").to_numpy()
    model = NestedComBat(batch_cols=["vendor", "recon"], unseen_sites="adapt").fit(
        X[train], batches=batches[train], covariates=cov[train])
    out = model.transform(X, batches=batches, covariates=cov)
    explicit = model.adapt(X[~train], batches=batches[~train], covariates=cov[~train]).transform(
        X, batches=batches, covariates=cov)
    pd.testing.assert_frame_equal(out, explicit)
    assert model.levels_["vendor"] == ["GE", "Siemens"]  # transform leaves the model as it was
    strict = NestedComBat(batch_cols=["vendor", "recon"]).fit(
        X[train], batches=batches[train], covariates=cov[train])
    with pytest.raises(UnknownSiteError):
        strict.transform(X, batches=batches, covariates=cov)
    with pytest.raises(ValidationError, match="unseen_sites"):
        NestedComBat(batch_cols=["vendor"], unseen_sites="skip").fit(X, batches=batches)
