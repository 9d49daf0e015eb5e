"""Reliability statistics: vectorised ICC and CCC, Koo-Li classes.

:func:`icc` computes the six Shrout-Fleiss / McGraw-Wong intraclass correlations with their
F-based confidence intervals for thousands of features at once (the formulas of
``pingouin.intraclass_corr``, which it matches to 1e-10).  :func:`ccc` is Lin's concordance
correlation coefficient; :func:`koo_li_class` the Koo & Li (2016) reliability class.  The
perturbation pipeline that feeds them is :func:`sitekit.robustness.stability.feature_stability`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from sitekit._validation import check_number, check_option
from sitekit.exceptions import DataWarning, ValidationError

__all__ = ["ICC_FORMS", "icc", "ccc", "koo_li_class"]

#: Canonical ICC forms (Shrout & Fleiss) and their McGraw & Wong aliases.
ICC_FORMS: dict[str, str] = {
    "ICC(1,1)": "ICC(1,1)",
    "ICC(2,1)": "ICC(2,1)",
    "ICC(3,1)": "ICC(3,1)",
    "ICC(1,k)": "ICC(1,k)",
    "ICC(2,k)": "ICC(2,k)",
    "ICC(3,k)": "ICC(3,k)",
    "ICC(A,1)": "ICC(2,1)",
    "ICC(C,1)": "ICC(3,1)",
    "ICC(A,k)": "ICC(2,k)",
    "ICC(C,k)": "ICC(3,k)",
}
_CANONICAL = ("ICC(1,1)", "ICC(2,1)", "ICC(3,1)", "ICC(1,k)", "ICC(2,k)", "ICC(3,k)")
_ICC_COLUMNS = ["feature", "form", "icc", "ci_low", "ci_high", "F", "df1", "df2", "p_value",
                "n_subjects", "n_raters"]


# --------------------------------------------------------------------------------------------
# ICC
# --------------------------------------------------------------------------------------------
def _mean_squares(y: np.ndarray) -> dict[str, np.ndarray]:
    """Two-way ANOVA mean squares of y (n, k, p), one observation per cell."""
    n, k, _ = y.shape
    grand = y.mean(axis=(0, 1))
    row = y.mean(axis=1)  # (n, p) subject means
    col = y.mean(axis=0)  # (k, p) rater means
    ssb = k * ((row - grand) ** 2).sum(axis=0)
    ssj = n * ((col - grand) ** 2).sum(axis=0)
    resid = y - row[:, None, :] - col[None, :, :] + grand
    sse = (resid**2).sum(axis=0).sum(axis=0)
    # exact agreement is exact zero variance (no rounding residue from the means)
    agree = (y == y[:, :1, :]).all(axis=(0, 1))
    constant = agree & (y == y[:1, :1, :]).all(axis=(0, 1))
    ssj = np.where(agree, 0.0, ssj)
    sse = np.where(agree, 0.0, sse)
    ssb = np.where(constant, 0.0, ssb)
    return {
        "msb": ssb / (n - 1),
        "msj": ssj / (k - 1),
        "mse": sse / ((n - 1) * (k - 1)),
        "msw": (ssj + sse) / (n * (k - 1)),
    }


def _icc_forms(y: np.ndarray, confidence: float) -> dict[str, dict[str, np.ndarray]]:
    """All six forms for y (n, k, p): {form: {icc, ci_low, ci_high, F, df1, df2, p_value}}."""
    n, k, p = y.shape
    ms = _mean_squares(y)
    msb, msw, msj, mse = ms["msb"], ms["msw"], ms["msj"], ms["mse"]
    df1 = n - 1
    df1kd = n * (k - 1)
    df2kd = (n - 1) * (k - 1)
    q = 1 - (1 - confidence) / 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        icc1 = (msb - msw) / (msb + (k - 1) * msw)
        icc2 = (msb - mse) / (msb + (k - 1) * mse + k * (msj - mse) / n)
        icc3 = (msb - mse) / (msb + (k - 1) * mse)
        icc1k = (msb - msw) / msb
        icc2k = (msb - mse) / (msb + (msj - mse) / n)
        icc3k = (msb - mse) / msb

        f1k = msb / msw
        f3k = msb / mse
        p1 = stats.f.sf(f1k, df1, df1kd)
        p3 = stats.f.sf(f3k, df1, df2kd)

        f1l = f1k / stats.f.ppf(q, df1, df1kd)
        f1u = f1k * stats.f.ppf(q, df1kd, df1)
        l1 = (f1l - 1) / (f1l + (k - 1))
        u1 = (f1u - 1) / (f1u + (k - 1))
        f3l = f3k / stats.f.ppf(q, df1, df2kd)
        f3u = f3k * stats.f.ppf(q, df2kd, df1)
        l3 = (f3l - 1) / (f3l + (k - 1))
        u3 = (f3u - 1) / (f3u + (k - 1))
        # an infinite F (no within-subject variance) bounds the ICC at 1
        l1, u1 = np.where(np.isinf(f1l), 1.0, l1), np.where(np.isinf(f1u), 1.0, u1)
        l3, u3 = np.where(np.isinf(f3l), 1.0, l3), np.where(np.isinf(f3u), 1.0, u3)

        fj = msj / mse
        vn = df2kd * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
        vd = df1 * k**2 * icc2**2 * fj**2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
        v = vn / vd
        # limit of v for mse -> 0 with rater offsets (fj -> inf)
        v = np.where((mse == 0) & (msj > 0), float(k - 1), v)
        f2u = stats.f.ppf(q, n - 1, v)
        f2l = stats.f.ppf(q, v, n - 1)
        l2 = n * (msb - f2u * mse) / (f2u * (k * msj + (k * n - k - n) * mse) + n * msb)
        u2 = n * (f2l * msb - mse) / (k * msj + (k * n - k - n) * mse + n * f2l * msb)
        perfect = (msw == 0) & (msb > 0)  # every rater agrees exactly on every subject
        l2, u2 = np.where(perfect, 1.0, l2), np.where(perfect, 1.0, u2)

        out = {
            "ICC(1,1)": (icc1, l1, u1, f1k, df1kd, p1),
            "ICC(2,1)": (icc2, l2, u2, f3k, df2kd, p3),
            "ICC(3,1)": (icc3, l3, u3, f3k, df2kd, p3),
            "ICC(1,k)": (icc1k, 1 - 1 / f1l, 1 - 1 / f1u, f1k, df1kd, p1),
            "ICC(2,k)": (icc2k, l2 * k / (1 + l2 * (k - 1)), u2 * k / (1 + u2 * (k - 1)), f3k, df2kd, p3),
            "ICC(3,k)": (icc3k, 1 - 1 / f3l, 1 - 1 / f3u, f3k, df2kd, p3),
        }
    res = {}
    for form, (value, lo, hi, fstat, d2, pv) in out.items():
        res[form] = {
            "icc": np.broadcast_to(value, (p,)).astype(float),
            "ci_low": np.broadcast_to(lo, (p,)).astype(float),
            "ci_high": np.broadcast_to(hi, (p,)).astype(float),
            "F": np.broadcast_to(fstat, (p,)).astype(float),
            "df1": np.full(p, df1, dtype=float),
            "df2": np.full(p, d2, dtype=float),
            "p_value": np.broadcast_to(pv, (p,)).astype(float),
            "n_subjects": np.full(p, n, dtype=int),
            "n_raters": np.full(p, k, dtype=int),
        }
    return res


def _long_to_array(df: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, list]:
    subject, rater, feature, value = columns
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValidationError(
            f"The long table given to icc() has no column(s) {missing}; it needs the columns "
            f"{list(columns)} (subject, rater, feature, value) or pass them with columns=."
        )
    if df.duplicated([subject, rater, feature]).any():
        dup = df.loc[df.duplicated([subject, rater, feature], keep=False), [subject, rater, feature]]
        first = dup.iloc[0].tolist()
        raise ValidationError(
            f"The long table given to icc() has {len(dup)} rows for repeated "
            f"({subject}, {rater}, {feature}) combinations, e.g. {first}; keep one value per cell."
        )
    s_codes, _ = pd.factorize(df[subject], sort=False)
    r_codes, _ = pd.factorize(df[rater], sort=False)
    f_codes, f_names = pd.factorize(df[feature], sort=False)
    vals = pd.to_numeric(df[value], errors="coerce").to_numpy(dtype=float)
    arr = np.full((s_codes.max() + 1, r_codes.max() + 1, f_codes.max() + 1), np.nan)
    arr[s_codes, r_codes, f_codes] = vals
    return arr, list(f_names)


def icc(
    values: np.ndarray | pd.DataFrame,
    *,
    form: str = "ICC(1,1)",
    confidence: float = 0.95,
    feature_names: Sequence[str] | None = None,
    columns: Sequence[str] = ("subject", "rater", "feature", "value"),
) -> pd.DataFrame:
    """Intraclass correlation for many features at once, with F-based confidence intervals.

    The six forms of Shrout & Fleiss (1979) / McGraw & Wong (1996), computed exactly as
    ``pingouin.intraclass_corr`` does (two-way ANOVA mean squares; the CI of ICC(2,·) uses
    the Satterthwaite degrees of freedom), but vectorised over features.  Subjects with a
    missing value of a feature are left out for that feature (pingouin's ``nan_policy="omit"``).

    Parameters
    ----------
    values : array-like of shape (n_subjects, n_raters, n_features) or (n_subjects, n_raters), or DataFrame
        Ratings; "raters" are the repeated measurements (perturbed copies, scanners, readers).
        A DataFrame is a long table with the columns ``columns`` (subject, rater, feature, value).
    form : str, default="ICC(1,1)"
        ``"ICC(1,1)"``, ``"ICC(2,1)"`` (= ``"ICC(A,1)"``), ``"ICC(3,1)"`` (= ``"ICC(C,1)"``),
        ``"ICC(1,k)"``, ``"ICC(2,k)"`` (= ``"ICC(A,k)"``), ``"ICC(3,k)"`` (= ``"ICC(C,k)"``),
        or ``"all"`` for the six forms (six rows per feature).
    confidence : float, default=0.95
        Level of the confidence interval.
    feature_names : sequence of str, optional
        Names of the features of an array (default ``feature_0``, ``feature_1`` ...).
    columns : (str, str, str, str), default=("subject", "rater", "feature", "value")
        Column names of a long DataFrame.

    Returns
    -------
    pandas.DataFrame
        One row per feature (and form): ``feature``, ``form``, ``icc``, ``ci_low``, ``ci_high``,
        ``F``, ``df1``, ``df2``, ``p_value``, ``n_subjects``, ``n_raters``.  A feature without
        any variance gets NaN (with a :class:`~sitekit.exceptions.DataWarning`); a feature on
        which every rater agrees exactly gets 1 with the interval [1, 1].

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=(30, 1, 2))
    >>> y = truth + 0.1 * rng.normal(size=(30, 5, 2))
    >>> icc(y, feature_names=["a", "b"])["icc"].round(2).tolist()
    [0.99, 0.98]
    """
    forms = list(_CANONICAL) if form == "all" else [
        ICC_FORMS[check_option(form, list(ICC_FORMS) + ["all"], name="form", owner="icc")]
    ]
    check_number(confidence, name="confidence", owner="icc", low=0, high=1, low_inclusive=False)
    if confidence >= 1:
        raise ValidationError(f"The 'confidence' parameter of icc must be < 1. Got {confidence!r} instead.")
    if isinstance(values, pd.DataFrame):
        y, names = _long_to_array(values, columns)
    else:
        y = np.asarray(values, dtype=float)
        if y.ndim == 2:
            y = y[:, :, None]
        if y.ndim != 3:
            raise ValidationError(
                f"icc() needs an array of shape (subjects, raters, features); got shape {y.shape}."
            )
        names = list(feature_names) if feature_names is not None else [f"feature_{j}" for j in range(y.shape[2])]
        if len(names) != y.shape[2]:
            raise ValidationError(
                f"icc() got {len(names)} feature names for {y.shape[2]} features."
            )
    n, k, p = y.shape
    if k < 2:
        raise ValidationError(f"icc() needs at least 2 raters (repeated measurements); got {k}.")
    if np.isinf(y).any():
        raise ValidationError("icc() got infinite values; replace them with NaN or finite values.")

    results = {f: {c: np.full(p, np.nan) for c in _ICC_COLUMNS[2:]} for f in forms}
    for f in forms:
        results[f]["n_subjects"] = np.zeros(p, dtype=int)
        results[f]["n_raters"] = np.full(p, k, dtype=int)
    # complete subjects per feature; features sharing a pattern are computed together
    complete = ~np.isnan(y).any(axis=1)  # (n, p)
    if complete.all():  # the usual case: one vectorised call on the whole array
        patterns, inverse = np.ones((1, n), dtype=bool), np.zeros(p, dtype=int)
    else:
        patterns, inverse = np.unique(complete.T, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
    too_few = []
    for g, pattern in enumerate(patterns):
        cols = np.flatnonzero(inverse == g)
        if pattern.sum() < 2:
            too_few.extend(names[c] for c in cols)
            continue
        sub = y if pattern.all() and len(cols) == p else y[pattern][:, :, cols]
        res = _icc_forms(sub, confidence)
        for f in forms:
            for c, arr in res[f].items():
                results[f][c][cols] = arr
    if too_few:
        warnings.warn(
            f"{len(too_few)} feature(s) have fewer than 2 subjects with complete values and get "
            f"ICC NaN: {too_few[:5]}{' ...' if len(too_few) > 5 else ''}",
            DataWarning,
            stacklevel=2,
        )
    columns = {
        "feature": np.tile(np.asarray(names, dtype=object), len(forms)),
        "form": np.repeat(np.asarray(forms, dtype=object), p),
    }
    for c in _ICC_COLUMNS[2:]:
        columns[c] = np.concatenate([results[f][c] for f in forms])
    out = pd.DataFrame(columns)
    undefined = out.loc[out["icc"].isna() & (out["n_subjects"] >= 2), "feature"].unique()
    if len(undefined):
        warnings.warn(
            f"{len(undefined)} feature(s) have no variance at all (constant across subjects and "
            f"raters) and get ICC NaN: {list(undefined[:5])}{' ...' if len(undefined) > 5 else ''}",
            DataWarning,
            stacklevel=2,
        )
    return out


# --------------------------------------------------------------------------------------------
# CCC and Koo-Li
# --------------------------------------------------------------------------------------------
def ccc(x, y) -> float | np.ndarray | pd.Series:
    """Lin's concordance correlation coefficient, per feature.

    ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))**2)`` with population (1/n)
    moments (Lin 1989).  Pairs with a missing value are left out.

    Parameters
    ----------
    x, y : array-like of shape (n_samples,) or (n_samples, n_features), or DataFrames
        Paired measurements (e.g. test and retest); DataFrames are matched by column.

    Returns
    -------
    float, ndarray of shape (n_features,), or Series indexed by feature

    Examples
    --------
    >>> ccc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    1.0
    >>> round(ccc([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]), 3)
    0.571
    """
    names = None
    if isinstance(x, pd.DataFrame) or isinstance(y, pd.DataFrame):
        if not (isinstance(x, pd.DataFrame) and isinstance(y, pd.DataFrame)):
            raise ValidationError("ccc() needs x and y both DataFrames or both arrays.")
        if list(x.columns) != list(y.columns):
            missing = sorted(set(x.columns) ^ set(y.columns), key=str)
            if missing:
                raise ValidationError(f"ccc(): x and y have different columns: {missing[:5]}.")
            y = y[x.columns]
        names = x.columns
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise ValidationError(f"ccc() needs x and y of the same shape; got {xa.shape} and {ya.shape}.")
    scalar = xa.ndim == 1
    if scalar:
        xa, ya = xa[:, None], ya[:, None]
    if xa.ndim != 2:
        raise ValidationError(f"ccc() needs 1-D or 2-D inputs; got {xa.ndim}-D.")
    bad = np.isnan(xa) | np.isnan(ya)
    xa = np.where(bad, np.nan, xa)
    ya = np.where(bad, np.nan, ya)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mx, my = np.nanmean(xa, axis=0), np.nanmean(ya, axis=0)
        vx = np.nanmean((xa - mx) ** 2, axis=0)
        vy = np.nanmean((ya - my) ** 2, axis=0)
        cov = np.nanmean((xa - mx) * (ya - my), axis=0)
        value = 2 * cov / (vx + vy + (mx - my) ** 2)
    if names is not None:
        return pd.Series(value, index=names, name="ccc")
    return float(value[0]) if scalar else value


_KOO_LI = ((0.5, "poor"), (0.75, "moderate"), (0.9, "good"))


def koo_li_class(ci_low) -> str | np.ndarray | pd.Series:
    """Koo & Li (2016) reliability class of the lower confidence bound of an ICC.

    ``< 0.5`` poor, ``< 0.75`` moderate, ``< 0.9`` good, else excellent; NaN gives
    ``"undefined"``.  Applying the bands to the CI lower bound (not the point estimate) is the
    conservative reading Koo & Li recommend.

    Parameters
    ----------
    ci_low : float, array-like or Series

    Returns
    -------
    str, ndarray of str, or Series (same index)

    Examples
    --------
    >>> koo_li_class([0.3, 0.6, 0.8, 0.95]).tolist()
    ['poor', 'moderate', 'good', 'excellent']
    """
    arr = np.asarray(ci_low, dtype=float)
    out = np.full(arr.shape, "excellent", dtype=object)
    for bound, label in reversed(_KOO_LI):
        out[arr < bound] = label
    out[np.isnan(arr)] = "undefined"
    if isinstance(ci_low, pd.Series):
        return pd.Series(out, index=ci_low.index, name="koo_li")
    if arr.ndim == 0:
        return str(out[()])
    return out
