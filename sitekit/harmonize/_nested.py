"""Nested / OPNested ComBat: sequential ComBat over several batch variables.

Horng et al. (2022) harmonise over several batch variables (manufacturer, reconstruction,
acquisition protocol ...) by running ComBat once per variable, one after the other, and
choose the order that leaves the smallest batch effect ("OPNested ComBat").  This module
composes the public :class:`~sitekit.harmonize.ComBat`: every step is an ordinary fitted
ComBat model with the batch variable of that step as its site label.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from sitekit._json import to_jsonable
from sitekit._stats import kruskal_fdr
from sitekit._validation import check_bool, check_number, check_option
from sitekit.exceptions import ValidationError
from sitekit.harmonize._combat import ComBat, combat_from_content
from sitekit.harmonize._covbat import _take
from sitekit.harmonize._persistence import ModelFile, PersistenceMixin, register_kind

__all__ = ["NestedComBat", "batch_effect_test"]

_MAX_EXHAUSTIVE = 4  # 4! = 24 orders; more batch variables use the greedy search


def batch_effect_test(X, batches: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """Per-feature Kruskal-Wallis test of every batch variable, Benjamini-Hochberg FDR.

    The test and its conventions (NaN cells left out, tie-corrected H, untestable features
    NaN and outside the FDR family) are those of ``sitekit._stats.kruskal_fdr``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Feature values; NaN cells are left out of that feature's test.
    batches : pandas.DataFrame of shape (n_samples, n_batch_cols)
        One column per batch variable.
    alpha : float, default=0.05
        FDR level for the ``significant`` column (BH within each batch variable).

    Returns
    -------
    pandas.DataFrame
        One row per (batch variable, feature), columns ``batch_col``, ``feature``,
        ``statistic`` (Kruskal-Wallis H), ``p_value``, ``q_value`` (BH-adjusted within the
        batch variable), ``significant`` (``q_value < alpha``).  Features that are constant
        or have fewer than two groups with data are not tested: NaN statistic, p- and q-value,
        not significant.
    """
    names = list(X.columns) if isinstance(X, pd.DataFrame) else None
    arr = np.asarray(X, dtype=float)
    if arr.ndim != 2:
        raise ValidationError(f"X must be 2-dimensional; got an array of shape {arr.shape}.")
    if names is None:
        names = [f"x{g}" for g in range(arr.shape[1])]
    if len(batches) != arr.shape[0]:
        raise ValidationError(
            f"'batches' has {len(batches)} rows but X has {arr.shape[0]}; pass one row per sample."
        )
    rows = []
    for col in batches.columns:
        res = kruskal_fdr(arr, batches[col].to_numpy())
        rows.append(pd.DataFrame({
            "batch_col": str(col), "feature": names, "statistic": res["statistic"].to_numpy(),
            "p_value": res["p_value"].to_numpy(), "q_value": res["q_value"].to_numpy(),
            "significant": (res["q_value"] < alpha).to_numpy(),
        }))
    return pd.concat(rows, ignore_index=True)


def _check_X(X):
    """X as a DataFrame or 2-D array; sparse input is refused the scikit-learn way."""
    if sparse.issparse(X):
        raise TypeError(
            "NestedComBat: sparse data was passed for X, but dense data is required. Use "
            "'.toarray()' to convert to a dense numpy array."
        )
    Xa = X if isinstance(X, pd.DataFrame) else np.asarray(X)
    if Xa.ndim != 2:
        raise ValidationError(
            f"NestedComBat: X must be 2-dimensional (n_samples, n_features); got shape "
            f"{Xa.shape}. Reshape your data with X.reshape(-1, 1) for one feature or "
            "X.reshape(1, -1) for one sample."
        )
    return Xa


class NestedComBat(PersistenceMixin, OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """ComBat over several batch variables, one after the other, in the best order.

    Each batch variable (a column of ``batches``) is harmonised by an ordinary
    :class:`~sitekit.harmonize.ComBat` step whose "site" is that variable, with the
    biological ``covariates`` protected at every step.  With ``order="auto"`` every order
    is tried (a greedy search for more than four variables) and the one that leaves the
    fewest features with a significant batch effect (Kruskal-Wallis per feature and batch
    variable, Benjamini-Hochberg FDR ``alpha``) wins; ties go to the lowest summed H
    statistic (OPNested ComBat, Horng et al. 2022, with Kruskal-Wallis in place of their
    Anderson-Darling tests).  The search uses the training data only.

    Parameters
    ----------
    batch_cols : list of str
        The batch variables, columns of ``batches``.
    order : {"auto", "exhaustive", "greedy", "given"} or list of str, default="auto"
        ``"exhaustive"`` tries every permutation, ``"greedy"`` adds at each step the
        variable whose harmonisation leaves the smallest effect, ``"auto"`` is exhaustive
        for up to four variables and greedy beyond, ``"given"`` (or an explicit list of
        the batch columns) harmonises in that order without a search.
    parametric : bool, default=True
        Parametric or non-parametric empirical Bayes in every ComBat step.
    mean_only : bool, default=False
        Adjust the location only, in every step.
    eb : bool, default=True
        Empirical-Bayes shrinkage in every step.
    ref_site : dict, default=None
        Reference level per batch variable, ``{batch column: level}`` (columns may be left
        out): the step of that variable maps its other levels onto the reference level,
        whose rows it returns unchanged (ComBat's ``ref_site``); samples at the reference
        level of every variable come back unchanged.
    categorical : list of str, default=None
        Covariate columns to one-hot encode (see :class:`~sitekit.harmonize.ComBat`).
    continuous : list of str, default=None
        Covariate columns to use as numbers.
    smooth : list of str or dict, default=None
        ComBat-GAM spline terms for continuous covariates, in every step.
    target_site : dict, default=None
        Target level per batch variable, ``{batch column: level}``: the step of that
        variable maps every level, the target included, onto the target's location and
        scale (ComBat's ``target_site``, M-ComBat). A column cannot have both a
        ``ref_site`` and a ``target_site``.
    unseen_sites : {"error", "adapt"}, default="error"
        What :meth:`transform` does with samples whose batch levels fit never saw: raise
        :class:`~sitekit.exceptions.UnknownSiteError`, or adapt the model to those levels
        from the samples being transformed (:meth:`adapt`) and harmonise them.
    alpha : float, default=0.05
        FDR level of the batch-effect tests that rank the orders.
    tol : float, default=1e-4
        Relative convergence tolerance of the parametric EB iteration of every step.
    max_iter : int, default=1000
        Iteration cap of the parametric EB of every step.

    Attributes
    ----------
    order_ : list of str
        The order used.
    steps_ : list of ComBat
        The fitted ComBat model of each step, in ``order_``.
    order_scores_ : pandas.DataFrame
        Every order evaluated: ``order`` (comma-joined), ``n_significant`` (features with a
        significant effect of at least one batch variable), ``sum_statistic``, ``chosen``.
    batch_effects_ : pandas.DataFrame
        :func:`batch_effect_test` of the harmonised training data.
    levels_ : dict
        The levels of every batch variable seen in training.
    n_iter_ : int
        Largest number of parametric EB iterations over the steps (0 when nothing
        iterates).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` was a DataFrame.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sitekit.harmonize import NestedComBat
    >>> rng = np.random.default_rng(0)
    >>> batches = pd.DataFrame({"vendor": rng.choice(["GE", "Siemens"], 80),
    ...                         "recon": rng.choice(["OSEM", "PSF"], 80)})
    >>> X = rng.normal(size=(80, 5)) + (batches["vendor"] == "GE").to_numpy()[:, None]
    >>> model = NestedComBat(batch_cols=["vendor", "recon"]).fit(X, batches=batches)
    >>> len(model.order_)
    2
    """

    def __init__(
        self,
        *,
        batch_cols,
        order="auto",
        parametric: bool = True,
        mean_only: bool = False,
        eb: bool = True,
        ref_site=None,
        categorical=None,
        continuous=None,
        smooth=None,
        target_site=None,
        unseen_sites: str = "error",
        alpha: float = 0.05,
        tol: float = 1e-4,
        max_iter: int = 1000,
    ) -> None:
        self.batch_cols = batch_cols
        self.order = order
        self.parametric = parametric
        self.mean_only = mean_only
        self.eb = eb
        self.ref_site = ref_site
        self.categorical = categorical
        self.continuous = continuous
        self.smooth = smooth
        self.target_site = target_site
        self.unseen_sites = unseen_sites
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN cells pass through, as in ComBat
        return tags

    @property
    def n_iter_(self) -> int:
        check_is_fitted(self, "steps_")
        return max(int(step.n_iter_) for step in self.steps_)

    # ------------------------------------------------------------------ helpers
    def _combat_params(self, col: str | None = None) -> dict:
        refs = {str(k): v for k, v in (self.ref_site or {}).items()}
        targets = {str(k): v for k, v in (self.target_site or {}).items()}
        ref = None if col is None else refs.get(col)
        target = None if col is None else targets.get(col)
        params = dict(
            parametric=self.parametric, mean_only=self.mean_only, eb=self.eb,
            ref_site=None if ref is None else str(ref),
            target_site=None if target is None else str(target),
            categorical=self.categorical, continuous=self.continuous,
            tol=self.tol, max_iter=self.max_iter,
        )
        if self.smooth is not None:
            params["smooth"] = self.smooth
        return params

    def _check_params(self) -> list[str]:
        cols = self.batch_cols
        if isinstance(cols, str):
            cols = [cols]
        if cols is None or len(cols) == 0:
            raise ValidationError(
                "The 'batch_cols' parameter of NestedComBat must list at least one batch column."
            )
        cols = [str(c) for c in cols]
        if len(set(cols)) != len(cols):
            raise ValidationError(f"The 'batch_cols' parameter of NestedComBat repeats a column: {cols}.")
        if isinstance(self.order, str):
            check_option(self.order, ["auto", "exhaustive", "greedy", "given"], name="order",
                         owner="NestedComBat")
        else:
            given = [str(c) for c in self.order]
            if sorted(given) != sorted(cols):
                raise ValidationError(
                    f"The 'order' parameter of NestedComBat must be a strategy name or a permutation "
                    f"of batch_cols {cols}. Got {list(self.order)!r} instead."
                )
        check_number(self.alpha, name="alpha", owner="NestedComBat", low=0.0, high=1.0,
                      low_inclusive=False)
        for name in ("parametric", "mean_only", "eb"):
            check_bool(getattr(self, name), name=name, owner="NestedComBat")
        check_option(self.unseen_sites, ("error", "adapt"), name="unseen_sites",
                     owner="NestedComBat")
        for name in ("ref_site", "target_site"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ValidationError(
                    f"The '{name}' parameter of NestedComBat must be None or a dict "
                    f"{{batch column: level}}. Got {value!r} instead."
                )
            unknown = [k for k in value if str(k) not in cols]
            if unknown:
                raise ValidationError(
                    f"The '{name}' parameter of NestedComBat names {unknown}, which are not "
                    f"batch columns; use keys among batch_cols {cols}."
                )
        both = {str(k) for k in self.ref_site or {}} & {str(k) for k in self.target_site or {}}
        if both:
            raise ValidationError(
                f"NestedComBat: batch column(s) {sorted(both)} have both a 'ref_site' and a "
                "'target_site'; choose one per column."
            )
        return cols

    def _check_batches(self, batches, n_samples: int, cols: list[str]) -> pd.DataFrame:
        if batches is None:
            raise ValidationError(
                "NestedComBat needs 'batches': a DataFrame with the batch columns "
                f"{cols}, one row per sample."
            )
        if not isinstance(batches, pd.DataFrame):
            arr = np.asarray(batches, dtype=object)
            if arr.ndim == 1:
                arr = arr[:, None]
            if arr.shape[1] != len(cols):
                raise ValidationError(
                    f"'batches' must be a DataFrame with the columns {cols}; got an array with "
                    f"{arr.shape[1]} columns."
                )
            batches = pd.DataFrame(arr, columns=cols)
        missing = [c for c in cols if c not in batches.columns]
        if missing:
            raise ValidationError(
                f"Batch column(s) {missing} not found in 'batches' (columns: {list(batches.columns)}); "
                "check the 'batch_cols' parameter."
            )
        if len(batches) != n_samples:
            raise ValidationError(
                f"'batches' has {len(batches)} rows but X has {n_samples}; pass one row per sample."
            )
        out = batches[cols].reset_index(drop=True)
        for c in cols:
            if out[c].isna().any():
                raise ValidationError(
                    f"Batch column '{c}' has missing values in {int(out[c].isna().sum())} rows; "
                    "every sample needs a batch label."
                )
            out[c] = out[c].astype(str)
        return out

    @staticmethod
    def _score(effects: pd.DataFrame) -> tuple[int, float]:
        per_feature = effects.groupby("feature", sort=False)["significant"].any()
        return int(per_feature.sum()), float(effects["statistic"].sum())

    def _fit_sequence(self, X, batches, covariates, order, cache):
        """Fit the ComBat steps of ``order``, reusing fitted prefixes from ``cache``."""
        key: tuple = ()
        data = X
        steps = []
        for col in order:
            key = key + (col,)
            if key not in cache:
                step = ComBat(**self._combat_params(col))
                out = step.fit_transform(data, sites=batches[col].to_numpy(), covariates=covariates)
                cache[key] = (step, out)
            step, data = cache[key]
            steps.append(step)
        return steps, data

    # ------------------------------------------------------------------ API
    def fit(self, X, y=None, *, batches, covariates=None) -> NestedComBat:
        """Choose the order and fit one ComBat step per batch variable.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : ignored
        batches : pandas.DataFrame
            Holds the ``batch_cols`` columns, one row per sample.
        covariates : pandas.DataFrame, optional
            Biological covariates protected at every step (see ComBat).

        Returns
        -------
        self : NestedComBat
        """
        self._fit(X, batches=batches, covariates=covariates)
        return self

    def _fit(self, X, *, batches, covariates):
        cols = self._check_params()
        Xa = _check_X(X)
        batches = self._check_batches(batches, Xa.shape[0], cols)
        cache: dict = {}
        evaluated: dict = {}

        def evaluate(order):
            steps, out = self._fit_sequence(Xa, batches, covariates, order, cache)
            effects = batch_effect_test(out, batches, alpha=self.alpha)
            evaluated[tuple(order)] = (self._score(effects), steps, out, effects)
            return evaluated[tuple(order)][0]

        strategy = self.order if isinstance(self.order, str) else "given"
        if strategy == "auto":
            strategy = "exhaustive" if len(cols) <= _MAX_EXHAUSTIVE else "greedy"
        if not isinstance(self.order, str):
            candidates = [[str(c) for c in self.order]]
        elif strategy == "given":
            candidates = [cols]
        elif strategy == "exhaustive":
            candidates = [list(p) for p in itertools.permutations(cols)]
        else:
            candidates = None
        if candidates is not None:
            for cand in candidates:
                evaluate(cand)
        else:  # greedy: grow the order one variable at a time
            chosen: list[str] = []
            while len(chosen) < len(cols):
                best = None
                for col in cols:
                    if col in chosen:
                        continue
                    prefix = chosen + [col]
                    _, out = self._fit_sequence(Xa, batches, covariates, prefix, cache)
                    score = self._score(batch_effect_test(out, batches, alpha=self.alpha))
                    if best is None or score < best[0]:
                        best = (score, col)
                chosen.append(best[1])
            evaluate(chosen)
        best_order = min(evaluated, key=lambda k: evaluated[k][0])
        (_, steps, out, effects) = evaluated[best_order]
        self.order_ = list(best_order)
        self.steps_ = steps
        self.batch_effects_ = effects
        self.order_scores_ = pd.DataFrame([
            {"order": ",".join(k), "n_significant": v[0][0], "sum_statistic": v[0][1],
             "chosen": k == best_order}
            for k, v in evaluated.items()
        ])
        self.levels_ = {c: sorted(batches[c].unique().tolist()) for c in cols}
        self.batch_cols_ = cols
        first = steps[0]
        self.n_features_in_ = first.n_features_in_
        if hasattr(first, "feature_names_in_"):
            self.feature_names_in_ = first.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return out

    def fit_transform(self, X, y=None, *, batches, covariates=None):
        """Fit, and return the harmonised training data (same type as ``X``).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : ignored
        batches : pandas.DataFrame
        covariates : pandas.DataFrame, optional

        Returns
        -------
        X_new : same type and shape as ``X``
        """
        return self._fit(X, batches=batches, covariates=covariates)

    def transform(self, X, *, batches, covariates=None):
        """Harmonise new samples whose batch levels were all seen in training.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        batches : pandas.DataFrame
            Holds the ``batch_cols`` columns.
        covariates : pandas.DataFrame, optional

        Returns
        -------
        X_new : same type and shape as ``X``
        """
        check_is_fitted(self, "steps_")
        Xa = _check_X(X)
        batches = self._check_batches(batches, Xa.shape[0], self.batch_cols_)
        if self.unseen_sites == "adapt":
            new = np.zeros(len(batches), dtype=bool)
            for col in self.batch_cols_:
                new |= ~batches[col].isin(self.levels_[col]).to_numpy()
            if new.any():
                rows = np.flatnonzero(new)
                model = self.adapt(_take(Xa, rows), batches=batches.iloc[rows],
                                   covariates=_take(covariates, rows))
                model.unseen_sites = "error"
                return model.transform(Xa, batches=batches, covariates=covariates)
        out = Xa
        for col, step in zip(self.order_, self.steps_):
            out = step.transform(out, sites=batches[col].to_numpy(), covariates=covariates)
        return out

    # ------------------------------------------------------------------ persistence
    def adapt(self, X, *, batches, covariates=None, min_site_size: int = 2) -> NestedComBat:
        """Return a model that also knows batch levels never seen in fit (``self`` unchanged).

        The samples run through the steps in order; at every step whose batch variable has
        levels the step has not seen, that step is adapted with :meth:`ComBat.adapt` on
        those samples (as they arrive at that step), then all samples are transformed.
        Samples may mix known and new levels (a new vendor with a known reconstruction).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        batches : pandas.DataFrame
            Holds the ``batch_cols`` columns.
        covariates : pandas.DataFrame, optional
        min_site_size : int, default=2
            Fewest samples a new level needs (see :meth:`ComBat.adapt`).

        Returns
        -------
        NestedComBat

        Raises
        ------
        ValidationError
            No batch level in ``batches`` is new (use :meth:`transform`).
        """
        check_is_fitted(self, "steps_")
        Xa = _check_X(X)
        batches = self._check_batches(batches, Xa.shape[0], self.batch_cols_)
        adapted = copy.deepcopy(self)
        data = Xa
        changed = False
        for k, col in enumerate(self.order_):
            step = adapted.steps_[k]
            labels = batches[col].to_numpy()
            known = {str(s) for s in step.sites_}
            new_rows = np.flatnonzero([str(v) not in known for v in labels])
            if new_rows.size:
                step = step.adapt(
                    _take(data, new_rows), sites=labels[new_rows],
                    covariates=_take(covariates, new_rows), min_site_size=min_site_size,
                )
                adapted.steps_[k] = step
                adapted.levels_[col] = sorted({*adapted.levels_[col], *map(str, labels[new_rows])})
                changed = True
            data = step.transform(data, sites=labels, covariates=covariates)
        if not changed:
            raise ValidationError(
                "NestedComBat.adapt: every batch level in 'batches' is already known to the "
                "model; use transform."
            )
        return adapted

    _model_kind = "NestedComBat"  # save/load: PersistenceMixin (sitekit.harmonize._persistence)

    def _model_content(self) -> tuple[dict, dict]:
        check_is_fitted(self, "steps_")
        arrays: dict[str, np.ndarray] = {}
        steps_meta = []
        for i, step in enumerate(self.steps_):
            a, m = step._model_content()
            arrays.update({f"step{i}__{k}": v for k, v in a.items()})
            steps_meta.append(m)
        meta = {
            "params": to_jsonable(self.get_params()),
            "order": self.order_,
            "batch_cols": self.batch_cols_,
            "levels": self.levels_,
            "steps": steps_meta,
            "order_scores": to_jsonable(self.order_scores_),
        }
        return arrays, meta

    @classmethod
    def _from_model_file(cls, mf: ModelFile) -> NestedComBat:
        meta = mf.metadata
        model = cls(**meta["params"])
        model.order_ = list(meta["order"])
        model.batch_cols_ = list(meta["batch_cols"])
        model.levels_ = {k: list(v) for k, v in meta["levels"].items()}
        steps = meta["steps"]
        if sorted(model.order_) != sorted(model.batch_cols_) or len(steps) != len(model.order_):
            raise mf.invalid(f"order {model.order_} does not match the batch columns "
                             f"{model.batch_cols_} and {len(steps)} steps")
        model.steps_ = [combat_from_content(mf, m, f"step{i}__") for i, m in enumerate(steps)]
        model.order_scores_ = pd.DataFrame(meta["order_scores"])
        first = model.steps_[0]
        for col, step in zip(model.order_, model.steps_):
            names = getattr(step, "feature_names_in_", None)
            if step.n_features_in_ != first.n_features_in_ or (
                    names is not None and list(names) != list(first.feature_names_in_)):
                raise mf.invalid(f"step '{col}' has other features than the first step")
            if [str(v) for v in step.sites_] != [str(v) for v in model.levels_.get(col, [])]:
                raise mf.invalid(f"step '{col}' has levels {list(step.sites_)} but the metadata list "
                                 f"{model.levels_.get(col)}")
        model.file_metadata_ = mf.info()
        model.n_features_in_ = first.n_features_in_
        if hasattr(first, "feature_names_in_"):
            model.feature_names_in_ = first.feature_names_in_
        return model


register_kind("NestedComBat", NestedComBat._from_model_file)
