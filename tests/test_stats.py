"""sitekit._stats: the one per-feature Kruskal-Wallis + Benjamini-Hochberg implementation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sitekit._stats import fdr_bh, kruskal_columns, kruskal_fdr
from sitekit.exceptions import ValidationError


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kruskal_equals_scipy_with_ties_and_missing_cells(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(45, 6)) + np.repeat([0.0, 0.4, -0.3], 15)[:, None]
    X[:, 1] = np.round(X[:, 1])  # ties
    X[rng.integers(0, 45, 5), 2] = np.nan  # empty cells
    labels = np.repeat(["a", "b", "c"], 15)
    h, p, n, g = kruskal_columns(X, labels)
    for j in range(X.shape[1]):
        x = X[:, j]
        ok = np.isfinite(x)
        ref = stats.kruskal(*[x[ok & (labels == lv)] for lv in ("a", "b", "c")])
        assert h[j] == pytest.approx(ref.statistic, rel=1e-12)
        assert p[j] == pytest.approx(ref.pvalue, rel=1e-10)
        assert n[j] == ok.sum() and g[j] == 3


def test_untestable_features_are_nan_and_outside_the_fdr_family():
    labels = np.repeat(["a", "b"], 10)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 4))
    X[:, 2] = 1.0  # constant
    X[10:, 3] = np.nan  # data at one site only
    res = kruskal_fdr(pd.DataFrame(X, columns=list("wxyz")), labels)
    assert res[["statistic", "p_value", "q_value"]].iloc[2:].isna().all().all()
    # BH over the two tested features only
    want = stats.false_discovery_control(res["p_value"].iloc[:2], method="bh")
    np.testing.assert_allclose(res["q_value"].iloc[:2], want, rtol=1e-12)
    assert list(res["feature"]) == list("wxyz")


def test_fdr_bh_keeps_nan():
    q = fdr_bh([0.01, np.nan, 0.04])
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2]], stats.false_discovery_control([0.01, 0.04]))


def test_shape_errors():
    with pytest.raises(ValidationError, match="2-dimensional"):
        kruskal_columns(np.zeros(3), ["a", "b", "c"])
    with pytest.raises(ValidationError, match="one entry per row"):
        kruskal_columns(np.zeros((3, 2)), ["a", "b"])


def test_nested_combat_and_site_effects_share_the_test():
    """Regression (issue 13): Kruskal-Wallis + FDR was written twice with different conventions."""
    from sitekit.harmonize._nested import batch_effect_test
    from sitekit.robustness import site_effects

    rng = np.random.default_rng(4)
    X = pd.DataFrame(rng.normal(size=(30, 5)), columns=[f"f{i}" for i in range(5)])
    X["f4"] = 2.0
    sites = np.repeat(["a", "b", "c"], 10)
    with pytest.warns(UserWarning):
        a = site_effects(X, sites)
    b = batch_effect_test(X, pd.DataFrame({"site": sites}))
    for col in ("statistic", "p_value", "q_value"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())
