"""Golden tests: sitekit's ComBat against R's sva::ComBat 3.46 and against neuroCombat.

The R outputs were made by ``tools/make_sva_golden.R`` from the committed inputs in
``golden/`` (see that script for the ``_tight`` and ``_meansq`` variants).  Tolerance:
max |difference| <= 1e-8 x the feature's SD (measured: ~1e-13).

Every case is listed explicitly: a missing golden file fails, it does not drop the case.
The neuroCombat comparisons need the ``neuroCombat`` package (the ``dev`` extra); without
it they skip with the reason, except under ``CI=true``, where they fail (issue 14 item 10:
a missing reference must not make the module, the sva goldens included, vanish).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sitekit.harmonize import ComBat

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-8
#: sva (and sitekit) at default tolerance vs the converged fixed point, in feature SD:
#: measured at most 1.73e-5 (the "unbalanced" case); documented in the validation page
DEFAULT_STOP_BOUND = 2e-5

CASES = {
    # case: (input data, ComBat params, covariates?)
    "parametric": ("balanced", {}, False),
    "nonparametric": ("small", {"parametric": False}, False),
    "mean_only": ("balanced", {"mean_only": True}, False),
    "ref_site": ("balanced", {"ref_site": "B"}, False),
    "covariates": ("covariates", {"categorical": ["sex", "grade"], "continuous": ["age"]}, True),
    "unbalanced": ("unbalanced", {}, False),
}


def load_input(name):
    df = pd.read_csv(GOLDEN / f"data_{name}.csv")
    feats = [c for c in df.columns if c.startswith("f")]
    return df, feats


def max_rel_diff(ours, ref, X):
    return float(np.nanmax(np.abs(np.asarray(ours) - np.asarray(ref)) / X.std(axis=0).to_numpy()))


# sva as shipped (our default tol) and sva iterated to 1e-12 (our tol=1e-12); the
# non-parametric case does not iterate, so it has no "_tight" file.
ITERATED = [case for case in CASES if case != "nonparametric"]
GOLDEN_RUNS = [(case, "sva", 1e-4) for case in CASES] + [
    (case, "sva_tight", 1e-12) for case in ITERATED
]


@pytest.mark.parametrize("case,suffix,tol", GOLDEN_RUNS)
def test_matches_sva(case, suffix, tol):
    data, params, with_cov = CASES[case]
    path = GOLDEN / f"{case}_{suffix}.csv"
    df, feats = load_input(data)
    ref = pd.read_csv(path)
    cov = df[["age", "sex", "grade"]] if with_cov else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of the golden cases should warn
        out = ComBat(tol=tol, **params).fit_transform(df[feats], sites=df["site"], covariates=cov)
    assert list(out.columns) == feats
    assert max_rel_diff(out, ref, df[feats]) <= TOL


@pytest.mark.parametrize("case", ITERATED + ["nan"])
def test_default_tolerance_gap_within_documented_bound(case):
    """sva at its defaults stops on a signed-gamma rule short of its fixed point.

    The measured gap (sva default vs sva iterated to 1e-12, and sitekit's default vs that
    fixed point) is the figure quoted in the documentation; it must stay within the bound.
    """
    data, params, with_cov = CASES.get(case, ("nan", {}, False))
    df, feats = load_input(data)
    X = df[feats]
    shipped = pd.read_csv(GOLDEN / f"{case}_sva.csv")
    tight = pd.read_csv(GOLDEN / f"{case}_sva_tight.csv")
    assert max_rel_diff(shipped, tight, X) <= DEFAULT_STOP_BOUND
    if case == "nan":  # sitekit's pooled variance differs there by design (see below)
        return
    cov = df[["age", "sex", "grade"]] if with_cov else None
    ours = ComBat(**params).fit_transform(X, sites=df["site"], covariates=cov)
    assert max_rel_diff(ours, tight, X) <= DEFAULT_STOP_BOUND


def test_reference_site_rows_unchanged():
    df, feats = load_input("balanced")
    out = ComBat(ref_site="B").fit_transform(df[feats], sites=df["site"])
    rows = (df["site"] == "B").to_numpy()
    np.testing.assert_array_equal(out.to_numpy()[rows], df[feats].to_numpy()[rows])


def test_nan_matches_sva_with_consistent_pooled_variance():
    """NaN cells: per-feature fit on the observed cells, NaN exactly where it was."""
    df, feats = load_input("nan")
    X = df[feats]
    out = ComBat(tol=1e-12).fit_transform(X, sites=df["site"])
    ref = pd.read_csv(GOLDEN / "nan_sva_meansq.csv")
    np.testing.assert_array_equal(out.isna().to_numpy(), X.isna().to_numpy())
    assert max_rel_diff(out, ref, X) <= TOL


def test_nan_differs_from_raw_sva_only_by_its_variance_denominator():
    """Raw sva divides the pooled variance by N_obs - 1 once any NaN exists (ours: N_obs).

    The difference is therefore of the order of 1/N, not a different method.
    """
    df, feats = load_input("nan")
    X = df[feats]
    out = ComBat().fit_transform(X, sites=df["site"])
    raw = pd.read_csv(GOLDEN / "nan_sva.csv")
    np.testing.assert_array_equal(out.isna().to_numpy(), raw.isna().to_numpy())
    d = max_rel_diff(out, raw, X)
    assert 1e-6 < d < 5.0 / len(X)


# ------------------------------------------------------------------ neuroCombat
def _neurocombat():
    """The neuroCombat module; skip without it, but fail under ``CI=true``."""
    try:
        import neuroCombat
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                f"neuroCombat is not installed ({exc}); CI must run the reference comparison: "
                "pip install -e '.[dev]'."
            )
        pytest.skip(f"neuroCombat is not installed ({exc}); pip install -e '.[dev]' to run it")
    return neuroCombat


def run_neurocombat(X, sites, cov=None, **kw):
    neuroCombat = _neurocombat()
    covars = pd.DataFrame({"batch": np.asarray(sites)})
    cats, conts = [], []
    if cov is not None:
        for c in cov.columns:
            covars[c] = cov[c].to_numpy()
            (conts if pd.api.types.is_numeric_dtype(cov[c]) else cats).append(c)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = neuroCombat.neuroCombat(
            dat=np.asarray(X, dtype=float).T, covars=covars, batch_col="batch",
            categorical_cols=cats or None, continuous_cols=conts or None, **kw,
        )
    return out["data"].T


@pytest.mark.parametrize(
    "params,nc_params",
    [
        ({}, {}),
        ({"parametric": False}, {"parametric": False}),
        ({"mean_only": True}, {"mean_only": True}),
        ({"eb": False}, {"eb": False}),
    ],
    # neuroCombat's ref_batch path calls np.int, removed in numpy 2: it cannot run here;
    # the reference-site case is covered by the sva golden test above.
    ids=["parametric", "nonparametric", "mean_only", "no_eb"],
)
def test_matches_neurocombat(params, nc_params):
    df, feats = load_input("small")
    X = df[feats]
    ours = ComBat(**params).fit_transform(X, sites=df["site"])
    ref = run_neurocombat(X, df["site"], **nc_params)
    assert max_rel_diff(ours, ref, X) <= TOL


def test_matches_neurocombat_with_covariates():
    """neuroCombat casts continuous covariates to float32, so agreement is ~1e-7 here."""
    df, feats = load_input("covariates")
    X = df[feats]
    cov = df[["age", "sex", "grade"]]
    ours = ComBat().fit_transform(X, sites=df["site"], covariates=cov)
    ref = run_neurocombat(X, df["site"], cov)
    assert max_rel_diff(ours, ref, X) <= 1e-6


def test_where_neurocombat_breaks_we_do_not():
    """One NaN cell turns neuroCombat's whole output NaN; ours stays finite elsewhere."""
    df, feats = load_input("small")
    X = df[feats].copy()
    X.iloc[3, 2] = np.nan
    ref = run_neurocombat(X, df["site"])
    ours = ComBat().fit_transform(X, sites=df["site"])
    assert np.isnan(ref).all()
    assert ours.isna().to_numpy().sum() == 1


@pytest.mark.parametrize("ci,outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_neurocombat_fails_under_ci_and_skips_outside(monkeypatch, ci, outcome):
    """Regression (issue 14 item 10): a missing reference used to skip the whole module."""
    monkeypatch.setitem(sys.modules, "neuroCombat", None)  # import -> ImportError
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="neuroCombat is not installed"):
        _neurocombat()
