"""Section modules of sitekit.reports.sections: registry, statistics shown, verdicts."""

import numpy as np
import pandas as pd
import pytest

from sitekit.exceptions import ValidationError
from sitekit.reports import drop_ids, harmonization_section
from sitekit.reports.sections import describe_perturbation


def test_drop_ids_and_perturbation_text():
    df = pd.DataFrame({"subject_id": ["a"], "image": ["x.nii"], "site": ["s"], "row": [3], "v": [1.0]})
    assert list(drop_ids(df, show_ids=False).columns) == ["site", "v"]
    assert list(drop_ids(df, show_ids=True).columns) == list(df.columns)
    conf = {"name": "Compose", "params": {"transforms": [
        {"name": "RandomGaussianBlur", "params": {"fwhm_mm": [3.0, 7.0], "random_state": None}},
        {"name": "RandomMaskVolume", "params": {"fraction": [-0.1, 0.1]}}]}}
    assert describe_perturbation(conf) == ("RandomGaussianBlur(fwhm_mm=[3.0, 7.0]) + "
                                           "RandomMaskVolume(fraction=[-0.1, 0.1])")
    assert describe_perturbation("NTCV") == "NTCV" and describe_perturbation(None) == ""


def test_harmonisation_section_many_features_uses_components():
    rng = np.random.default_rng(0)
    sites = np.repeat(["a", "b", "c"], 20)
    shift = np.repeat([0.0, 1.0, -1.0], 20)[:, None]
    before = pd.DataFrame(rng.normal(size=(60, 250)) + shift, columns=[f"f{i}" for i in range(250)])
    after = before - shift
    sec = harmonization_section(before, after, sites)
    share = sec.results["site_effects"]
    assert share["share"].iloc[0] > 0.9 and share["share"].iloc[1] < 0.1
    pred = sec.results["site_predictability"]
    assert pred["auc"].iloc[0] > 0.9 and pred["auc"].iloc[1] < 0.7
    assert any("principal components" in getattr(b, "text", "") for b in sec.blocks)
    assert sec.verdicts[0].status == "PASS" and "->" in sec.verdicts[0].detail


def test_covariate_associations_match_scipy():
    from scipy import stats

    from sitekit.reports.sections import covariate_associations

    rng = np.random.default_rng(3)
    age = rng.uniform(30, 80, size=120)
    sex = rng.choice(["F", "M"], size=120)
    X = pd.DataFrame(rng.normal(size=(120, 8)), columns=[f"f{i}" for i in range(8)])
    X.iloc[:, :3] += 0.05 * age[:, None]
    X.iloc[:, 3] += 2.0 * (sex == "M")
    cov = pd.DataFrame({"age": age, "sex": sex})
    got = covariate_associations(X, X * 2.0 + 1.0, cov).set_index("covariate")
    p = np.array([stats.spearmanr(X[c], age).pvalue for c in X.columns])
    want = int((stats.false_discovery_control(p, method="bh") < 0.05).sum())
    assert got.loc["age", "n_before"] == got.loc["age", "n_after"] == want == 3
    rho = np.median([abs(stats.spearmanr(X[c], age).statistic) for c in X.columns])
    assert got.loc["age", "median_effect_before"] == pytest.approx(rho, abs=1e-12)
    assert got.loc["sex", "test"] == "Kruskal-Wallis" and got.loc["sex", "n_before"] >= 1


def test_biology_lost_by_harmonisation_is_a_warning():
    """Regression (issue 14 item 8): 'Harmonisation effect PASS' while the sex-associated
    features fell from 10 to 5."""
    rng = np.random.default_rng(2)
    n = 120
    sites = np.repeat(["a", "b", "c"], 40)
    sex = rng.choice(["F", "M"], n)
    shift = np.repeat([0.0, 1.5, -1.5], 40)[:, None]
    bio = 1.5 * (sex == "M")[:, None]
    noise = rng.normal(size=(n, 12))
    cols = [f"f{i}" for i in range(12)]
    before = pd.DataFrame(noise + shift + np.where(np.arange(12) < 10, bio, 0.0), columns=cols)
    after = pd.DataFrame(noise + np.where(np.arange(12) < 5, bio, 0.0), columns=cols)
    cov = pd.DataFrame({"sex": sex})
    sec = harmonization_section(before, after, sites, covariates=cov)
    kept = sec.results["covariate_associations"].set_index("covariate")
    assert kept.loc["sex", "n_before"] == 10 and kept.loc["sex", "n_after"] == 5
    (verdict,) = sec.verdicts
    assert verdict.status == "WARN" and "sex 10 -> 5" in verdict.detail
    assert any(getattr(b, "kind", "") == "warning" and "sex 10 -> 5" in b.text for b in sec.blocks)
    # the same harmonisation keeping the biology passes
    ok = harmonization_section(before, pd.DataFrame(noise + np.where(np.arange(12) < 10, bio, 0.0),
                                                    columns=cols), sites, covariates=cov)
    assert ok.verdicts[0].status == "PASS"


def test_section_registry_builds_every_section_by_id():
    from sitekit.reports import sections

    assert sections.section_ids() == ["earl", "extraction", "feature_robustness",
                                      "harmonization", "model_robustness", "segmentation",
                                      "monitor"]
    for module in sections.SECTIONS:
        assert module.__name__ == f"sitekit.reports.sections.{module.ID}"
        assert module.TITLE and callable(module.build)
    sec = sections.build_section("feature_robustness", {"stability": pd.DataFrame(
        {"feature": ["original_glcm_A", "original_shape_B"], "icc": [0.95, 0.4]})})
    assert sec.id == "feature_robustness" and sec.results["n_robust"] == 1
    with pytest.raises(ValidationError, match="Did you mean 'earl'"):
        sections.get_section("eral")
