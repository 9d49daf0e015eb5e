"""Robustness suites for CI: a TOML file -> analyses -> tidy tables -> checks -> verdict.

A suite file names the data, the model, the analyses' settings and the checks with their
thresholds (the layout is documented in the README section "Model robustness and cross-site generalisation" and in
:func:`run_suite`).  :func:`run_suite` runs leave-one-site-out validation, site leakage
(before/after harmonisation), stress tests and adversarial distances, evaluates the checks
and, with ``out_dir``, writes every table as CSV plus ``results.json``.  Models come from a
short spec in the file or from a skops file loaded with an explicit list of trusted types;
nothing is ever unpickled.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import re
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.base import clone, is_classifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit._validation import check_number, check_option
from sitekit._version import __version__
from sitekit.exceptions import (
    CheckFailedError,
    CorruptFileError,
    DataWarning,
    MissingFileError,
    ModelFileError,
    OutputExistsError,
    ValidationError,
)
from sitekit.harmonize import ComBat
from sitekit.io import (
    atomic_directory,
    check_columns,
    check_writable,
    file_hash,
    numeric_columns,
    read_table,
    remove_stale_temporaries,
    short_list,
    write_table,
)
from sitekit.robustness.adversarial import (
    adversarial_budget,
    linear_decision,
    minimal_perturbation,
    resolve_scale,
)
from sitekit.robustness.segmentation._suite import (
    IMAGE_CHECKS,
    MODEL_KINDS,
    run_image_checks,
    segmenter_from_config,
)
from sitekit.robustness.sites import (
    POOLED,
    calibration_curve_by_site,
    leave_one_site_out,
    site_effects,
    site_predictability,
)
from sitekit.robustness.stress import CalibrationShift, FeatureNoise, SiteShift, stress_test

__all__ = ["SuiteResult", "run_suite", "load_suite", "build_model", "load_model", "CHECKS",
           "MODEL_SPECS", "RESULTS_SCHEMA"]

#: ``schema`` entry of results.json.
RESULTS_SCHEMA = "sitekit.robustness.suite/1"

_SECTIONS = {"data", "model", "settings", "stress", "adversarial", "checks"}
#: Keys allowed in [data] and [model] (anything else is a typo and an error).
_DATA_KEYS = {"table", "label", "site", "id", "covariates", "features", "stability", "sep",
              "decimal"}
_MODEL_KEYS = {"spec", "file", "trusted", "params", "harmonize"}
#: An image-model suite: ``[model] kind = "onnx" | "threshold" | "python"``.
_IMAGE_DATA_KEYS = {"manifest"}
_IMAGE_MODEL_KEYS = {"kind", "path", "spacing", "patch_size", "overlap", "threshold", "normalise",
                     "output", "fraction", "suv", "margin_mm", "callable"}
_IMAGE_SETTINGS = {"random_state": 0, "n_bootstrap": 200}
_SETTINGS = {
    "random_state": 0,
    "test_size": 0.3,
    "n_bootstrap": 200,
    "n_permutations": 50,
    "cv": 5,
    "n_repeats": 5,
}
_STRESS = {
    "noise_levels": [0.1, 0.25, 0.5, 1.0],
    "noise_unit": "sd",
    "calibration_factors": [0.9, 0.95, 1.05, 1.1],
    "calibration_columns": None,
    "site_shift": True,
    "scoring": None,
}
_ADVERSARIAL = {
    "norm": "l2",
    "scale": "std",
    "method": "auto",
    "budgets": [0.1, 0.25, 0.5, 1.0],
    "max_cases": 50,
    "max_iter": 20,
    "max_eval": 1000,
}


# ------------------------------------------------------------------------------ models
def _logistic(params):
    return make_pipeline(StandardScaler(), LogisticRegression(**{"max_iter": 2000, **params}))


def _svm(params):
    return make_pipeline(StandardScaler(), SVC(**{"probability": True, "random_state": 0,
                                                  **params}))


def _random_forest(params):
    return RandomForestClassifier(**{"n_estimators": 200, "random_state": 0, **params})


def _gradient_boosting(params):
    return HistGradientBoostingClassifier(**{"random_state": 0, **params})


#: ``[model] spec`` names and what they build (``params`` go to the final estimator).
MODEL_SPECS: dict[str, Callable] = {
    "logistic": _logistic,
    "svm": _svm,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
}


def build_model(spec: str, params: Mapping | None = None):
    """Build an unfitted classifier from a spec name and its parameters.

    ``"logistic"`` (StandardScaler + LogisticRegression), ``"svm"`` (StandardScaler + SVC with
    probabilities), ``"random_forest"``, ``"gradient_boosting"`` (HistGradientBoosting).
    """
    check_option(spec, tuple(MODEL_SPECS), name="spec", owner="[model]")
    try:
        return MODEL_SPECS[spec](dict(params or {}))
    except TypeError as exc:
        raise ValidationError(f"[model] params do not fit spec '{spec}': {exc}.") from exc


def load_model(path: PathLike, *, trusted: list[str]):
    """Load a scikit-learn model saved with ``skops.io.dump``, trusting only listed types.

    Parameters
    ----------
    path : str or path-like
        A ``.skops`` file.
    trusted : list of str
        Fully qualified type names the file may contain beyond skops' defaults (e.g.
        ``"sklearn.linear_model._logistic.LogisticRegression"``).

    Raises
    ------
    ModelFileError
        The file is not a skops file, or it contains types not in ``trusted`` (they are
        listed; add them to ``trusted`` only if you trust the file's author).
    """
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"Model file '{p}' does not exist; check [model] file.")
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as exc:  # noqa: BLE001 - skops raises many kinds on a bad file
        raise ModelFileError(f"Model file '{p}' is not a readable skops file: {exc}") from exc
    unknown = sorted(set(untrusted) - set(trusted))
    if unknown:
        raise ModelFileError(
            f"Model file '{p}' contains types that are not trusted: {unknown}. Add them to "
            "[model] trusted only if you trust the file's author."
        )
    try:
        return sio.load(p, trusted=sorted(set(untrusted)))
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"Model file '{p}' could not be loaded with skops: {exc}") from exc


# ------------------------------------------------------------------------------ checks
def _loso_worst(ctx, params):
    metric = params.get("metric", "roc_auc")
    table = ctx["tables"]["loso"]
    rows = table[(table["metric"] == metric) & (table["site"] != POOLED)]
    if rows.empty:
        raise ValidationError(f"Check 'worst_site' asks for metric '{metric}', which LOSO did not compute.")
    worst = rows[rows["worst"]]
    if worst.empty:
        return float("nan"), {"site": None}
    return float(worst["value"].iloc[0]), {"site": str(worst["site"].iloc[0]), "metric": metric}


def _site_pred(ctx, params):
    space = params.get("space", ctx["default_space"])
    check_option(space, ("raw", "harmonized"), name="space", owner="check site_predictability")
    table = ctx["tables"]["site_predictability"]
    row = table[table["space"] == space]
    if row.empty:
        raise ValidationError(
            "Check site_predictability asks for space='harmonized' but the model does not "
            "harmonise; set [model] harmonize or use space='raw'."
        )
    return float(row["auc"].iloc[0]), {"space": space, "p_value": float(row["p_value"].iloc[0])}


def _site_effect_fraction(ctx, params):
    space = params.get("space", ctx["default_space"])
    alpha = float(params.get("alpha", 0.05))
    table = ctx["tables"]["site_effects"]
    rows = table[(table["space"] == space) & table["q_value"].notna()]
    if rows.empty:
        raise ValidationError(f"Check site_effect_fraction: no site-effect rows for space '{space}'.")
    return float(np.mean(rows["q_value"] < alpha)), {"space": space, "alpha": alpha}


def _drop(kind, key):
    def check(ctx, params):
        if key is not None and key not in params:
            raise ValidationError(f"Check 'auc_drop_{kind}' needs '{key}'.")
        stress = ctx["stress"]
        name = {"noise": "noise", "calibration": "calibration", "site_shift": "site_shift"}[kind]
        sev = float(params[key]) if key is not None else None
        value = stress.drop_at(name, sev)
        details = {"scoring": stress.scoring, "baseline": stress.baseline}
        if key is not None:
            details[key] = sev
        else:
            worst = stress.summary[stress.summary["worst"]]
            details["target_site"] = None if worst.empty else str(worst["target_site"].iloc[0])
        return value, details
    return check


def _median_distance(ctx, params):
    table = ctx["tables"]["adversarial"]
    return float(np.median(table["distance"])), {"norm": ctx["adv"]["norm"],
                                                  "scale": str(ctx["adv"]["scale"])}


def _budget_row(ctx, params, check):
    if "budget" not in params:
        raise ValidationError(f"Check '{check}' needs 'budget'.")
    table = ctx["tables"]["adversarial_budget"]
    row = table[np.isclose(table["budget"], float(params["budget"]))]
    if row.empty:
        raise ValidationError(
            f"Check '{check}' asks for budget {params['budget']}, which is not in "
            f"[adversarial] budgets {table['budget'].tolist()}; add it there."
        )
    return row.iloc[0]


def _flip_rate(ctx, params):
    row = _budget_row(ctx, params, "flip_rate")
    return float(row["flip_rate"]), {"budget": float(row["budget"]), "norm": row["norm"]}


def _adv_drop(ctx, params):
    row = _budget_row(ctx, params, "adversarial_score_drop")
    return float(row["score_drop"]), {"budget": float(row["budget"]), "norm": row["norm"]}


#: Check name -> (function(ctx, params) -> (value, details), allowed params, description).
CHECKS: dict[str, tuple[Callable, set, str]] = {
    "worst_site_auc": (lambda c, p: _loso_worst(c, {**p, "metric": "roc_auc"}), set(),
                       "leave-one-site-out ROC AUC of the worst site"),
    "worst_site": (_loso_worst, {"metric"}, "leave-one-site-out metric of the worst site"),
    "site_predictability": (_site_pred, {"space"},
                            "cross-validated AUC of predicting the site from the features"),
    "site_effect_fraction": (_site_effect_fraction, {"space", "alpha"},
                             "share of features with a significant site effect (BH q < alpha)"),
    "auc_drop_noise": (_drop("noise", "level"), {"level"}, "score drop under feature noise"),
    "auc_drop_calibration": (_drop("calibration", "factor"), {"factor"},
                             "score drop under a calibration shift"),
    "auc_drop_site_shift": (_drop("site_shift", None), set(),
                            "score drop of the worst site-shift target"),
    "median_adversarial_distance": (_median_distance, set(),
                                    "median smallest decision-flipping perturbation"),
    "flip_rate": (_flip_rate, {"budget"}, "share of decisions flipped within the budget"),
    "adversarial_score_drop": (_adv_drop, {"budget"}, "score drop under the adversarial budget"),
}


# ------------------------------------------------------------------------------- suite
def _err(path: Path, msg: str) -> ValidationError:
    return ValidationError(f"Suite '{path}': {msg}")


def _check_keys(path: Path, where: str, given: Mapping, allowed) -> None:
    """Refuse unknown keys (typos such as ``harmonise`` or ``parms``) with a suggestion."""
    allowed = sorted(allowed)
    # a typo most likely stands for a key that is not given yet ('lable' -> 'label' when
    # 'table' is there)
    unused = [k for k in allowed if k not in given] or allowed
    for key in given:
        if key in allowed:
            continue
        close = (difflib.get_close_matches(str(key), unused, n=1, cutoff=0.6)
                 or difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6))
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise _err(path, f"unknown key '{key}' in {where}.{hint} Allowed: {', '.join(allowed)}.")


def _check_type(path: Path, where: str, value, kind, what: str) -> None:
    if isinstance(kind, tuple) and kind and kind[0] is list:
        ok = isinstance(value, list) and all(isinstance(v, kind[1]) for v in value)
    else:
        ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        raise _err(path, f"{where} must be {what}. Got {value!r}.")


def load_suite(path: PathLike) -> dict:
    """Read and validate a suite TOML file; returns the parsed dict with defaults filled in."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"Suite file '{p}' does not exist; check the path.")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Suite file '{p}' is not valid TOML: {exc}") from exc
    unknown = set(raw) - _SECTIONS
    if unknown:
        _check_keys(p, "the suite (sections)", {k: None for k in sorted(unknown)}, _SECTIONS)
    for sec in ("data", "model", "checks"):
        if sec not in raw:
            raise _err(p, f"missing [{sec}] section.")
    for sec in _SECTIONS & set(raw):
        if not isinstance(raw[sec], Mapping):
            raise _err(p, f"[{sec}] must be a table (a [{sec}] header with keys under it).")
    if "kind" in raw["model"]:
        return _load_image_suite(p, raw)
    data = dict(raw["data"])
    _check_keys(p, "[data]", data, _DATA_KEYS)
    for key in ("table", "label", "site"):
        if key not in data:
            raise _err(p, f"[data] needs '{key}'.")
    for key in ("table", "label", "site", "id", "stability", "sep", "decimal"):
        if key in data:
            _check_type(p, f"[data] {key}", data[key], str, "a string")
    if "covariates" in data:
        _check_type(p, "[data] covariates", data["covariates"], (list, str),
                    'a list of column names such as ["age", "sex"]')
    if "features" in data and not isinstance(data["features"], str):
        _check_type(p, "[data] features", data["features"], (list, str),
                    "a regex string or a list of column names")
    model = dict(raw["model"])
    _check_keys(p, "[model]", model, _MODEL_KEYS)
    if ("spec" in model) == ("file" in model):
        raise _err(p, "[model] needs exactly one of 'spec' (a built model) or 'file' (a skops file).")
    if "file" in model and not isinstance(model.get("trusted", None), list):
        raise _err(p, "[model] file needs 'trusted', the explicit list of types to trust "
                      "(use [] when the file holds only skops' default types).")
    if "spec" in model:
        check_option(model["spec"], tuple(MODEL_SPECS), name="spec", owner=f"[model] of suite '{p}'")
    if "params" in model and not isinstance(model["params"], Mapping):
        raise _err(p, "[model] params must be a table such as { C = 0.1 }. "
                      f"Got {model['params']!r}.")
    if "params" in model and "file" in model:
        raise _err(p, "[model] params only apply to 'spec' (a loaded model is used as saved).")
    if model.get("harmonize") not in (None, "combat"):
        raise _err(p, f"[model] harmonize must be \"combat\" or absent. Got {model['harmonize']!r}.")
    settings = {**_SETTINGS, **raw.get("settings", {})}
    stress = {**_STRESS, **raw.get("stress", {})}
    adv = {**_ADVERSARIAL, **raw.get("adversarial", {})}
    for name, given, allowed in (("settings", raw.get("settings", {}), _SETTINGS),
                                 ("stress", raw.get("stress", {}), _STRESS),
                                 ("adversarial", raw.get("adversarial", {}), _ADVERSARIAL)):
        _check_keys(p, f"[{name}]", given, allowed)
    check_number(settings["test_size"], name="test_size", owner=f"[settings] of '{p}'", low=0,
                 high=0.9, low_inclusive=False)
    for key in ("n_bootstrap", "n_permutations", "n_repeats", "cv", "random_state"):
        check_number(settings[key], name=key, owner=f"[settings] of '{p}'", integer=True, low=0)
    checks = _bounded_checks(p, raw["checks"], {n: c[1] for n, c in CHECKS.items()})
    return {"path": p, "data": data, "model": model, "settings": settings, "stress": stress,
            "adversarial": adv, "checks": checks}


