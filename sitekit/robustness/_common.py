"""Input handling shared by the model-robustness modules (sites, stress, adversarial, suite)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from sitekit._validation import check_random_state
from sitekit.exceptions import ValidationError

__all__: list[str] = []


def as_frame(X, *, name: str = "X", allow_nan: bool = False) -> pd.DataFrame:
    """Return ``X`` as a float DataFrame (columns ``x0, x1, ...`` for arrays).

    Infinite values are refused, and so are NaN cells unless ``allow_nan``.
    """
    if isinstance(X, pd.DataFrame):
        df = X
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValidationError(
                f"'{name}' must be 2-D (samples x features). Got an array of shape {arr.shape}."
            )
        df = pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])
    non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise ValidationError(
            f"'{name}' has non-numeric feature columns {non_numeric[:5]}; "
            "pass only the numeric feature columns."
        )
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise ValidationError(f"'{name}' is empty (shape {df.shape}).")
    values = df.to_numpy(dtype=float)
    bad_cells = np.isinf(values) if allow_nan else ~np.isfinite(values)
    if bad_cells.any():
        bad = df.columns[bad_cells.any(axis=0)].tolist()
        what = "infinite" if allow_nan else "missing or infinite"
        raise ValidationError(
            f"'{name}' has {what} values in columns {bad[:5]}; impute or drop them first."
        )
    return df.astype(float)


def as_sites(sites, n: int) -> np.ndarray:
    """Return site labels as an object array of strings of length ``n``."""
    if sites is None:
        raise ValidationError("'sites' is required: pass one site label per row of X.")
    arr = np.asarray(sites, dtype=object)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValidationError(
            f"'sites' must have one label per row of X ({n}). Got shape {arr.shape}."
        )
    if pd.isna(pd.Series(arr)).any():
        raise ValidationError("'sites' has missing labels; give every row a site.")
    return np.array([str(s) for s in arr], dtype=object)


def as_target(y, n: int) -> np.ndarray:
    """Return ``y`` as a 1-D array of length ``n``."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValidationError(f"'y' must have one value per row of X ({n}). Got shape {arr.shape}.")
    if pd.isna(pd.Series(arr)).any():
        raise ValidationError("'y' has missing values; drop those rows first.")
    return arr


def seed_from(random_state) -> int:
    """Draw an int seed (for scikit-learn / legacy APIs) from sitekit's random_state."""
    return int(check_random_state(random_state).integers(0, 2**31 - 1))


def positive_score(estimator, X) -> np.ndarray:
    """Continuous output of a fitted model.

    Binary classifiers: probability of the second class (``classes_[1]``) when
    ``predict_proba`` exists, else ``decision_function``.  Multiclass: the probability
    matrix.  Regressors: ``predict``.
    """
    if not is_classifier(estimator):
        return np.asarray(estimator.predict(X), dtype=float)
    if hasattr(estimator, "predict_proba"):
        proba = np.asarray(estimator.predict_proba(X), dtype=float)
        return proba[:, 1] if proba.shape[1] == 2 else proba
    return np.asarray(estimator.decision_function(X), dtype=float)


def within_subject_sd(stability, X: pd.DataFrame) -> np.ndarray:
    """Per-feature within-subject SD, in the column order of ``X``.

    ``stability`` is a Series/mapping of within-subject SDs by feature, a table with columns
    ``feature`` and ``within_sd``, or a stability table with ``feature`` and ``icc`` (as
    returned by :func:`sitekit.robustness.stability.feature_stability`), in which case
    ``within_sd = SD(X) * sqrt(1 - ICC)`` (ICC = between / total variance).
    """
    sd = X.std(ddof=1)
    if isinstance(stability, pd.DataFrame):
        if "feature" not in stability.columns:
            raise ValidationError(
                "The stability table needs a 'feature' column and 'within_sd' or 'icc'."
            )
        table = stability.drop_duplicates("feature").set_index("feature")
        if "within_sd" in table.columns:
            ser = table["within_sd"].astype(float)
        elif "icc" in table.columns:
            icc = table["icc"].astype(float).clip(upper=1.0)
            ser = sd.reindex(icc.index) * np.sqrt(1.0 - icc)
        else:
            raise ValidationError(
                "The stability table needs a 'within_sd' or an 'icc' column next to 'feature'."
            )
    else:
        ser = pd.Series(stability, dtype=float)
    missing = [c for c in X.columns if c not in ser.index]
    if missing:
        raise ValidationError(
            f"The stability table has no row for feature(s) {missing[:5]}; give one per column of X."
        )
    out = ser.loc[list(X.columns)].to_numpy(dtype=float)
    if not np.all(np.isfinite(out)) or np.any(out < 0):
        raise ValidationError("Within-subject SDs must be finite and non-negative.")
    return out


def model_input(estimator, X: pd.DataFrame):
    """``X`` as the fitted model expects it: a DataFrame when it was fitted with feature
    names, else a plain array (avoids scikit-learn's feature-name warnings)."""
    return X if hasattr(estimator, "feature_names_in_") else X.to_numpy(dtype=float)
