"""Tests of sitekit.robustness.icc: ICC vs pingouin, CCC, Koo-Li classes."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from sitekit.exceptions import DataWarning, ValidationError
from sitekit.robustness.icc import ICC_FORMS, ccc, icc, koo_li_class

PINGOUIN_NAMES = {
    "ICC(1,1)": "ICC(1,1)",
    "ICC(2,1)": "ICC(A,1)",
    "ICC(3,1)": "ICC(C,1)",
    "ICC(1,k)": "ICC(1,k)",
    "ICC(2,k)": "ICC(A,k)",
    "ICC(3,k)": "ICC(C,k)",
}

def ratings(n, k, p, seed, rater_sd=0.3):
    rng = np.random.default_rng(seed)
    subject = rng.normal(size=(n, 1, p)) * rng.uniform(0.2, 2.0, p)
    rater = rng.normal(size=(1, k, p)) * rater_sd
    return subject + rater + rng.normal(size=(n, k, p)) + rng.uniform(-5, 5, p)


def _pingouin():
    """pingouin (dev extra) is the reference: under CI a missing one fails, elsewhere it skips."""
    try:
        import pingouin
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip("pingouin (the dev extra) is not installed; pip install -e .[dev]")
    return pingouin


def pingouin_icc(y):
    pg = _pingouin()
    old = dict(pg.options)
    pg.options["round"] = None
    pg.options["round.column.CI95"] = None
    try:
        n, k = y.shape
        long = pd.DataFrame({
            "s": np.repeat(np.arange(n), k),
            "r": np.tile(np.arange(k), n),
            "v": y.ravel(),
        })
        return pg.intraclass_corr(long, targets="s", raters="r", ratings="v",
                                  nan_policy="omit").set_index("Type")
    finally:
        pg.options.update(old)


@pytest.mark.parametrize("seed,n,k", [(0, 10, 3), (1, 25, 6), (2, 7, 2)])
def test_icc_matches_pingouin_every_form(seed, n, k):
    y = ratings(n, k, 6, seed)
    ours = icc(y, form="all").set_index(["feature", "form"])
    for j in range(y.shape[2]):
        ref = pingouin_icc(y[:, :, j])
        for form, pform in PINGOUIN_NAMES.items():
            row = ours.loc[(f"feature_{j}", form)]
            lo, hi = ref.loc[pform, "CI95"]
            expected = [ref.loc[pform, c] for c in ("ICC", "F", "df1", "df2", "pval")] + [lo, hi]
            got = [row["icc"], row["F"], row["df1"], row["df2"], row["p_value"],
                   row["ci_low"], row["ci_high"]]
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=f"{form} feature {j}")


def test_icc_nan_omit_matches_pingouin():
    y = ratings(15, 4, 3, seed=5)
    y[2, 1, 0] = np.nan
    y[7, 3, 0] = np.nan
    ours = icc(y, form="all").set_index(["feature", "form"])
    ref = pingouin_icc(y[:, :, 0])
    for form, pform in PINGOUIN_NAMES.items():
        assert ours.loc[("feature_0", form), "icc"] == pytest.approx(ref.loc[pform, "ICC"], abs=1e-10)
        assert ours.loc[("feature_0", form), "n_subjects"] == 13
        assert ours.loc[("feature_1", form), "n_subjects"] == 15


def test_icc_same_missing_subject_in_every_feature():
    # regression (issue 6): one incomplete pattern shared by all features
    y = ratings(8, 3, 4, seed=2)
    y[3, 1, :] = np.nan
    res = icc(y)
    expected = icc(np.delete(y, 3, axis=0))
    np.testing.assert_allclose(res["icc"], expected["icc"], rtol=1e-12)
    assert (res["n_subjects"] == 7).all()


def test_icc_long_frame_equals_array_and_aliases():
    y = ratings(12, 4, 5, seed=3)
    n, k, p = y.shape
    long = pd.DataFrame({
        "subject": np.repeat(np.arange(n), k * p),
        "rater": np.tile(np.repeat(np.arange(k), p), n),
        "feature": np.tile([f"f{j}" for j in range(p)], n * k),
        "value": y.ravel(),
    }).sample(frac=1.0, random_state=0)
    a = icc(y, form="ICC(2,1)", feature_names=[f"f{j}" for j in range(p)])
    b = icc(long, form="ICC(A,1)").sort_values("feature").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    assert list(a.columns) == ["feature", "form", "icc", "ci_low", "ci_high", "F", "df1", "df2",
                               "p_value", "n_subjects", "n_raters"]
    assert set(ICC_FORMS.values()) == set(icc(y, form="all")["form"])


def test_pure_noise_icc_near_zero_and_unchanged_feature_one():
    rng = np.random.default_rng(0)
    n, k = 200, 5
    noise = rng.normal(size=(n, k))
    truth = rng.normal(size=(n, 1))
    unchanged = np.repeat(truth, k, axis=1)
    y = np.stack([noise, unchanged], axis=2)
    res = icc(y, form="all", feature_names=["noise", "unchanged"]).set_index(["feature", "form"])
    for form in ICC_FORMS.values():
        # ICC(1,1) of pure noise has SE ~ 0.03 here; its CI covers 0
        assert abs(res.loc[("noise", form), "icc"]) < 0.15
        assert res.loc[("noise", form), "ci_low"] < 0 < res.loc[("noise", form), "ci_high"]
        assert res.loc[("unchanged", form), "icc"] == 1.0
        assert res.loc[("unchanged", form), "ci_low"] == 1.0
        assert res.loc[("unchanged", form), "ci_high"] == 1.0


def test_icc_constant_feature_warns_and_gives_nan():
    y = ratings(10, 3, 2, seed=0)
    y[:, :, 1] = 4.2
    with pytest.warns(DataWarning, match="no variance"):
        res = icc(y)
    assert np.isnan(res.loc[1, "icc"]) and not np.isnan(res.loc[0, "icc"])


def test_icc_confidence_level_and_errors():
    y = ratings(20, 4, 3, seed=1)
    wide = icc(y, confidence=0.99)
    narrow = icc(y, confidence=0.90)
    assert ((wide["ci_high"] - wide["ci_low"]) > (narrow["ci_high"] - narrow["ci_low"])).all()
    np.testing.assert_allclose(wide["icc"], narrow["icc"])
    with pytest.raises(ValidationError, match="Did you mean"):
        icc(y, form="ICC(1,2)")
    with pytest.raises(ValidationError, match="at least 2 raters"):
        icc(y[:, :1, :])
    with pytest.raises(ValidationError, match="shape"):
        icc(np.zeros(5))
    with pytest.raises(ValidationError, match="columns"):
        icc(pd.DataFrame({"a": [1.0]}))


def test_ccc_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(-1.0 * 2 * np.var(x) / (2 * np.var(x) + 4 * np.mean(x) ** 2))
    # a shift of 1: 2*1.25 / (1.25 + 1.25 + 1) = 0.714...
    assert ccc(x, x + 1) == pytest.approx(2.5 / 3.5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    vec = ccc(a, b)
    for j in range(4):
        assert vec[j] == pytest.approx(ccc(a[:, j], b[:, j]))
        assert abs(vec[j]) <= abs(np.corrcoef(a[:, j], b[:, j])[0, 1]) + 1e-12
    # DataFrames are matched by column name, whatever the column order
    s = ccc(pd.DataFrame(a, columns=list("abcd")), pd.DataFrame(b, columns=list("abcd"))[list("dcba")])
    assert list(s.index) == list("abcd")
    np.testing.assert_allclose(s.to_numpy(), vec)
    # missing pairs are left out
    a2 = a.copy()
    a2[0, 0] = np.nan
    assert ccc(a2[:, 0], b[:, 0]) == pytest.approx(ccc(a[1:, 0], b[1:, 0]))


def test_koo_li_bands():
    got = koo_li_class([0.2, 0.5, 0.74, 0.75, 0.899, 0.9, 1.0, np.nan])
    assert got.tolist() == ["poor", "moderate", "moderate", "good", "good", "excellent",
                            "excellent", "undefined"]
    assert koo_li_class(0.95) == "excellent"
    s = koo_li_class(pd.Series([0.1, 0.8], index=["x", "y"]))
    assert s.to_dict() == {"x": "poor", "y": "good"}


# ---------------------------------------------------------------------------- feature_stability
def test_icc_invariances_property():
    """ICC is invariant to subject order, rater order and a positive affine change of units."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=10, deadline=None)
    @given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0), shift=st.floats(-1e3, 1e3))
    def check(seed, scale, shift):
        y = ratings(9, 4, 3, seed)
        rng = np.random.default_rng(seed)
        base = icc(y, form="all")
        moved = y[rng.permutation(9)][:, rng.permutation(4)] * scale + shift
        other = icc(moved, form="all")
        np.testing.assert_allclose(other["icc"], base["icc"], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(other["ci_low"], base["ci_low"], rtol=1e-7, atol=1e-9)

    check()
