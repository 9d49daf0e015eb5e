"""Diagnostics of a fitted harmoniser: what a report shows, as plain JSON, and its reader.

``sitekit harmonize run`` writes them next to the harmonised table; ``sitekit report``
reads them back with :func:`read_diagnostics`.  One schema, defined here:

=====================  ===================================================================
key                    content
=====================  ===================================================================
``schema``             ``"sitekit.harmonize.diagnostics"``
``schema_version``     1
``tool``               the command that wrote them (``"sitekit harmonize run"``)
``sitekit_version``    version that wrote them
``method``             ``"combat"``, ``"covbat"`` or ``"nested"``
``input``              absolute path of the input table; ``input_sha256`` its SHA-256
``outputs``            ``{"table": ..., "model": ...}`` with their SHA-256 (``*_sha256``);
                       a result set is complete when these match the files
``site_col``           the site column (nested: the first batch column of the order)
``covariates``         covariate columns; ``covariate_columns`` the design columns
``features``           the harmonised feature columns
``params``             the estimator's parameters
``sites``              site labels in the model's order
``priors``             one record per site (:attr:`ComBat.priors_`)
``estimates``          ``gamma_hat``, ``delta_hat``, ``gamma_star``, ``delta_star``
                       (sites x features; null where not estimated)
``adjusted_cells``     number of (site, feature) cells adjusted
``n_components``,      CovBat only
``explained_variance_ratio``
``batch_cols``,        NestedComBat only (``steps``: one ComBat block per step)
``order``, ``order_scores``, ``steps``
=====================  ===================================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit._version import __version__
from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError
from sitekit.harmonize._combat import ComBat
from sitekit.harmonize._covbat import CovBat
from sitekit.harmonize._nested import NestedComBat
from sitekit.io import file_hash

__all__ = ["harmonization_diagnostics", "read_diagnostics", "fit_summary", "DIAGNOSTICS_SCHEMA"]

DIAGNOSTICS_SCHEMA = "sitekit.harmonize.diagnostics"
_SCHEMA_VERSION = 1
_PRIOR_SUMMARY = ["site", "n_samples", "n_features_used", "gamma_bar", "tau2", "eb", "mean_only"]


def _combat_block(model: ComBat) -> dict:
    return {
        "covariate_columns": list(model.covariate_columns_),
        "params": to_jsonable(model.get_params()),
        "sites": to_jsonable(list(model.sites_)),
        "priors": to_jsonable(model.priors_),
        "estimates": {
            "gamma_hat": to_jsonable(np.asarray(model.gamma_hat_, dtype=float)),
            "delta_hat": to_jsonable(np.asarray(model.delta_hat_, dtype=float)),
            "gamma_star": to_jsonable(np.asarray(model.gamma_star_, dtype=float)),
            "delta_star": to_jsonable(np.asarray(model.delta_star_, dtype=float)),
        },
        "adjusted_cells": int(np.asarray(model.adjusted_).sum()),
        "method": "combat",
    }


def harmonization_diagnostics(model, *, input_path: PathLike | None = None, site_col=None,
                              covariates=(), features=None, outputs: dict | None = None) -> dict:
    """Plain-JSON diagnostics of a fitted harmoniser (the schema of this module).

    Parameters
    ----------
    model : ComBat, CovBat or NestedComBat
        A fitted harmoniser.
    input_path : str or path-like, optional
        The table it was fitted on (recorded with its SHA-256).
    site_col : str, optional
        The site column of that table.
    covariates : sequence of str, default=()
        Its covariate columns.
    features : sequence of str, optional
        The harmonised columns (default: the model's feature names).
    outputs : dict, optional
        ``{"table": path, "model": path}`` of the result set (recorded with their SHA-256).

    Returns
    -------
    dict
        JSON-serialisable diagnostics.

    Examples
    --------
    >>> import numpy as np
    >>> from sitekit.harmonize import ComBat, harmonization_diagnostics
    >>> X = np.random.default_rng(0).normal(size=(40, 3))
    >>> d = harmonization_diagnostics(ComBat().fit(X, sites=[0, 1] * 20))
    >>> d["method"], len(d["priors"])
    ('combat', 2)
    """
    if isinstance(model, CovBat):
        diag = _combat_block(model.combat_)
        diag.update(method="covbat", params=to_jsonable(model.get_params()),
                    n_components=int(model.n_components_),
                    explained_variance_ratio=to_jsonable(model.explained_variance_ratio_))
    elif isinstance(model, NestedComBat):
        steps = [dict(_combat_block(step), site_col=col) for col, step in zip(model.order_, model.steps_)]
        diag = dict(steps[0])
        diag.update(method="nested", params=to_jsonable(model.get_params()),
                    batch_cols=list(model.batch_cols_), order=list(model.order_),
                    order_scores=to_jsonable(model.order_scores_), steps=steps)
        site_col = site_col or model.order_[0]
    elif isinstance(model, ComBat):
        diag = _combat_block(model)
    else:
        raise ValidationError(
            f"Diagnostics are for ComBat, CovBat or NestedComBat models; got {type(model).__name__}."
        )
    names = getattr(model, "feature_names_in_", None)
    if features is None:
        features = [] if names is None else [str(f) for f in names]
    head = {
        "schema": DIAGNOSTICS_SCHEMA,
        "schema_version": _SCHEMA_VERSION,
        "tool": "sitekit harmonize run",
        "sitekit_version": __version__,
        "input": None if input_path is None else str(Path(input_path).resolve()),
        "input_sha256": None if input_path is None else file_hash(input_path),
        "site_col": site_col,
        "covariates": list(covariates),
        "features": list(features),
    }
    if outputs:
        head["outputs"] = {k: str(Path(v).name) for k, v in outputs.items()}
        head["outputs_sha256"] = {k: _hash_output(v) for k, v in outputs.items()}
    return head | diag


def _hash_output(path: PathLike) -> str | None:
    return file_hash(path) if Path(path).exists() else None


def read_diagnostics(path: PathLike) -> dict:
    """Read and check a diagnostics file written by ``sitekit harmonize run``.

    Parameters
    ----------
    path : str or path-like
        The ``*.diagnostics.json`` (or ``diagnostics.json``) file.

    Returns
    -------
    dict
        The diagnostics (see the schema in this module's docstring); files written by
        sitekit 0.1 (no ``schema`` key) are read too.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    CorruptFileError
        Not JSON, not a diagnostics file, or of a newer schema version.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Diagnostics file '{p}' does not exist; check the path.")
    try:
        diag = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Diagnostics file '{p}' is not valid JSON ({exc}); run "
                               "'sitekit harmonize run' again.") from exc
    if not isinstance(diag, dict) or "harmonize" not in str(diag.get("tool", "")):
        raise CorruptFileError(f"'{p}' is not a diagnostics file of 'sitekit harmonize run'.")
    version = diag.get("schema_version", 1)
    if not isinstance(version, int) or version > _SCHEMA_VERSION:
        raise CorruptFileError(f"Diagnostics file '{p}' has schema version {version!r}, newer than "
                               f"this sitekit ({__version__}) reads; upgrade sitekit.")
    for key, kind in (("priors", list), ("features", list), ("sites", list)):
        if key in diag and diag[key] is not None and not isinstance(diag[key], kind):
            raise CorruptFileError(f"Diagnostics file '{p}': '{key}' is not a list.")
    return diag


def fit_summary(model) -> pd.DataFrame:
    """A short per-site table of a fitted harmoniser (what the CLI prints).

    Parameters
    ----------
    model : ComBat, CovBat or NestedComBat

    Returns
    -------
    pandas.DataFrame
        ComBat/CovBat: ``site, n_samples, n_features_used, gamma_bar, tau2, eb, mean_only``;
        NestedComBat: its ``order_scores_``.
    """
    if isinstance(model, NestedComBat):
        return model.order_scores_
    if isinstance(model, CovBat):
        model = model.combat_
    return model.priors_[_PRIOR_SUMMARY]
