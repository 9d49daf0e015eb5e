"""CovBat: ComBat, then harmonisation of the site covariance (Chen et al., HBM 2022).

ComBat removes the site's location and scale feature by feature but leaves the site's
*covariance* (how features vary together) as it was.  CovBat takes the ComBat-adjusted
residuals, scales each feature to unit sample SD (as the reference R code ``covbat()``
does by default), finds their principal components across all sites, and removes the
site location/scale of the leading component scores with a second (plain,
covariate-free) ComBat; the scores are then rotated back and the scaling, covariate
effects and grand mean restored.  Both stages are ordinary
:class:`~sitekit.harmonize.ComBat` models, so CovBat inherits their validation, NaN
handling and persistence.
"""

from __future__ import annotations

import copy
import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from sitekit._json import to_jsonable
from sitekit._validation import check_bool, check_number, check_option
from sitekit.exceptions import DataWarning, ValidationError
from sitekit.harmonize._combat import ComBat, combat_from_content
from sitekit.harmonize._design import covariate_matrix
from sitekit.harmonize._persistence import ModelFile, PersistenceMixin, register_kind

__all__ = ["CovBat"]


class CovBat(PersistenceMixin, OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """ComBat followed by harmonisation of the site covariance structure.

    Steps (Chen et al. 2022; the reference R function ``covbat()``):

    1. ComBat with the given covariates; ``R = (Y* - alpha - C beta) / sqrt(sigma2)``, the
       adjusted data as standardised residuals.
    2. PCA of the centred and scaled residuals over all training samples:
       ``(R - mu) / s = S V'`` with ``s`` set by ``pca_scaling``.
    3. The first ``k`` score columns of ``S`` are harmonised by a covariate-free ComBat
       over the sites (``score_eb``/``score_parametric``); the other scores stay.
    4. ``Y = alpha + C beta + sqrt(sigma2) (mu + s S* V')``.

    With the defaults the output equals the reference R code (``covbat()`` with
    ``std.var=TRUE``) to about 1e-13 feature SD once both iterate the first-stage
    empirical Bayes to convergence (``tol=1e-12`` here, ``it.sol(conv=1e-12)`` there); at
    both tools' default tolerances they differ by the reference's stopping rule only
    (below 2e-5 feature SD on the validation data).

    Parameters
    ----------
    n_components : int, float or None, default=0.95
        Principal components whose site location/scale is harmonised: an int is a count
        (the reference's ``n.pc``), a float in (0, 1] the smallest number of components
        explaining *more* than that fraction of the residual variance (the reference's
        ``percent.var``; all components for 1.0), ``None`` all of them.
    pca_scaling : {"sample", "pooled", "none"}, default="sample"
        How each feature's residuals are scaled before the PCA. ``"sample"`` divides by
        their sample SD (ddof=1) over the training samples, as the reference
        (``std.var=TRUE``, its default); ``"none"`` runs the PCA on the residuals in the
        features' own units (``std.var=FALSE``); ``"pooled"`` divides by the first-stage
        ComBat's pooled SD ``sqrt(sigma2)`` (sitekit 0.1's only behaviour). After ComBat
        the two SDs differ little, but the PCA depends on them and the outputs differ by
        about 0.1 feature SD. ``"pooled"`` is kept so that models and results of sitekit
        0.1 can be reproduced; it has no known advantage over ``"sample"``, which is the
        published method.
    parametric : bool, default=True
        Parametric or non-parametric empirical Bayes in the first-stage
        :class:`~sitekit.harmonize.ComBat`.
    mean_only : bool, default=False
        First stage adjusts the location only.
    eb : bool, default=True
        Empirical-Bayes shrinkage in the first stage.
    ref_site : str or int, default=None
        Reference site of both stages: the model is that site's and the other sites are
        mapped onto it (see :class:`~sitekit.harmonize.ComBat`).
    categorical : list of str, default=None
        Covariate columns to one-hot encode.
    continuous : list of str, default=None
        Covariate columns to use as numbers.
    smooth : list of str or dict, default=None
        ComBat-GAM spline terms of the first stage.
    target_site : str or int, default=None
        M-ComBat for both stages: every site, this one included, is mapped onto this
        site's feature location/scale (first stage) and onto its principal-component
        score location/scale (second stage). Cannot be combined with ``ref_site``.
    unseen_sites : {"error", "adapt"}, default="error"
        What :meth:`transform` does with samples of sites that fit never saw: raise
        :class:`~sitekit.exceptions.UnknownSiteError`, or estimate those sites' location
        and scale in both stages from the samples being transformed (:meth:`adapt`; frozen
        model and principal axes) and harmonise them.
    score_eb : bool, default=False
        Empirical-Bayes shrinkage in the score-stage ComBat (CovBat's default is off:
        there are few scores to borrow strength from).
    score_parametric : bool, default=True
        Parametric priors in the score-stage ComBat (only with ``score_eb=True``).
    tol : float, default=1e-4
        Relative convergence tolerance of the parametric EB iteration (both stages).
    max_iter : int, default=1000
        Iteration cap of the parametric EB (both stages).

    Attributes
    ----------
    combat_ : ComBat
        The first-stage model.
    score_combat_ : ComBat
        The score-stage model (on ``n_components_`` score columns).
    components_ : ndarray of shape (n_axes, n_features)
        Principal axes of the standardised residuals, one per row, by decreasing variance
        (``n_axes <= min(n_samples, n_features)``: axes of zero variance are dropped).
    pca_mean_ : ndarray of shape (n_features,)
        Mean of the standardised residuals.
    pca_scale_ : ndarray of shape (n_features,)
        Divisor of the centred standardised residuals before the PCA: their sample SD
        with ``pca_scaling="sample"``, 1 with ``"pooled"``, ``1 / sqrt(sigma2)`` with
        ``"none"``; 1 for features left out of the PCA.
    explained_variance_ratio_ : ndarray of shape (n_axes,)
        Fraction of the scaled residual variance along each row of ``components_``.
    n_components_ : int
        Number of harmonised components.
    n_iter_ : int
        Parametric EB iterations of the first stage (see ``ComBat.n_iter_``).
    sites_ : ndarray
        Site names seen in fit.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` was a DataFrame.

    Notes
    -----
    NaN cells: the first stage handles them as ComBat does.  For the projection a missing
    standardised residual is taken as 0 (the feature at its covariate-predicted value),
    also in the mean and SD used to centre and scale it, and the cell is NaN again in the
    output (the reference R code does not accept missing values).  Features that ComBat returns unchanged
    (constant within a site, or overall) are left out of the PCA and returned as ComBat
    returned them.

    Examples
    --------
    >>> import numpy as np
    >>> from sitekit.harmonize import CovBat
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 6)); sites = np.repeat(["a", "b", "c"], 20)
    >>> Xh = CovBat(n_components=3).fit_transform(X, sites=sites)
    >>> Xh.shape
    (60, 6)
    """

    def __init__(
        self,
        *,
        n_components=0.95,
        pca_scaling: str = "sample",
        parametric: bool = True,
        mean_only: bool = False,
        eb: bool = True,
        ref_site=None,
        categorical=None,
        continuous=None,
        smooth=None,
        target_site=None,
        unseen_sites: str = "error",
        score_eb: bool = False,
        score_parametric: bool = True,
        tol: float = 1e-4,
        max_iter: int = 1000,
    ) -> None:
        self.n_components = n_components
        self.pca_scaling = pca_scaling
        self.parametric = parametric
        self.mean_only = mean_only
        self.eb = eb
        self.ref_site = ref_site
        self.categorical = categorical
        self.continuous = continuous
        self.smooth = smooth
        self.target_site = target_site
        self.unseen_sites = unseen_sites
        self.score_eb = score_eb
        self.score_parametric = score_parametric
        self.tol = tol
        self.max_iter = max_iter

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN cells pass through, as in ComBat
        return tags

    @property
    def n_iter_(self) -> int:
        check_is_fitted(self, "combat_")
        return int(self.combat_.n_iter_)

    # ------------------------------------------------------------------ helpers
    def _combat_params(self) -> dict:
        params = dict(
            parametric=self.parametric, mean_only=self.mean_only, eb=self.eb,
            ref_site=self.ref_site, categorical=self.categorical, continuous=self.continuous,
            target_site=self.target_site, tol=self.tol, max_iter=self.max_iter,
        )
        if self.smooth is not None:
            params["smooth"] = self.smooth
        return params

    def _score_params(self) -> dict:
        return dict(parametric=self.score_parametric, eb=self.score_eb, ref_site=self.ref_site,
                    target_site=self.target_site, tol=self.tol, max_iter=self.max_iter)

    def _check_params(self) -> None:
        n = self.n_components
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, numbers.Real):
                raise ValidationError(
                    "The 'n_components' parameter of CovBat must be None, an int >= 1 or a float "
                    f"in (0, 1]. Got {n!r} instead."
                )
            if isinstance(n, numbers.Integral):
                check_number(n, name="n_components", owner="CovBat", low=1, integer=True)
            else:
                check_number(n, name="n_components", owner="CovBat", low=0.0, high=1.0,
                             low_inclusive=False)
        for name in ("score_eb", "score_parametric"):
            check_bool(getattr(self, name), name=name, owner="CovBat")
        check_option(self.pca_scaling, ("sample", "pooled", "none"), name="pca_scaling",
                     owner="CovBat")
        check_option(self.unseen_sites, ("error", "adapt"), name="unseen_sites", owner="CovBat")

    def _residuals(self, combat: ComBat, Y: np.ndarray, X, sites, covariates):
        """Standardised residuals of ComBat-adjusted data, and the mean/scale to undo them."""
        mean = combat_standardized_mean(combat, X, sites=sites, covariates=covariates)
        scale = np.sqrt(np.asarray(combat.var_pooled_, dtype=float))
        with np.errstate(invalid="ignore", divide="ignore"):
            R = (Y - mean) / scale
        return R, mean, scale

    # ------------------------------------------------------------------ API
    def fit(self, X, y=None, *, sites, covariates=None) -> CovBat:
        """Fit the ComBat stage, the PCA of its residuals and the score-stage ComBat.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : ignored
        sites : array-like of shape (n_samples,)
        covariates : pandas.DataFrame, optional

        Returns
        -------
        self : CovBat
        """
        self._fit(X, sites=sites, covariates=covariates)
        return self

    def _fit(self, X, *, sites, covariates):
        self._check_params()
        combat = ComBat(**self._combat_params())
        Y = combat.fit_transform(X, sites=sites, covariates=covariates)
        Ya = np.asarray(Y, dtype=float)
        R, mean, scale = self._residuals(combat, Ya, X, sites, covariates)
        n_samples, n_features = R.shape
        # features ComBat leaves untouched (zero variance) stay out of the PCA
        usable = np.isfinite(scale) & (scale > 0) & (np.isfinite(R).sum(axis=0) > 1)
        Rf = np.where(np.isfinite(R), R, 0.0)
        mu = Rf.mean(axis=0)
        divisor = self._pca_divisor(Rf - mu, scale)
        usable &= np.isfinite(divisor) & (divisor > 0)
        divisor = np.where(usable, divisor, 1.0)
        Rf, mu = Rf[:, usable], mu[usable]
        Rs = (Rf - mu) / divisor[usable]
        var, Vt = _pca(Rs)
        ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
        k = self._choose_k(ratio)
        if k == 0:
            raise ValidationError(
                "CovBat: no feature varies after ComBat (all constant or missing), so there is "
                "no covariance to harmonise; use ComBat for these data."
            )
        components = np.zeros((Vt.shape[0], n_features))
        components[:, usable] = Vt
        pca_mean = np.zeros(n_features)
        pca_mean[usable] = mu
        scores = Rs @ Vt[:k].T
        score_combat = ComBat(**self._score_params())
        new_scores = np.asarray(score_combat.fit_transform(scores, sites=sites), dtype=float)
        self.combat_ = combat
        self.score_combat_ = score_combat
        self.components_ = components
        self.pca_mean_ = pca_mean
        self.pca_scale_ = divisor
        self.explained_variance_ratio_ = ratio
        self.n_components_ = int(k)
        self.usable_features_ = usable
        self.sites_ = np.asarray(combat.sites_)
        self.n_features_in_ = combat.n_features_in_
        if hasattr(combat, "feature_names_in_"):
            self.feature_names_in_ = combat.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self._finish(X, Ya, R, mean, scale, scores, new_scores)

    def _choose_k(self, ratio: np.ndarray) -> int:
        n_max = ratio.size
        n = self.n_components
        if n is None:
            return n_max
        if isinstance(n, numbers.Integral):
            if n > n_max:
                warnings.warn(
                    f"CovBat: n_components={n} exceeds the {n_max} available components; "
                    f"using {n_max}.",
                    DataWarning,
                    stacklevel=3,
                )
            return int(min(n, n_max))
        # the reference: the first component whose cumulative ratio *exceeds* the fraction
        cum = np.cumsum(ratio)
        return int(min(np.searchsorted(cum, float(n), side="right") + 1, n_max))

    def _pca_divisor(self, Rc: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Per-feature divisor of the centred standardised residuals ``Rc`` before the PCA."""
        if self.pca_scaling == "sample":
            if Rc.shape[0] < 2:
                return np.zeros(Rc.shape[1])
            return Rc.std(axis=0, ddof=1)
        if self.pca_scaling == "none":  # residuals in the features' units
            with np.errstate(invalid="ignore", divide="ignore"):
                return 1.0 / scale
        return np.ones(Rc.shape[1])

    def _finish(self, X, Ya, R, mean, scale, scores, new_scores):
        k = self.n_components_
        Vk = self.components_[:k][:, self.usable_features_]
        out = Ya.copy()
        Rf = np.where(np.isfinite(R), R, 0.0)[:, self.usable_features_]
        R_new = Rf + ((new_scores - scores) @ Vk) * self.pca_scale_[self.usable_features_]
        cols = np.flatnonzero(self.usable_features_)
        adjusted = mean[:, cols] + scale[cols] * R_new
        keep_nan = ~np.isfinite(Ya[:, cols])
        out[:, cols] = np.where(keep_nan, Ya[:, cols], adjusted)
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(out, index=X.index, columns=X.columns)
        return out

    def fit_transform(self, X, y=None, *, sites, covariates=None):
        """Fit and return the harmonised training data (same type as ``X``).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : ignored
        sites : array-like of shape (n_samples,)
        covariates : pandas.DataFrame, optional

        Returns
        -------
        X_new : same type and shape as ``X``
        """
        return self._fit(X, sites=sites, covariates=covariates)

    def transform(self, X, *, sites, covariates=None):
        """Harmonise samples of the training sites with the fitted model.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        sites : array-like of shape (n_samples,)
        covariates : pandas.DataFrame, optional

        Returns
        -------
        X_new : same type and shape as ``X``
        """
        check_is_fitted(self, "combat_")
        if self.unseen_sites == "adapt":
            new = ~np.isin(self.combat_._prepare(X, sites, covariates, reset=False)[3],
                           self.sites_)
            if new.any():
                rows = np.flatnonzero(new)
                model = self.adapt(_take(X, rows), sites=_take(sites, rows),
                                   covariates=_take(covariates, rows))
                model.unseen_sites = "error"
                return model.transform(X, sites=sites, covariates=covariates)
        Y = self.combat_.transform(X, sites=sites, covariates=covariates)
        Ya = np.asarray(Y, dtype=float)
        R, mean, scale = self._residuals(self.combat_, Ya, X, sites, covariates)
        scores = self._scores(R)
        new_scores = np.asarray(self.score_combat_.transform(scores, sites=sites), dtype=float)
        return self._finish(X, Ya, R, mean, scale, scores, new_scores)

    def _scores(self, R: np.ndarray) -> np.ndarray:
        """Scores of standardised residuals ``R`` on the first ``n_components_`` axes."""
        use = self.usable_features_
        Rf = np.where(np.isfinite(R), R, 0.0)[:, use]
        Vk = self.components_[: self.n_components_][:, use]
        return ((Rf - self.pca_mean_[use]) / self.pca_scale_[use]) @ Vk.T

    # ------------------------------------------------------------------ persistence
    def adapt(self, X, *, sites, covariates=None, min_site_size: int = 2) -> CovBat:
        """Return a model that also harmonises sites never seen in fit (``self`` unchanged).

        Both stages are adapted with :meth:`ComBat.adapt`: the first-stage ComBat estimates
        the new sites' location/scale against its frozen grand mean, covariate effects and
        pooled variance; the principal axes stay frozen; the score-stage ComBat estimates
        the new sites' score location/scale.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Samples of the new site(s).
        sites : array-like of shape (n_samples,)
            Their sites, none known to the model.
        covariates : pandas.DataFrame, optional
        min_site_size : int, default=2
            See :meth:`ComBat.adapt`.

        Returns
        -------
        CovBat
        """
        check_is_fitted(self, "combat_")
        combat = self.combat_.adapt(X, sites=sites, covariates=covariates, min_site_size=min_site_size)
        Ya = np.asarray(combat.transform(X, sites=sites, covariates=covariates), dtype=float)
        R, _, _ = self._residuals(combat, Ya, X, sites, covariates)
        scores = self._scores(R)
        with warnings.catch_warnings():  # the first stage already warned about small sites
            warnings.simplefilter("ignore", DataWarning)
            score_combat = self.score_combat_.adapt(
                scores, sites=np.asarray(sites, dtype=object) if not isinstance(sites, pd.Series)
                else sites.to_numpy(dtype=object), min_site_size=min_site_size,
            )
        adapted = copy.deepcopy(self)
        adapted.combat_ = combat
        adapted.score_combat_ = score_combat
        adapted.sites_ = np.asarray(combat.sites_)
        return adapted

    _model_kind = "CovBat"  # save/load: PersistenceMixin (sitekit.harmonize._persistence)

    def _model_content(self) -> tuple[dict, dict]:
        check_is_fitted(self, "combat_")
        a1, m1 = self.combat_._model_content()
        a2, m2 = self.score_combat_._model_content()
        arrays = {f"combat__{k}": v for k, v in a1.items()}
        arrays.update({f"scores__{k}": v for k, v in a2.items()})
        arrays["components"] = self.components_
        arrays["pca_mean"] = self.pca_mean_
        arrays["pca_scale"] = self.pca_scale_
        arrays["explained_variance_ratio"] = self.explained_variance_ratio_
        arrays["usable_features"] = self.usable_features_.astype(np.uint8)
        meta = {
            "params": to_jsonable(self.get_params()),
            "n_components": self.n_components_,
            "combat": m1,
            "score_combat": m2,
        }
        return arrays, meta

    @classmethod
    def _from_model_file(cls, mf: ModelFile) -> CovBat:
        meta = mf.metadata
        params = dict(meta["params"])
        legacy = "pca_scale" not in mf.arrays  # written by sitekit 0.1: always the pooled scaling
        if legacy:
            params["pca_scaling"] = "pooled"
        model = cls(**params)
        model.combat_ = combat_from_content(mf, meta["combat"], "combat__")
        n = model.combat_.n_features_in_
        model.score_combat_ = combat_from_content(mf, meta["score_combat"], "scores__")
        k = int(meta["n_components"])
        if model.score_combat_.n_features_in_ != k or list(model.score_combat_.sites_) != list(model.combat_.sites_):
            raise mf.invalid(f"the score stage has {model.score_combat_.n_features_in_} components and "
                             f"sites {list(model.score_combat_.sites_)}; expected {k} and "
                             f"{list(model.combat_.sites_)}")
        usable = mf.array("usable_features", shape=(n,), kind="bui").astype(bool)
        components = mf.array("components", finite=True)
        if components.ndim != 2 or components.shape[1] != n or components.shape[0] < k:
            raise mf.invalid(f"array 'components' has shape {components.shape}; expected at least {k} "
                             f"components of {n} features")
        model.components_ = components
        model.pca_mean_ = mf.array("pca_mean", shape=(n,), finite=usable)
        model.pca_scale_ = (np.ones(n) if legacy
                            else mf.array("pca_scale", shape=(n,), finite=usable))
        model.explained_variance_ratio_ = mf.array("explained_variance_ratio", finite=True)
        model.usable_features_ = usable
        model.n_components_ = k
        model.sites_ = np.asarray(model.combat_.sites_)
        model.file_metadata_ = mf.info()
        model.n_features_in_ = n
        if hasattr(model.combat_, "feature_names_in_"):
            model.feature_names_in_ = model.combat_.feature_names_in_
        return model


register_kind("CovBat", CovBat._from_model_file)


def _pca(Rc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of centred data via the smaller Gram matrix (eigh; faster than SVD).

    Returns the component variances (descending, ddof=1) and the axes as rows, keeping only
    components with positive variance (at most ``min(n_samples, n_features)``).
    """
    n, p = Rc.shape
    denom = max(n - 1, 1)
    if n >= p:
        w, V = np.linalg.eigh(Rc.T @ Rc)
        order = np.argsort(w)[::-1]
        w, V = w[order], V[:, order]
        keep = w > max(w[0], 0.0) * 1e-12 if w.size else np.zeros(0, dtype=bool)
        return w[keep] / denom, V[:, keep].T
    w, U = np.linalg.eigh(Rc @ Rc.T)
    order = np.argsort(w)[::-1]
    w, U = w[order], U[:, order]
    keep = w > max(w[0], 0.0) * 1e-12 if w.size else np.zeros(0, dtype=bool)
    w, U = w[keep], U[:, keep]
    Vt = (Rc.T @ U / np.sqrt(w)).T
    return w / denom, Vt


def _take(obj, rows: np.ndarray):
    """Rows of X / sites / covariates by position (pandas keeps its index for alignment)."""
    if obj is None:
        return None
    if isinstance(obj, pd.DataFrame | pd.Series):
        return obj.iloc[rows]
    return np.asarray(obj)[rows]


# ---------------------------------------------------------------------- shared helpers
# (used by CovBat and NestedComBat: composite models store their ComBat stages in one file)


def combat_standardized_mean(combat: ComBat, X, *, sites, covariates=None) -> np.ndarray:
    """``alpha + C beta`` of a fitted ComBat for the rows of ``X`` (covariate part kept).

    ``covariates`` are aligned and encoded exactly as :meth:`ComBat.transform` does.
    """
    Y, _, _, _, covs = combat._prepare(X, sites, covariates, reset=False)
    n = Y.shape[0]
    C = covariate_matrix(covs, combat.covariate_encoding_, n_samples=n)
    extra = combat._extra_design(covs, n)
    if extra is not None and extra.shape[1]:
        C = np.hstack([C, extra])
    mean = np.broadcast_to(np.asarray(combat.grand_mean_, dtype=float), (n, Y.shape[1])).copy()
    if C.shape[1]:
        mean += C @ np.asarray(combat.beta_, dtype=float)
    return mean
