"""Federated ComBat privacy rule and summary validation.

Regression guards for issue 15 items 1 and 3: a subject alone in a covariate level (or a
feature observed once) had its exact values in the round-1 summary; one corrupt (NaN)
summary made every site's output NaN with exit 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sitekit.exceptions import InvalidModelError, PrivacyError
from sitekit.harmonize import federated as fed
from sitekit.harmonize._persistence import write_model_file

K = 5


def _site(rng, name, n, F, *, sex=None, nan_rows=()):
    X = pd.DataFrame(rng.normal(10.0, 2.0, (n, F)), columns=[f"g{j}" for j in range(F)])
    for j, rows in nan_rows:
        X.iloc[list(rows), j] = np.nan
    cov = pd.DataFrame({"age": rng.uniform(20, 80, n),
                        "sex": sex if sex is not None else rng.choice(["F", "M"], n)})
    return X, np.array([name] * n), cov


def _singles(X, cov) -> np.ndarray:
    """Every value that belongs to one observation: features, ages, squares, products."""
    Y = X.to_numpy(dtype=float)
    age = cov["age"].to_numpy(dtype=float)
    vals = [Y.ravel(), age, age**2, (Y * age[:, None]).ravel()]
    v = np.concatenate(vals)
    return v[np.isfinite(v)]


def _released(summary) -> list[np.ndarray]:
    """The released arrays plus the trivial inversions (differences of released sums)."""
    arrays = [np.asarray(a, dtype=float) for k, a in summary.arrays.items() if k != "missing"]
    if "dtd_missing" in summary.arrays:
        arrays += [summary.arrays["dtd"] - m for m in summary.arrays["dtd_missing"]]
    if summary.round == 1:
        dty = summary.arrays["dty"]
        arrays += [dty[0] - dty[i] for i in range(1, dty.shape[0])]
        dtd = summary.arrays["dtd"]
        arrays += [dtd[0] - dtd[i] for i in range(1, dtd.shape[0])]
    return arrays


def _assert_no_leak(summary, X, cov):
    singles = _singles(X, cov)
    Y = X.to_numpy(dtype=float)
    for arr in _released(summary):
        flat = arr[np.isfinite(arr)].ravel()
        if flat.size and singles.size:
            hit = np.isclose(flat[:, None], singles[None, :], rtol=1e-12, atol=0.0)
            assert not hit.any(), f"a released value equals a single observation: {flat[hit.any(1)][:3]}"
        for row in Y:  # no array holds a row (along any axis)
            ok = np.isfinite(row)
            for axis in range(arr.ndim):
                if arr.shape[axis] == row.size:
                    moved = np.moveaxis(arr, axis, -1).reshape(-1, row.size)
                    same = np.isclose(moved[:, ok], row[ok], rtol=1e-12, atol=0.0).all(axis=1)
                    assert not same.any(), "a released array holds a row"


@pytest.mark.parametrize("seed", range(25))
def test_random_small_sites_release_no_row_or_value(seed):
    """Property test over a seed sweep: either a site is refused with a PrivacyError that
    names it, or nothing it releases equals (or trivially inverts to) one observation."""
    rng = np.random.default_rng(seed)
    sites = []
    F = int(rng.integers(2, 6))
    for i in range(3):
        n = int(rng.integers(10, 31))
        n_f = int(rng.integers(2, n - 1)) if rng.random() < 0.3 else n // 2  # sometimes tiny levels
        sex = rng.permutation(np.array(["F"] * n_f + ["M"] * (n - n_f)))
        nan_rows = []
        if rng.random() < 0.5:  # missing cells in one level, sometimes fewer than K
            j = int(rng.integers(0, F))
            rows = np.flatnonzero(sex == "F")
            m = min(int(rng.integers(1, 8)), rows.size)
            nan_rows.append((j, rng.choice(rows, m, replace=False)))
        sites.append(_site(rng, f"site{i}", n, F, sex=sex, nan_rows=nan_rows))
    round1, kept, refused = [], [], []
    for X, s, cov in sites:
        try:
            summary = fed.summarize_site(X, sites=s, covariates=cov, min_cell_size=K)
        except PrivacyError as exc:
            assert f"'{s[0]}'" in str(exc) and "min_cell_size=5" in str(exc)
            refused.append(s[0])
            continue
        _assert_no_leak(summary, X, cov)
        round1.append(summary)
        kept.append((X, s, cov))
    if len(round1) < 2:
        assert refused
        return
    msg = fed.combine(round1)
    for X, s, cov in kept:
        r2 = fed.summarize_site(X, sites=s, covariates=cov, message=msg, min_cell_size=K)
        _assert_no_leak(r2, X, cov)


def test_subject_alone_in_a_level_is_refused_before_writing(tmp_path):
    rng = np.random.default_rng(0)
    sex = np.array(["F"] * 19 + ["M"])
    X, s, cov = _site(rng, "north", 20, 3, sex=sex)
    with pytest.raises(PrivacyError, match=r"'north'.*'sex' level 'M' has 1 sample.*Merge the level"):
        fed.summarize_site(X, sites=s, covariates=cov)
    assert list(tmp_path.iterdir()) == []
    # the merged coding (or no sex covariate) is accepted and leaks nothing
    ok = fed.summarize_site(X, sites=s, covariates=cov[["age"]])
    _assert_no_leak(ok, X, cov)


def test_feature_observed_few_times_is_refused():
    rng = np.random.default_rng(1)
    X, s, cov = _site(rng, "east", 20, 3, nan_rows=[(1, range(1, 20))])  # g1 observed once
    with pytest.raises(PrivacyError, match=r"'east'.*'g1' \(1\).*observed value"):
        fed.summarize_site(X, sites=s, covariates=cov[["age"]])


def test_few_missing_values_are_refused():
    """dtd - dtd_missing would be the covariates of the one row where g0 is missing."""
    rng = np.random.default_rng(2)
    X, s, cov = _site(rng, "west", 20, 3, nan_rows=[(0, [4])])
    with pytest.raises(PrivacyError, match=r"'west'.*'g0' \(1\).*missing value"):
        fed.summarize_site(X, sites=s, covariates=cov[["age"]])


def test_min_cell_size_is_configurable_and_validated():
    rng = np.random.default_rng(3)
    sex = np.array(["F"] * 16 + ["M"] * 4)
    X, s, cov = _site(rng, "south", 20, 3, sex=sex)
    with pytest.raises(PrivacyError, match="min_cell_size=5"):
        fed.summarize_site(X, sites=s, covariates=cov)
    assert fed.summarize_site(X, sites=s, covariates=cov, min_cell_size=4).meta["min_cell_size"] == 4
    with pytest.raises(ValueError, match="min_cell_size"):
        fed.summarize_site(X, sites=s, covariates=cov, min_cell_size=0)


def _protocol(rng):
    parts = [_site(rng, f"s{i}", 30, 4, sex=np.repeat(["F", "M"], 15)) for i in range(3)]
    r1 = [fed.summarize_site(X, sites=s, covariates=c) for X, s, c in parts]
    msg = fed.combine(r1)
    r2 = [fed.summarize_site(X, sites=s, covariates=c, message=msg) for X, s, c in parts]
    return parts, r1, msg, r2


@pytest.mark.parametrize("round_,array", [(1, "dty"), (1, "dtd"), (2, "resid_sum"), (2, "count"),
                                          (2, "resid_sumsq")])
def test_corrupt_summary_is_named_at_load_and_combine(tmp_path, round_, array):
    parts, r1, msg, r2 = _protocol(np.random.default_rng(4))
    bad = (r1 if round_ == 1 else r2)[1]
    arrays = {k: v.copy() for k, v in bad.arrays.items()}
    arrays[array].flat[2] = np.nan if array != "resid_sumsq" else -1.0
    if array == "count":
        arrays[array].flat[2] = 1e6
    path = write_model_file(tmp_path / "bad.npz", kind="federated-summary", metadata=bad.meta, arrays=arrays)
    with pytest.raises(InvalidModelError, match=rf"site 's1'.*'{array}'"):
        fed.load_federated(path)
    corrupt = fed.SiteSummary(meta=bad.meta, arrays=arrays)
    summaries = [r1[0], corrupt, r1[2]] if round_ == 1 else [r2[0], corrupt, r2[2]]
    with pytest.raises(InvalidModelError, match=rf"site 's1'.*'{array}'"):
        fed.combine(summaries, message=None if round_ == 1 else msg)


def test_corrupt_message_is_refused(tmp_path):
    parts, r1, msg, r2 = _protocol(np.random.default_rng(5))
    beta = msg.arrays["beta"].copy()
    beta[0, 0] = np.inf
    bad = fed.RoundMessage(meta=msg.meta, arrays={"beta": beta})
    with pytest.raises(InvalidModelError, match="'beta'"):
        fed.combine(r2, message=bad)
    path = write_model_file(tmp_path / "m.npz", kind="federated-message", metadata=msg.meta,
                            arrays={"beta": beta})
    with pytest.raises(InvalidModelError, match="'beta'"):
        fed.load_federated(path)


def test_federated_output_is_finite_where_input_is(tmp_path):
    parts, r1, msg, r2 = _protocol(np.random.default_rng(6))
    model = fed.combine(r2, message=msg)
    for X, s, c in parts:
        out = model.transform(X, sites=s, covariates=c)
        assert np.isfinite(out.to_numpy()).all()
