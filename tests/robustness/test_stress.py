"""stress_test: noise sweeps, calibration shifts, site-shift attack (issue 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sitekit.datasets import make_feature_table
from sitekit.exceptions import ValidationError
from sitekit.robustness import CalibrationShift, FeatureNoise, SiteShift, stress_test
from sitekit.robustness.stress import INTENSITY_LINEAR, INTENSITY_SQUARED, parse_perturbations


@pytest.fixture(scope="module")
def fitted():
    df = make_feature_table(n_per_site=(40, 50, 30), n_features=10, random_state=7)
    feats = [c for c in df.columns if c.startswith("original_")]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(df[feats], df["outcome"])
    return df, feats, model


def test_noise_sweep_layout_zero_level_and_monotone(fitted):
    df, feats, model = fitted
    res = stress_test(model, df[feats], df["outcome"], perturbations=FeatureNoise(levels=(0.0, 0.1, 2.0)),
                      n_repeats=4, random_state=0)
    assert res.scoring == "roc_auc"
    s = res.summary
    assert list(s.columns) == ["perturbation", "severity", "target_site", "n_repeats", "score_mean",
                               "score_std", "ci_low", "ci_high", "baseline", "score_drop", "worst"]
    assert list(res.scores.columns) == ["perturbation", "severity", "target_site", "repeat", "score"]
    assert len(res.scores) == 12
    zero = s[s["severity"] == 0.0].iloc[0]
    assert zero["score_mean"] == res.baseline and zero["score_drop"] == 0
    big = s[s["severity"] == 2.0].iloc[0]
    assert big["score_mean"] < s[s["severity"] == 0.1]["score_mean"].iloc[0] < res.baseline + 0.02
    assert big["ci_low"] <= big["score_mean"] <= big["ci_high"]
    assert res.drop_at("noise", 2.0) == pytest.approx(big["score_drop"])


def test_same_seed_same_scores_other_seed_differs(fitted):
    df, feats, model = fitted
    run = [stress_test(model, df[feats], df["outcome"], perturbations="noise", n_repeats=3,
                       random_state=seed).scores for seed in (5, 5, 6)]
    pd.testing.assert_frame_equal(run[0], run[1])
    assert not np.allclose(run[0]["score"], run[2]["score"])


def test_noise_in_within_subject_units_from_stability_table(fitted):
    df, feats, model = fitted
    perfect = pd.DataFrame({"feature": feats, "icc": 1.0})  # no within-subject variation
    res = stress_test(model, df[feats], df["outcome"], perturbations=FeatureNoise(levels=(1.0,), unit="within"),
                      stability=perfect, n_repeats=2, random_state=0)
    assert (res.scores["score"] == res.baseline).all()
    # ICC 0.75 -> within SD = SD * 0.5: the same draws as "sd" units at half the level
    quarter = pd.DataFrame({"feature": feats, "icc": 0.75})
    a = stress_test(model, df[feats], df["outcome"], perturbations=FeatureNoise(levels=(1.0,), unit="within"),
                    stability=quarter, n_repeats=2, random_state=3).scores["score"]
    b = stress_test(model, df[feats], df["outcome"], perturbations=FeatureNoise(levels=(0.5,)),
                    n_repeats=2, random_state=3).scores["score"]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    with pytest.raises(ValidationError, match="stability"):
        stress_test(model, df[feats], df["outcome"], perturbations=FeatureNoise(unit="within"))


def test_calibration_shift_touches_only_intensity_features():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({
        "original_firstorder_Mean": rng.normal(5, 1, 200),
        "original_firstorder_Energy": rng.normal(50, 5, 200),
        "original_shape_Sphericity": rng.normal(0, 1, 200),
    })
    y = (X["original_shape_Sphericity"] + rng.normal(0, 0.5, 200) > 0).astype(int)
    shape_only = LogisticRegression().fit(X[["original_shape_Sphericity"]].assign(
        original_firstorder_Mean=0.0, original_firstorder_Energy=0.0)[X.columns], y)
    res = stress_test(shape_only, X, y, perturbations=CalibrationShift(factors=(0.8, 1.2)))
    assert (res.summary["score_drop"] == 0).all()  # the model ignores the intensity features

    seen = []

    def scorer(est, Xp, yy):
        seen.append(Xp.copy())
        return 0.0

    stress_test(shape_only, X, y, perturbations=CalibrationShift(factors=(1.1,)), scoring=scorer)
    shifted = seen[-1]
    np.testing.assert_allclose(shifted["original_firstorder_Mean"], X["original_firstorder_Mean"] * 1.1)
    np.testing.assert_allclose(shifted["original_firstorder_Energy"],
                               X["original_firstorder_Energy"] * 1.1**2)
    np.testing.assert_array_equal(shifted["original_shape_Sphericity"], X["original_shape_Sphericity"])
    with pytest.raises(ValidationError, match="no intensity feature"):
        stress_test(shape_only, X, y, perturbations=CalibrationShift(columns="^no$", squared="^no$"))


def test_default_intensity_patterns():
    import re

    assert re.search(INTENSITY_LINEAR, "original_firstorder_90Percentile")
    assert re.search(INTENSITY_LINEAR, "SUVmax")
    assert not re.search(INTENSITY_LINEAR, "original_firstorder_Skewness")
    assert re.search(INTENSITY_SQUARED, "wavelet-LLH_firstorder_TotalEnergy")


def test_site_shift_maps_onto_target_location_and_reports_worst(fitted):
    df, feats, model = fitted
    sites = df["site"].to_numpy()
    col = feats[0]

    def mean_of_first(est, Xp, yy):
        return float(Xp[col].mean())

    res = stress_test(model, df[feats], df["outcome"], sites=sites, perturbations=SiteShift(),
                      scoring=mean_of_first)
    s = res.summary.set_index("target_site")
    for site in pd.unique(sites):
        # every case lands on the target's location: the column mean is the target's mean
        assert s.loc[site, "score_mean"] == pytest.approx(df.loc[sites == site, col].mean(), rel=1e-10)
    assert s["worst"].sum() == 1
    assert s.loc[s["worst"], "score_mean"].iloc[0] == s["score_mean"].min()
    with pytest.raises(ValidationError, match="sites="):
        stress_test(model, df[feats], df["outcome"], perturbations="site_shift")


def test_site_shift_hurts_a_site_confounded_model():
    rng = np.random.default_rng(1)
    sites = np.repeat(["a", "b"], 100)
    y = (sites == "b").astype(int) ^ (rng.uniform(size=200) < 0.1)
    X = pd.DataFrame({"f": rng.normal(size=200) + 3 * (sites == "b")})
    model = LogisticRegression().fit(X, y)
    res = stress_test(model, X, y, sites=sites, perturbations=SiteShift())
    assert res.baseline > 0.85
    assert res.drop_at("site_shift") > 0.3


def test_parse_perturbations_from_toml_like_specs():
    perts = parse_perturbations([{"kind": "noise", "levels": [0.1, 0.2]}, "calibration",
                                 {"kind": "site_shift", "robust": True}])
    assert perts == [FeatureNoise(levels=(0.1, 0.2)), CalibrationShift(), SiteShift(robust=True)]
    with pytest.raises(ValidationError, match="Did you mean 'noise'"):
        parse_perturbations("nosie")
    with pytest.raises(ValidationError, match="levle"):
        parse_perturbations({"kind": "noise", "levle": [1]})


def test_array_fitted_models_and_scorer_names():
    import warnings

    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(X, y)  # no feature names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scikit-learn feature-name warnings
        res = stress_test(model, X, y, perturbations="noise", scoring="accuracy", n_repeats=2,
                          random_state=0)
    assert res.scoring == "accuracy" and res.baseline == pytest.approx(model.score(X, y))
    with pytest.raises(ValidationError, match="Did you mean 'roc_auc'"):
        stress_test(model, X, y, perturbations="noise", scoring="roc_acu")


def test_loss_metrics_from_the_metrics_module_report_a_positive_drop():
    """Regression (issue 13, one vocabulary): stress_test takes the LOSO metric names too
    (``brier`` ...); for a loss the drop is score - baseline, so worse is positive either way."""
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=[f"f{i}" for i in range(4)])
    y = (X["f0"] + 0.5 * rng.normal(size=200) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    res = stress_test(model, X, y, perturbations=FeatureNoise(levels=(2.0,)), scoring="brier",
                      n_repeats=3, random_state=0)
    assert res.baseline == pytest.approx(brier_score_loss(y, model.predict_proba(X)[:, 1]))
    row = res.summary.iloc[0]
    assert row["score_mean"] > res.baseline and row["score_drop"] > 0
    auc = stress_test(model, X, y, perturbations=FeatureNoise(levels=(2.0,)), n_repeats=3,
                      random_state=0)
    assert auc.summary["score_drop"].iloc[0] > 0