def _select_features(df: pd.DataFrame, data: dict, path: Path) -> list[str]:
    reserved = {data["label"], data["site"], *data.get("covariates", []), data.get("id", "")}
    spec = data.get("features")
    if spec is None:
        # numeric columns, and text columns that hold numbers (a stray "n/a" or a decimal
        # comma must be reported, not make the feature silently disappear)
        cols = [c for c in df.columns if c not in reserved and (
            pd.api.types.is_numeric_dtype(df[c]) or _holds_numbers(df[c]))]
    elif isinstance(spec, str):
        try:
            pat = re.compile(spec)
        except re.error as exc:
            raise _err(path, f"[data] features {spec!r} is not a valid regex: {exc}.") from exc
        cols = [c for c in df.columns if c not in reserved and pat.search(str(c))]
    else:
        check_columns(df, spec, source=f"Suite '{path}': the table", what="[data] features column")
        cols = list(spec)
    if not cols:
        raise _err(path, f"[data] features {spec!r} matches no column of the table.")
    return cols


def _holds_numbers(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return False
    text = s.dropna().astype(str).str.strip()
    text = text[text != ""]
    return bool(len(text)) and bool(pd.to_numeric(text, errors="coerce").notna().mean() >= 0.5)


def _check_model_features(model, features: list[str], path: Path) -> list[str]:
    """The features in the order a loaded model expects; refuse a model fitted on others."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        names = [str(n) for n in names]
        missing = [n for n in names if n not in features]
        extra = [f for f in features if f not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"the model needs {short_list(missing)}, which [data] features "
                             "does not select")
            if extra:
                parts.append(f"[data] features selects {short_list(extra)}, which the model "
                             "was not fitted on")
            raise _err(path, f"the features do not match the model: {'; '.join(parts)}. Set "
                             "[data] features to the model's features "
                             f"({len(names)}: {short_list(names)}).")
        return names
    n_in = getattr(model, "n_features_in_", None)
    if n_in is not None and int(n_in) != len(features):
        raise _err(path, f"the model was fitted on {int(n_in)} features but [data] features "
                         f"selects {len(features)} ({short_list(features)}); select the "
                         "model's features, in the order it was fitted on.")
    return features


def _check_scores(model, path: Path) -> None:
    """Suites score with ROC AUC and calibration: the model must give scores, not only labels."""
    if not (hasattr(model, "predict_proba") or hasattr(model, "decision_function")):
        raise _err(path, f"the model {type(model).__name__} only predicts labels (it has "
                         "neither predict_proba nor decision_function); suites need scores. "
                         "Save a classifier with predict_proba (e.g. CalibratedClassifierCV "
                         "around it).")


@dataclass
class SuiteResult:
    """Outcome of :func:`run_suite`.

    Attributes
    ----------
    checks : DataFrame
        ``name``, ``value``, ``op`` (``min``/``max``), ``threshold``, ``passed``,
        ``description``, ``details`` (JSON text).
    tables : dict of str -> DataFrame
        The tidy tables: ``loso``, ``loso_predictions``, ``calibration_curve`` (binary
        classifiers with probabilities), ``site_predictability``,
        ``site_effects``, ``stress``, ``stress_scores``, ``adversarial``,
        ``adversarial_budget``.
    info : dict
        Suite, data, model and settings metadata (what ``results.json`` holds besides checks).
    """

    checks: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    info: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return bool(self.checks["passed"].all())

    @property
    def verdict(self) -> str:
        """``"pass"`` or ``"fail"``."""
        return "pass" if self.passed else "fail"

    @property
    def failed(self) -> list[str]:
        """Names of the failed checks."""
        return self.checks.loc[~self.checks["passed"], "name"].tolist()

    def to_json(self) -> dict:
        """The content of ``results.json`` (see the module docs for the layout)."""
        checks = []
        for row in self.checks.itertuples(index=False):
            checks.append({"name": row.name, "value": _num(row.value), "op": row.op,
                           "threshold": row.threshold, "passed": bool(row.passed),
                           "description": row.description, "details": json.loads(row.details)})
        return {
            "schema": RESULTS_SCHEMA,
            **self.info,
            "checks": checks,
            "failed": self.failed,
            "verdict": self.verdict,
            "tables": {name: f"{name}.csv" for name in self.tables},
        }

    def save(self, out_dir: PathLike, *, force: bool = False) -> Path:
        """Write the result set: every table as ``<name>.csv``, ``checks.csv`` and ``results.json``.

        The set is written into a temporary folder next to ``out_dir`` and moved into place
        whole, so an interrupted run leaves either the old set or the new one, never a mix.
        An existing result set (a folder with ``results.json``) is replaced only with
        ``force=True``; an existing empty folder is used; a folder holding other files is
        refused (even with ``force``), so that no unrelated file is ever deleted.

        Parameters
        ----------
        out_dir : str or path-like
            The result folder.
        force : bool, default=False
            Replace an existing result set.

        Returns
        -------
        pathlib.Path
            ``out_dir``.
        """
        out = Path(out_dir)
        _check_out_dir(out, force=force)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty folder made by the user: take its place
        remove_stale_temporaries(out)  # left by a run killed while writing
        with atomic_directory(out, force=force) as tmp:
            for name, table in self.tables.items():
                write_table(table, tmp / f"{name}.csv")
            write_table(self.checks, tmp / "checks.csv")
            (tmp / "results.json").write_text(
                json.dumps(to_jsonable(self.to_json()), indent=2) + "\n", encoding="utf-8")
        return out

    def raise_for_failure(self) -> None:
        """Raise :class:`~sitekit.exceptions.CheckFailedError` listing the failed checks."""
        if self.passed:
            return
        lines = []
        for row in self.checks[~self.checks["passed"]].itertuples(index=False):
            bound = ">=" if row.op == "min" else "<="
            lines.append(f"{row.name} = {_fmt(row.value)} (needs {bound} {row.threshold})")
        raise CheckFailedError(
            f"{len(lines)} robustness check(s) failed: " + "; ".join(lines), result=self
        )


def _num(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def _fmt(v) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.4g}"


def _check_out_dir(out: Path, *, force: bool) -> None:
    """Refuse an output folder that cannot take a result set (before any work is done)."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"Output '{out}' exists and is not a folder; choose a folder path.")
    check_writable(out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / "results.json").exists():
        raise OutputExistsError(
            f"Output folder '{out}' holds other files and no results.json; a result set "
            "replaces its whole folder, so choose a new or empty folder."
        )
    if not force:
        raise OutputExistsError(
            f"Output directory '{out}' already holds results.json; pass --force "
            "(force=True) to replace it."
        )


#: Cases per HopSkipJump call in a suite (progress is reported after each chunk).
ATTACK_CHUNK = 10


def _black_box_attack(model, X, y, *, budgets, norm, scale, scoring, random_state, attack,
                      step):
    """HopSkipJump distances in chunks of cases (with progress) and the budget table from them.

    The distance unit is resolved once on all the attacked cases, so chunking does not change
    it; each chunk is attacked with its own seed (``random_state + chunk``) and its start
    points are drawn from its own cases.  The budget table follows
    :func:`~sitekit.robustness.adversarial.adversarial_budget` for black-box models (the
    cases flippable within a budget are replaced by their adversarial examples), computed
    from this one attack instead of a second one.
    """
    units = resolve_scale(scale, X)
    n = len(X)
    frames, advs = [], []
    for k, start in enumerate(range(0, n, ATTACK_CHUNK)):
        part = X.iloc[start:start + ATTACK_CHUNK]
        table, x_adv = minimal_perturbation(model, part, norm=norm, method="hopskipjump",
                                            scale=units, random_state=random_state + k,
                                            return_adversarial=True, **attack)
        frames.append(table)
        advs.append(x_adv)
        step(f"adversarial: {min(start + ATTACK_CHUNK, n)}/{n} cases attacked (HopSkipJump)")
    table = pd.concat(frames)
    X_adv = pd.concat(advs)
    scorer = get_scorer(scoring) if isinstance(scoring, str) else scoring
    yv = np.asarray(y)

    def score(frame):
        return float(scorer(model, frame if hasattr(model, "feature_names_in_")
                            else frame.to_numpy(dtype=float), yv))

    baseline = score(X)
    rows = []
    for eps in budgets:
        eps = float(check_number(eps, name="budgets", owner="[adversarial]", low=0))
        take = (table["distance"] <= eps).to_numpy()
        X_att = X.copy()
        X_att.loc[take] = X_adv.loc[take].to_numpy()
        value = score(X_att)
        rows.append({"budget": eps, "norm": norm, "method": "hopskipjump", "score": value,
                     "baseline": baseline, "score_drop": baseline - value,
                     "flip_rate": float(np.mean(table["distance"].to_numpy() <= eps))})
    return table, pd.DataFrame(rows)


def _bounded_checks(p: Path, given: Mapping, allowed: Mapping) -> dict:
    """Parse ``[checks]``: each check a table with exactly one of min/max plus its parameters.

    ``allowed`` maps every known check name to the names of its parameters; an unknown
    check, an unknown parameter or a missing bound is an error naming the check.
    """
    checks = {}
    for name, spec in given.items():
        check_option(name, tuple(allowed), name="check", owner=f"suite '{p}'")
        if not isinstance(spec, Mapping):
            raise _err(p, f"check '{name}' must be a table such as {{ min = 0.7 }}.")
        spec = dict(spec)
        _check_keys(p, f"check '{name}'", spec, set(allowed[name]) | {"min", "max"})
        bounds = [k for k in ("min", "max") if k in spec]
        if len(bounds) != 1:
            raise _err(p, f"check '{name}' needs exactly one of 'min' or 'max'.")
        op = bounds[0]
        threshold = check_number(spec.pop(op), name=op, owner=f"check '{name}'")
        checks[name] = {"op": op, "threshold": float(threshold), "params": spec}
    if not checks:
        raise _err(p, "[checks] is empty; name at least one check.")
    return checks


def _load_image_suite(p: Path, raw: Mapping) -> dict:
    """The image-model form of :func:`load_suite` (``[model] kind`` is given)."""
    unknown = set(raw) - {"data", "model", "settings", "checks"}
    if unknown:
        raise _err(p, f"section(s) {sorted(unknown)} do not apply to an image-model suite "
                      "([model] kind = ...); it takes [data], [model], [settings], [checks].")
    data, model = dict(raw["data"]), dict(raw["model"])
    _check_keys(p, "[data]", data, _IMAGE_DATA_KEYS)
    if "manifest" not in data:
        raise _err(p, "[data] needs 'manifest' (a manifest CSV: image, mask, site, subject_id) "
                      "for an image-model suite.")
    _check_keys(p, "[model]", model, _IMAGE_MODEL_KEYS)
    check_option(model["kind"], MODEL_KINDS, name="kind", owner=f"[model] of suite '{p}'")
    given = dict(raw.get("settings", {}))
    _check_keys(p, "[settings]", given, _IMAGE_SETTINGS)
    settings = {**_IMAGE_SETTINGS, **given}
    for key in _IMAGE_SETTINGS:
        check_number(settings[key], name=key, owner=f"[settings] of '{p}'", integer=True, low=0)
    checks = _bounded_checks(p, raw["checks"], {n: c[0] for n, c in IMAGE_CHECKS.items()})
    return {"path": p, "kind": "image", "data": data, "model": model, "settings": settings,
            "checks": checks}


def _run_image_suite(suite: dict, step: Callable[[str], None]) -> SuiteResult:
    p: Path = suite["path"]
    manifest = (p.parent / suite["data"]["manifest"]).resolve()
    st = suite["settings"]
    step("model")
    model = segmenter_from_config(suite["model"], base_dir=p.parent)
    step("image checks (evaluation per site, blur sweep, attacks)")
    checks = run_image_checks(model, manifest, suite["checks"], base_dir=manifest.parent,
                              n_bootstrap=int(st["n_bootstrap"]), random_state=int(st["random_state"]))
    checks["details"] = [json.dumps(to_jsonable(suite["checks"][n]["params"])) for n in checks["name"]]
    info = {
        "sitekit_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "suite": {"path": str(p), "sha256": file_hash(p)},
        "data": {"manifest": str(manifest), "sha256": file_hash(manifest)},
        "model": {**to_jsonable(suite["model"]), "estimator": repr(model)},
        "settings": st,
    }
    return SuiteResult(checks=checks, tables={}, info=info)


def run_suite(
    path: PathLike,
    *,
    out_dir: PathLike | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SuiteResult:
    """Run a robustness suite file and evaluate its checks.

    Steps: read the table; split it into a training and a test part stratified by site and
    label (``[settings] test_size``; a model loaded from a file is not retrained and is
    evaluated on every row); leave-one-site-out validation of the model recipe (harmoniser
    fitted on the training sites only); site predictability and per-feature site effects on
    the raw features and, with ``harmonize = "combat"``, on ComBat-harmonised features;
    stress tests and adversarial distances of the fitted model on the test part, in the
    model's input space (after harmonisation).

    The stress baseline (the score every drop is measured from) is the score of the fitted
    model on the suite's own test split, not a score measured elsewhere.  Before any work
    the suite is checked against its data and model: unknown keys (typos), missing
    columns, feature cells that are not numbers, a loaded model fitted on other features
    or one that gives no scores are errors.  Rows with an empty cell in a used column are
    dropped, with a :class:`~sitekit.exceptions.DataWarning` saying how many.

    Parameters
    ----------
    path : str or path-like
        The suite TOML file (paths inside are relative to it).
    out_dir : str or path-like, default=None
        When given, write the tables and ``results.json`` there (see :meth:`SuiteResult.save`).
    force : bool, default=False
        Replace an existing ``results.json``.
    progress : callable, default=None
        Called as ``progress(message)`` with the name of each step as it starts and with
        messages within long steps (rows dropped for empty cells; ``"adversarial: 20/50
        cases attacked (HopSkipJump)"`` after each chunk of a black-box attack).  The
        command line prints them.

    Returns
    -------
    SuiteResult
        Never raises on failed checks: call :meth:`SuiteResult.raise_for_failure`.
    """
    suite = load_suite(path)
    p: Path = suite["path"]
    if out_dir is not None:
        _check_out_dir(Path(out_dir), force=force)
    step = progress or (lambda message: None)
    if suite.get("kind") == "image":
        result = _run_image_suite(suite, step)
        if out_dir is not None:
            result.save(out_dir, force=force)
        return result
    data, mcfg, st, scfg, acfg = (suite["data"], suite["model"], suite["settings"],
                                  suite["stress"], suite["adversarial"])
    seed = int(st["random_state"])
    table_path = (p.parent / data["table"]).resolve()
    cov_cols = list(data.get("covariates", []))
    read_opts = {k: data[k] for k in ("sep", "decimal") if k in data}
    # site and id as written ('01' stays '01'); categorical covariates are text anyway
    try:
        df = read_table(table_path, text_columns=[data["site"], data.get("id", data["site"])],
                        **read_opts)
    except CorruptFileError as exc:
        if "-separated" not in str(exc):
            raise
        raise CorruptFileError(f"{exc} In a suite file: [data] sep = \";\" (and decimal = "
                               "\",\" for decimal commas).") from exc
    source_name = f"Suite '{p}': table '{table_path}'"
    check_columns(df, [data["label"], data["site"]], source=source_name,
                  what="[data] label/site column")
    check_columns(df, cov_cols, source=source_name, what="[data] covariates column")
    features = _select_features(df, data, p)

    # ---- model: checked against the data before any work
    if "spec" in mcfg:
        model = build_model(mcfg["spec"], mcfg.get("params"))
        source = "spec"
    else:
        model = load_model((p.parent / mcfg["file"]).resolve(), trusted=list(mcfg["trusted"]))
        source = "skops"
        features = _check_model_features(model, features, p)
    if not is_classifier(model):
        raise _err(p, f"the model {type(model).__name__} is not a classifier; suites test classifiers.")
    _check_scores(model, p)
    harmonizer = None
    if mcfg.get("harmonize") == "combat":
        harmonizer = ComBat()

    X_all = numeric_columns(df, features, source=source_name,
                            decimal_fix="""set [data] decimal = "," (and sep = ";")""")
    used = features + [data["label"], data["site"]] + cov_cols
    keep = X_all.notna().all(axis=1) & df[used[len(features):]].notna().all(axis=1)
    n_dropped = int((~keep).sum())
    if n_dropped:
        empty = [c for c in used if (X_all[c] if c in X_all else df[c]).isna().any()]
        message = (f"dropped {n_dropped} of {len(df)} rows with empty cells (in "
                   f"{short_list(empty)}); the suite uses the remaining {int(keep.sum())}.")
        warnings.warn(f"Suite '{p}': {message}", DataWarning, stacklevel=2)
        step(f"data: {message}")
    if int(keep.sum()) == 0:
        raise _err(p, f"every row of '{table_path}' has an empty cell in {short_list(used)}.")
    df = df.loc[keep].reset_index(drop=True)
    X = X_all.loc[keep].reset_index(drop=True)
    y = df[data["label"]].to_numpy()
    sites = df[data["site"]].astype(str).to_numpy()
    cov = df[cov_cols] if cov_cols else None

    tables: dict[str, pd.DataFrame] = {}
    # ---- leave-one-site-out
    step("leave-one-site-out")
    loso, preds = leave_one_site_out(model, X, y, sites=sites, harmonizer=harmonizer,
                                     covariates=cov, n_bootstrap=int(st["n_bootstrap"]),
                                     random_state=seed, return_predictions=True)
    tables["loso"] = loso
    if "y_score" in preds and preds.attrs.get("has_proba") and len(preds.attrs["classes"]) == 2:
        tables["calibration_curve"] = calibration_curve_by_site(preds)
    preds.attrs = {}
    tables["loso_predictions"] = preds.assign(subject=df[data["id"]]) if data.get("id") else preds
    unseen = "adapt" if harmonizer is not None and hasattr(harmonizer, "adapt") else (
        "standardize" if harmonizer is not None else None)

    # ---- site leakage
    step("site leakage")
    spaces = {"raw": X}
    if harmonizer is not None:
        h_all = clone(harmonizer).fit(X, sites=sites, covariates=cov)
        spaces["harmonized"] = h_all.transform(X, sites=sites, covariates=cov)
    pred_rows, eff_rows = [], []
    for space, Xs in spaces.items():
        res = site_predictability(Xs, sites, cv=int(st["cv"]),
                                  n_permutations=int(st["n_permutations"]), random_state=seed)
        pred_rows.append(res.to_frame().assign(space=space))
        eff_rows.append(site_effects(Xs, sites).assign(space=space))
    tables["site_predictability"] = pd.concat(pred_rows, ignore_index=True)
    tables["site_effects"] = pd.concat(eff_rows, ignore_index=True)

    # ---- fitted model on a training split; stress + adversarial on the test split
    step("fit")
    if source == "spec":
        strat = pd.Series(sites).str.cat(pd.Series(y).astype(str), sep="|")
        if strat.value_counts().min() < 2:
            strat = pd.Series(sites)
        idx_tr, idx_te = train_test_split(np.arange(len(df)), test_size=float(st["test_size"]),
                                          random_state=seed, stratify=strat)
    else:
        idx_tr, idx_te = np.arange(len(df)), np.arange(len(df))
    X_tr, X_te = X.iloc[idx_tr], X.iloc[idx_te]
    cov_tr = cov.iloc[idx_tr] if cov is not None else None
    cov_te = cov.iloc[idx_te] if cov is not None else None
    if harmonizer is not None:
        h = clone(harmonizer).fit(X_tr, sites=sites[idx_tr], covariates=cov_tr)
        X_te = h.transform(X_te, sites=sites[idx_te], covariates=cov_te)
        X_tr = h.transform(X_tr, sites=sites[idx_tr], covariates=cov_tr)
    if source == "spec":
        model.fit(X_tr, y[idx_tr])
    y_te, s_te = y[idx_te], sites[idx_te]

    stability = None
    if data.get("stability"):
        stability = read_table((p.parent / data["stability"]).resolve())
    check_option(scfg["noise_unit"], ("sd", "within"), name="noise_unit", owner="[stress]")
    check_option(acfg["scale"], ("std", "within", "none"), name="scale", owner="[adversarial]")
    if stability is None and "within" in (scfg["noise_unit"], acfg["scale"]):
        raise _err(p, "'within' units need [data] stability, a table with 'feature' and "
                      "'within_sd' or 'icc' (e.g. the stability table of "
                      "'sitekit robustness features').")
    adv_scale = {"std": "std", "within": stability, "none": None}[acfg["scale"]]

    step("stress")
    perts = []
    if scfg["noise_levels"]:
        perts.append(FeatureNoise(levels=tuple(float(v) for v in scfg["noise_levels"]),
                                  unit=scfg["noise_unit"]))
    if scfg["calibration_factors"]:
        perts.append(CalibrationShift(factors=tuple(float(v) for v in scfg["calibration_factors"]),
                                      columns=scfg["calibration_columns"]))
    if scfg["site_shift"]:
        perts.append(SiteShift())
    stress = stress_test(model, X_te, y_te, sites=s_te, perturbations=perts,
                         scoring=scfg["scoring"], n_repeats=int(st["n_repeats"]),
                         stability=stability, random_state=seed)
    tables["stress"] = stress.summary
    tables["stress_scores"] = stress.scores

    step("adversarial")
    exact = acfg["method"] != "hopskipjump" and linear_decision(model, X_te.shape[1]) is not None
    # the exact method is cheap: every test case; black-box attacks: at most max_cases
    n_adv = len(idx_te) if exact else min(len(idx_te), int(acfg["max_cases"]))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(idx_te), size=n_adv, replace=False))
    X_adv_in = X_te.iloc[pick]
    attack = {"max_iter": int(acfg["max_iter"]), "max_eval": int(acfg["max_eval"])}
    if exact:
        step(f"adversarial: exact distances of {n_adv} cases (linear decision function)")
        adv = minimal_perturbation(model, X_adv_in, norm=acfg["norm"], method=acfg["method"],
                                   scale=adv_scale, random_state=seed, **attack)
        budget_table = adversarial_budget(
            model, X_adv_in, y_te[pick], budgets=acfg["budgets"], norm=acfg["norm"],
            scale=adv_scale, method=acfg["method"], scoring=stress.scoring,
            random_state=seed, **attack)
    else:
        adv, budget_table = _black_box_attack(
            model, X_adv_in, y_te[pick], budgets=acfg["budgets"], norm=acfg["norm"],
            scale=adv_scale, scoring=stress.scoring, random_state=seed, attack=attack,
            step=step)
    tables["adversarial"] = adv.assign(site=s_te[pick]).reset_index(names="row")
    tables["adversarial_budget"] = budget_table

    # ---- checks
    step("checks")
    ctx = {"tables": tables, "stress": stress, "adv": acfg,
           "default_space": "harmonized" if harmonizer is not None else "raw"}
    rows = []
    for name, chk in suite["checks"].items():
        fn, _, desc = CHECKS[name]
        value, details = fn(ctx, chk["params"])
        ok = bool(np.isfinite(value)) and (
            value >= chk["threshold"] if chk["op"] == "min" else value <= chk["threshold"])
        rows.append({"name": name, "value": value, "op": chk["op"],
                     "threshold": chk["threshold"], "passed": ok, "description": desc,
                     "details": json.dumps(to_jsonable({**chk["params"], **details}))})
    checks = pd.DataFrame(rows)
    info = {
        "sitekit_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "suite": {"path": str(p), "sha256": file_hash(p)},
        "data": {"table": str(table_path), "sha256": file_hash(table_path),
                 "n_samples": len(df), "n_rows_read": len(df) + n_dropped,
                 "n_dropped": n_dropped, "n_features": len(features), "features": features,
                 "label": data["label"], "site": data["site"], "covariates": cov_cols,
                 "sites": {str(k): int(v) for k, v in pd.Series(sites).value_counts(
                     sort=False).items()},
                 "n_train": len(idx_tr), "n_test": len(idx_te),
                 "stability": data.get("stability")},
        "model": {"source": source, "spec": mcfg.get("spec"), "file": mcfg.get("file"),
                  "params": mcfg.get("params", {}), "harmonize": mcfg.get("harmonize"),
                  "unseen_sites": unseen, "estimator": repr(model)},
        "settings": {**st, "stress": scfg, "adversarial": acfg},
        "summary": {
            "worst_site": loso.attrs["worst_site"],
            "stress_baseline": stress.baseline,
            "stress_baseline_data": (f"the fitted model on the suite's own test split "
                                     f"({len(idx_te)} rows of '{table_path.name}')"),
            "scoring": stress.scoring,
            "site_predictability": dict(zip(tables["site_predictability"]["space"],
                                            tables["site_predictability"]["auc"].astype(float),
                                            strict=True)),
            "median_adversarial_distance": _num(float(np.median(adv["distance"]))),
        },
    }
    result = SuiteResult(checks=checks, tables=tables, info=info)
    if out_dir is not None:
        result.save(out_dir, force=force)
    return result
