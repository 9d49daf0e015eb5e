"""Leave-one-site-out, site predictability and site effects (issue 7)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    balanced_accuracy_score,
    brier_score_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sitekit.datasets import make_feature_table
from sitekit.exceptions import DataWarning, ValidationError
from sitekit.harmonize import ComBat
from sitekit.robustness import (
    covariate_effects,
    leave_one_site_out,
    loso_predictions,
    site_effects,
    site_predictability,
)
from sitekit.robustness.sites import POOLED

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "features.csv"


@pytest.fixture(scope="module")
def cohort():
    df = make_feature_table(n_per_site=(50, 70, 40, 60), n_features=8, random_state=3)
    feats = [c for c in df.columns if c not in ("subject_id", "site", "age", "sex", "outcome")]
    return df, feats


def _model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.5))


# ----------------------------------------------------------------- LOSO vs a hand loop
def test_loso_equals_hand_written_leave_one_group_out(cohort):
    df, feats = cohort
    X, y, sites = df[feats], df["outcome"].to_numpy(), df["site"].to_numpy()
    res = leave_one_site_out(_model(), X, y, sites=sites, n_bootstrap=0, random_state=0)
    for train, test in LeaveOneGroupOut().split(X, y, groups=sites):
        site = sites[test][0]
        model = clone(_model()).fit(X.iloc[train], y[train])
        proba = model.predict_proba(X.iloc[test])[:, 1]
        pred = model.predict(X.iloc[test])
        got = res[res["site"] == site].set_index("metric")["value"]
        assert got["roc_auc"] == pytest.approx(roc_auc_score(y[test], proba), abs=1e-12)
        assert got["brier"] == pytest.approx(brier_score_loss(y[test], proba), abs=1e-12)
        assert got["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(y[test], pred), abs=1e-12)
        assert (res[res["site"] == site]["n"] == len(test)).all()


def test_loso_with_combat_equals_hand_loop_with_standardize_fallback(cohort):
    df, feats = cohort
    X, y, sites = df[feats], df["outcome"].to_numpy(), df["site"].to_numpy()
    cov = df[["age", "sex"]]
    preds = loso_predictions(_model(), X, y, sites=sites, harmonizer=ComBat(), covariates=cov,
                             unseen_sites="standardize")
    for train, test in LeaveOneGroupOut().split(X, y, groups=sites):
        h = ComBat().fit(X.iloc[train], sites=sites[train], covariates=cov.iloc[train])
        Xtr = h.transform(X.iloc[train], sites=sites[train], covariates=cov.iloc[train])
        Xte = X.iloc[test]
        # documented fallback: held-out site mapped onto the harmonised pool's mean / SD
        Xte = (Xte - Xte.mean()) / Xte.std(ddof=1) * Xtr.std(ddof=1) + Xtr.mean()
        model = clone(_model()).fit(Xtr, y[train])
        np.testing.assert_allclose(preds["y_score"].to_numpy()[test],
                                   model.predict_proba(Xte)[:, 1], rtol=0, atol=1e-12)


class RecordingComBat(ComBat):
    """The real ComBat, recording the index of every table it is fitted on."""

    fitted_on: list = []

    def fit(self, X, y=None, *, sites, covariates=None):
        RecordingComBat.fitted_on.append((set(X.index), set(np.asarray(sites))))
        return super().fit(X, y, sites=sites, covariates=covariates)


@pytest.mark.parametrize("unseen_sites", ["standardize", "auto"])
def test_test_fold_rows_never_reach_the_harmoniser_fit(cohort, unseen_sites):
    df, feats = cohort
    RecordingComBat.fitted_on = []
    sites = df["site"].to_numpy()
    leave_one_site_out(_model(), df[feats], df["outcome"], sites=sites,
                       harmonizer=RecordingComBat(), covariates=df[["age", "sex"]],
                       n_bootstrap=0, unseen_sites=unseen_sites)
    levels = list(pd.unique(sites))
    assert len(RecordingComBat.fitted_on) == len(levels)
    for (rows, fit_sites), held_out in zip(RecordingComBat.fitted_on, levels, strict=True):
        test_rows = set(df.index[sites == held_out])
        assert rows.isdisjoint(test_rows)
        assert rows == set(df.index) - test_rows
        assert held_out not in fit_sites


def test_loso_adapts_combat_to_the_held_out_site(cohort):
    df, feats = cohort
    res = leave_one_site_out(_model(), df[feats], df["outcome"], sites=df["site"],
                             harmonizer=ComBat(), covariates=df[["age", "sex"]],
                             n_bootstrap=0, unseen_sites="adapt")
    auc = res[(res["metric"] == "roc_auc") & (res["site"] == POOLED)]["value"].iloc[0]
    assert 0.6 < auc <= 1.0


def test_unseen_site_error_names_the_site(cohort):
    df, feats = cohort

    class NoAdapt(StandardScaler):
        def fit(self, X, y=None, *, sites=None, covariates=None):
            return super().fit(X)

        def transform(self, X, *, sites=None, covariates=None):
            return super().transform(X)

    with pytest.raises(ValidationError, match="held-out site 'site_A'"):
        leave_one_site_out(_model(), df[feats], df["outcome"], sites=df["site"],
                           harmonizer=NoAdapt(), unseen_sites="error", n_bootstrap=0)


def test_loso_table_layout_worst_site_and_bootstrap(cohort):
    df, feats = cohort
    res = leave_one_site_out(_model(), df[feats], df["outcome"], sites=df["site"],
                             n_bootstrap=30, random_state=1)
    assert list(res.columns) == ["site", "n", "metric", "value", "ci_low", "ci_high", "worst"]
    assert set(res["metric"]) == {"roc_auc", "balanced_accuracy", "brier", "calibration_slope",
                                  "calibration_intercept", "ece"}
    assert res["site"].iloc[-1] == POOLED
    auc = res[(res["metric"] == "roc_auc") & (res["site"] != POOLED)]
    assert auc.loc[auc["worst"], "value"].iloc[0] == auc["value"].min()
    assert res.attrs["worst_site"]["roc_auc"] == auc.loc[auc["value"].idxmin(), "site"]
    brier = res[(res["metric"] == "brier") & (res["site"] != POOLED)]
    assert brier.loc[brier["worst"], "value"].iloc[0] == brier["value"].max()
    finite = res.dropna(subset=["ci_low"])
    assert (finite["ci_low"] <= finite["ci_high"]).all()
    # same seed, same intervals
    again = leave_one_site_out(_model(), df[feats], df["outcome"], sites=df["site"],
                               n_bootstrap=30, random_state=1)
    pd.testing.assert_frame_equal(res, again)


def test_loso_regression_metrics(cohort):
    df, feats = cohort
    y = df["age"].to_numpy()
    sites = df["site"].to_numpy()
    res = leave_one_site_out(Ridge(alpha=1.0), df[feats], y, sites=sites, n_bootstrap=0)
    assert set(res["metric"]) == {"r2", "mae", "rmse"}
    for train, test in LeaveOneGroupOut().split(df, y, groups=sites):
        pred = Ridge(alpha=1.0).fit(df[feats].iloc[train], y[train]).predict(df[feats].iloc[test])
        got = res[res["site"] == sites[test][0]].set_index("metric")["value"]
        assert got["r2"] == pytest.approx(r2_score(y[test], pred), abs=1e-10)
        assert got["mae"] == pytest.approx(mean_absolute_error(y[test], pred), abs=1e-10)


def test_loso_single_class_site_warns(cohort):
    df, feats = cohort
    y = df["outcome"].to_numpy().copy()
    y[df["site"].to_numpy() == "site_C"] = 1
    with pytest.warns(DataWarning, match="site_C"):
        res = leave_one_site_out(_model(), df[feats], y, sites=df["site"], n_bootstrap=0)
    value = res[(res["site"] == "site_C") & (res["metric"] == "roc_auc")]["value"].iloc[0]
    assert np.isnan(value)


def test_loso_rejects_bad_input(cohort):
    df, feats = cohort
    with pytest.raises(ValidationError, match="at least two sites"):
        leave_one_site_out(_model(), df[feats], df["outcome"], sites=["a"] * len(df))
    with pytest.raises(ValidationError, match="Did you mean 'roc_auc'"):
        leave_one_site_out(_model(), df[feats], df["outcome"], sites=df["site"], scoring="roc_acu")


# -------------------------------------------------------------------- site predictability
def test_site_predictability_near_half_without_site_signal():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(240, 6))
    sites = np.repeat(["a", "b", "c"], 80)
    res = site_predictability(X, sites, n_permutations=9, random_state=0)
    assert abs(res.auc - 0.5) < 0.08
    assert not res.leakage
    assert res.permutation_scores.shape == (9,)


def test_site_predictability_near_one_when_confounded():
    rng = np.random.default_rng(12)
    sites = np.repeat(["a", "b", "c"], 80)
    shift = {"a": 0.0, "b": 2.0, "c": 4.0}
    X = rng.normal(size=(240, 6)) + np.array([shift[s] for s in sites])[:, None]
    res = site_predictability(X, sites, n_permutations=9, random_state=0)
    assert res.auc > 0.97
    assert res.p_value == pytest.approx(1 / 10)  # above every shuffled score
    assert res.leakage
    frame = res.to_frame()
    assert list(frame.columns) == ["auc", "p_value", "null_mean", "n_samples", "n_sites",
                                   "n_permutations", "leakage"]


def test_site_predictability_drops_after_combat_on_sample_data():
    df = pd.read_csv(SAMPLE)
    feats = [c for c in df.columns if c.startswith("original_")]
    raw = site_predictability(df[feats], df["site"], n_permutations=0, random_state=0)
    harmonised = ComBat().fit_transform(df[feats], sites=df["site"],
                                        covariates=df[["age", "sex"]])
    after = site_predictability(harmonised, df["site"], n_permutations=0, random_state=0)
    assert raw.auc > 0.9
    assert after.auc < 0.625
    assert np.isnan(after.p_value)


def test_site_predictability_small_site_message():
    X = np.random.default_rng(0).normal(size=(23, 2))
    sites = ["a"] * 20 + ["b"] * 3
    with pytest.raises(ValidationError, match=r"\['b'\].*cv=5"):
        site_predictability(X, sites)


# ---------------------------------------------------------------------------- site effects
def test_site_effects_equal_scipy_loop_and_bh():
    df = make_feature_table(n_per_site=(30, 40, 25), n_features=6, random_state=5)
    feats = [c for c in df.columns if c.startswith("original_")]
    res = site_effects(df[feats], df["site"])
    assert list(res.columns) == ["feature", "statistic", "p_value", "q_value", "epsilon_squared"]
    ps = []
    for i, f in enumerate(feats):
        groups = [df.loc[df["site"] == s, f] for s in pd.unique(df["site"])]
        h, p = stats.kruskal(*groups)
        assert res["statistic"].iloc[i] == pytest.approx(h, rel=1e-12)
        assert res["p_value"].iloc[i] == pytest.approx(p, rel=1e-10)
        ps.append(p)
    np.testing.assert_allclose(res["q_value"], stats.false_discovery_control(ps), rtol=1e-10)


def test_site_effects_before_and_after_combat_and_constant_feature():
    df = pd.read_csv(SAMPLE)
    feats = [c for c in df.columns if c.startswith("original_")]
    before = site_effects(df[feats], df["site"])
    after = site_effects(ComBat().fit_transform(df[feats], sites=df["site"],
                                                covariates=df[["age", "sex"]]), df["site"])
    assert (before["q_value"] < 0.05).mean() > 0.8
    assert (after["q_value"] < 0.05).mean() <= 0.2
    X = df[feats[:3]].assign(const=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataWarning, match="const"):
            site_effects(X, df["site"])
    with pytest.warns(DataWarning):
        res = site_effects(X, df["site"])
    assert np.isnan(res.loc[res["feature"] == "const", "p_value"]).all()
    assert res["q_value"].iloc[:3].notna().all()


def test_loso_without_predict_proba_uses_rank_and_label_metrics(cohort):
    from sklearn.svm import LinearSVC

    df, feats = cohort
    model = make_pipeline(StandardScaler(), LinearSVC())
    res = leave_one_site_out(model, df[feats], df["outcome"], sites=df["site"], n_bootstrap=0)
    assert set(res["metric"]) == {"roc_auc", "balanced_accuracy"}
    with pytest.raises(ValidationError, match="no predict_proba"):
        leave_one_site_out(model, df[feats], df["outcome"], sites=df["site"], scoring="brier")


def test_loso_multiclass(cohort):
    df, feats = cohort
    y3 = pd.qcut(df["age"], 3, labels=["young", "mid", "old"]).astype(str).to_numpy()
    res = leave_one_site_out(_model(), df[feats], y3, sites=df["site"], n_bootstrap=20,
                             random_state=0)
    assert set(res["metric"]) == {"roc_auc", "balanced_accuracy", "brier"}
    assert res["value"].notna().all()
    with pytest.raises(ValidationError, match="3 classes"):
        leave_one_site_out(_model(), df[feats], y3, sites=df["site"], scoring="ece")


def test_calibration_curve_by_site_matches_ece(cohort):
    from sitekit.robustness.sites import calibration_curve_by_site

    df, feats = cohort
    res, preds = leave_one_site_out(_model(), df[feats], df["outcome"], sites=df["site"],
                                    n_bootstrap=0, return_predictions=True)
    curve = calibration_curve_by_site(preds, strategy="uniform", n_bins=10)
    assert list(curve.columns) == ["site", "bin", "bin_low", "bin_high", "n", "mean_predicted",
                                   "observed", "ci_low", "ci_high"]
    for site, grp in curve.groupby("site"):
        n = grp["n"].sum()
        ece = float(np.sum(grp["n"] * np.abs(grp["observed"] - grp["mean_predicted"])) / n)
        value = res[(res["site"] == site) & (res["metric"] == "ece")]["value"].iloc[0]
        assert ece == pytest.approx(value, abs=1e-12)


def test_site_effects_tests_features_with_empty_cells():
    """Regression (issue 14 item 8): empty cells made site_effects raise, which dropped the
    report's harmonisation section; each feature is now tested on its non-empty cells."""
    rng = np.random.default_rng(8)
    sites = np.repeat(["a", "b", "c"], 20)
    X = pd.DataFrame(rng.normal(size=(60, 3)) + np.repeat([0.0, 2.0, -2.0], 20)[:, None],
                     columns=["f0", "f1", "f2"])
    X.iloc[[3, 25, 47], 1] = np.nan
    res = site_effects(X, sites)
    x = X["f1"].to_numpy()
    ok = np.isfinite(x)
    ref = stats.kruskal(*[x[ok & (sites == s)] for s in ("a", "b", "c")])
    assert res.loc[1, "statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert (res["q_value"] < 0.05).all()
    with pytest.raises(ValidationError, match="infinite"):
        site_effects(X.replace({X.iloc[0, 0]: np.inf}), sites)


def test_reliability_bins_adapt_to_the_site_size(cohort):
    """Regression (issue 14 item 8): 10 fixed bins on 40-70 cases per site gave 4-7 cases a
    bin; the default now uses equal-count bins of at least 15 cases with Wilson intervals."""
    from sitekit.robustness import calibration_curve_by_site

    df, feats = cohort
    _, preds = leave_one_site_out(_model(), df[feats], df["outcome"], sites=df["site"],
                                  n_bootstrap=0, return_predictions=True)
    curve = calibration_curve_by_site(preds)
    per_site = curve[curve["site"] != POOLED].groupby("site")
    assert (per_site["n"].min() >= 15).all()
    assert per_site.size().to_dict() == {s: max(1, min(10, n // 15))
                                         for s, n in preds["site"].value_counts().items()}
    assert (curve["ci_low"] <= curve["observed"]).all() and (curve["observed"] <= curve["ci_high"]).all()
    # Wilson interval by hand for one bin
    from scipy import stats as st

    row = curve.iloc[0]
    k, n, z = row["observed"] * row["n"], row["n"], st.norm.ppf(0.975)
    centre = (k / n + z**2 / (2 * n)) / (1 + z**2 / n)
    assert (row["ci_low"] + row["ci_high"]) / 2 == pytest.approx(centre, abs=1e-12) or row["ci_low"] == 0


def test_covariate_effects_equal_scipy_per_feature():
    rng = np.random.default_rng(6)
    n = 90
    cov = pd.DataFrame({"age": rng.uniform(30, 80, n), "sex": rng.choice(["F", "M"], n)})
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
    X["f0"] += 0.05 * cov["age"]
    X["f1"] += 1.0 * (cov["sex"] == "M")
    X.iloc[4, 2] = np.nan
    res = covariate_effects(X, cov).set_index(["covariate", "feature"])
    for j in range(5):
        x = X.iloc[:, j].to_numpy()
        ok = np.isfinite(x)
        rho = stats.spearmanr(x[ok], cov["age"][ok])
        row = res.loc[("age", f"f{j}")]
        assert row["test"] == "Spearman"
        assert row["statistic"] == pytest.approx(rho.statistic, abs=1e-12)
        assert row["p_value"] == pytest.approx(rho.pvalue, rel=1e-9)
        sex = cov["sex"].to_numpy()
        kw = stats.kruskal(x[ok & (sex == "F")], x[ok & (sex == "M")])
        assert res.loc[("sex", f"f{j}"), "statistic"] == pytest.approx(kw.statistic, rel=1e-12)
    q = res.xs("age")["q_value"].to_numpy()
    np.testing.assert_allclose(q, stats.false_discovery_control(res.xs("age")["p_value"]), rtol=1e-12)
    with pytest.raises(ValidationError, match="one row per row"):
        covariate_effects(X, cov.iloc[:10])
