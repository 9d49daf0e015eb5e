"""The ComBat harmoniser: a scikit-learn transformer over samples x features.

The maths follow ``sva::ComBat`` (Johnson, Li & Rabinovic 2007) to machine precision; the
numerical work happens in :mod:`sitekit.harmonize._eb` (pure functions on sufficient
statistics) and the design in :mod:`sitekit.harmonize._design`.  This module does input
handling (pandas alignment, validation, warnings) and stores the fitted state; saving and
loading go through :mod:`sitekit.harmonize._persistence` (``_model_content`` and
:func:`combat_from_content` here say what the file holds and how it is validated).

Extension points for later engines:

* :meth:`ComBat._extra_design` returns extra design columns whose effects are preserved
  (spline terms of ComBat-GAM); the default has none.
* :meth:`ComBat._fit_arrays` runs the fit from validated arrays and returns the fitted state
  as a dict; :meth:`ComBat._set_state` sets it on the estimator (used by ``load``, ``adapt``
  and by federated fits).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from sitekit._json import to_jsonable
from sitekit._validation import check_bool, check_number, check_option, check_random_state
from sitekit.exceptions import (
    CostWarning,
    DataWarning,
    NumericalError,
    SitekitWarning,
    UnknownSiteError,
    ValidationError,
)
from sitekit.harmonize import _dask, _eb
from sitekit.harmonize._design import (
    SiteCodes,
    check_full_rank,
    covariate_column_names,
    covariate_matrix,
    design_matrix,
    encode_sites,
    fit_covariate_encoding,
    to_json_value,
)
from sitekit.harmonize._persistence import ModelFile, PersistenceMixin, register_kind

__all__ = ["ComBat", "combat"]

_DEFAULT_KNOTS = 5  # ComBat-GAM: knots per smoothed covariate unless a dict says otherwise
_SPLINE_DEGREE = 3
_ADAPT_WARN_SIZE = 20  # adapt(): warn below this many samples per new site
#: prior_features="auto": exact non-parametric EB up to this many features, sampled beyond
_AUTO_EXACT_FEATURES = 5000
#: prior_features="auto" beyond that: the size of the sampled support
_AUTO_SUPPORT = 2000
#: cost model of the non-parametric EB (seconds per feature pair, one core) and the time
#: above which prior_features=None warns
_SECONDS_PER_PAIR = 1e-8
_SLOW_SECONDS = 30.0

#: fitted array attributes saved in the model file (name -> attribute)
_ARRAYS = (
    "gamma_star_", "delta_star_", "gamma_hat_", "delta_hat_", "grand_mean_", "var_pooled_",
    "beta_", "site_coef_", "n_per_site_", "adjusted_",
)
_PRIOR_COLUMNS = (
    "site", "n_samples", "n_features_used", "gamma_bar", "tau2", "a_prior", "b_prior",
    "eb", "mean_only", "n_iter", "converged",
)


def _names(values, limit: int = 10) -> str:
    values = [str(v) for v in values]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(repr(v) for v in values[:limit]) + more


def _align(obj, index: pd.Index | None, what: str, n: int):
    """Align a Series/DataFrame ``obj`` to ``index`` (X's index); check the length."""
    if isinstance(obj, pd.Series | pd.DataFrame) and index is not None:
        if not obj.index.equals(index):
            same = (
                obj.index.is_unique
                and index.is_unique
                and len(obj.index) == len(index)
                and obj.index.isin(index).all()
            )
            if not same:
                missing = index.difference(obj.index)[:5].tolist() if index.is_unique else []
                raise ValidationError(
                    f"ComBat: the index of '{what}' does not match the index of X"
                    + (f" (e.g. rows {missing} have no {what})" if missing else "")
                    + f". Pass '{what}' with X's index, or as a plain array (.to_numpy()) "
                    "to match rows by position."
                )
            obj = obj.reindex(index)
    if len(obj) != n:
        raise ValidationError(
            f"ComBat: '{what}' has {len(obj)} rows but X has {n}; give one entry per sample."
        )
    return obj


class ComBat(PersistenceMixin, OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """ComBat harmonisation of site (batch) effects, with empirical-Bayes shrinkage.

    Model: ``y_ijg = alpha_g + X_ij beta_g + gamma_ig + delta_ig eps_ijg`` for site ``i``,
    sample ``j``, feature ``g``.  The site's location ``gamma`` and scale ``delta`` are
    estimated per feature, shrunk towards their across-feature priors (empirical Bayes), and
    removed; covariate effects ``beta`` are kept.  Results equal R's ``sva::ComBat`` to
    machine precision (see the golden tests).

    Parameters
    ----------
    parametric : bool, default=True
        Parametric (normal / inverse-gamma priors) or non-parametric empirical Bayes.
    mean_only : bool, default=False
        Adjust the location only (``delta* = 1``).
    eb : bool, default=True
        Shrink the per-site estimates with empirical Bayes; ``False`` uses the raw per-site
        location/scale estimates.
    ref_site : str or int, default=None
        Reference site: the grand mean and pooled variance are that site's, its rows come
        back unchanged and the other sites are mapped onto it (sva's ``ref.batch``; see
        ``target_site`` for the M-ComBat variant fitted on all sites).
    categorical : list of str, default=None
        Covariate columns to one-hot encode (treatment coding, first sorted level as
        reference).  Columns not listed are detected from their dtype: numeric -> continuous,
        anything else (str, category, bool) -> categorical.
    continuous : list of str, default=None
        Covariate columns to use as numbers even if their dtype says otherwise.
    smooth : list of str or dict, default=None
        ComBat-GAM: continuous covariates whose effect is modelled by a cubic B-spline
        basis (scikit-learn's ``SplineTransformer``, uniform knots over the training range,
        5 knots or ``{name: n_knots}``) instead of a straight line.  Outside the training
        range the curve is extended linearly with a :class:`~sitekit.exceptions.DataWarning`.
    target_site : str or int, default=None
        M-ComBat: map every site, this one included, onto this site's (EB-estimated)
        location and scale.  Unlike ``ref_site`` the model (grand mean, pooled variance,
        priors) is fitted on all sites and the target's location/scale is its EB estimate;
        the target's rows pass through the same map (the identity for them, to rounding),
        while ``ref_site`` takes the model from the reference rows and returns those rows
        bit-identical.  Cannot be combined with ``ref_site``.
    unseen_sites : {"error", "adapt"}, default="error"
        What :meth:`transform` does with samples of sites that fit never saw: raise
        :class:`~sitekit.exceptions.UnknownSiteError`, or estimate those sites'
        location/scale from the samples being transformed (:meth:`adapt`, frozen model,
        no labels used) and harmonise them.  ``"adapt"`` makes leave-one-site-out
        cross-validation of a Pipeline run (``cv=LeaveOneGroupOut()`` over sites); the
        estimate then depends on the whole batch of the new site passed to ``transform``.
    tol : float, default=1e-4
        Relative convergence tolerance of the parametric EB iteration.
    max_iter : int, default=1000
        Iteration cap of the parametric EB (sva has none); reaching it warns.
    prior_features : "auto", int or None, default="auto"
        Non-parametric EB only: how many features form the empirical prior of a site.  The
        exact method weighs every feature against every other one, which costs
        ``n_features**2`` likelihood terms per site (10,000 features: 10^8 terms, seconds;
        100,000 features: 10^10 terms, minutes per site).  An int ``N`` estimates the same
        weighted sums from ``N`` features per target: its ``N/2`` nearest neighbours in
        ``gamma_hat`` order on each side, summed exactly (where the weights concentrate),
        plus a random subset of about ``N`` features drawn with ``random_state`` standing
        for all the others -- features unlike most others (sparse regions of location and
        scale) are drawn more often and weighted by the inverse of their probability, so
        this is an unbiased Monte Carlo estimate of the same weighted sums at cost ``2 N``
        per feature.  ``None`` is always exact and warns
        (:class:`~sitekit.exceptions.CostWarning`) with a time estimate when that would take
        long.  ``"auto"`` is exact up to 5,000 features (every ordinary radiomics table) and
        samples 2,000 beyond.
    random_state : int, numpy.random.Generator or None, default=None
        Seeds the subsets of ``prior_features`` (only used when sampling); pass an int for
        reproducible results.

    Attributes
    ----------
    sites_ : ndarray of shape (n_sites,)
        Known sites, sorted.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features,)
        Feature names, defined only when X has string column names.
    gamma_hat_, delta_hat_ : ndarray of shape (n_sites, n_features_in_)
        Per-site location and scale of the standardised data (NaN where not estimable).
    gamma_star_, delta_star_ : ndarray of shape (n_sites, n_features_in_)
        The estimates used to adjust (after EB shrinkage).
    grand_mean_ : ndarray of shape (n_features,)
        ``alpha``: sample-weighted mean of the site levels (the reference site's level with
        ``ref_site``).
    var_pooled_ : ndarray of shape (n_features,)
        Pooled residual variance (of the reference site with ``ref_site``).
    beta_ : ndarray of shape (n_covariate_columns, n_features_in_)
        Covariate effects (rows named by ``covariate_columns_``).
    site_coef_ : ndarray of shape (n_sites, n_features_in_)
        Fitted site levels (the site columns of the OLS coefficients).
    n_per_site_ : ndarray of shape (n_sites, n_features_in_)
        Observed (non-NaN) samples per site and feature.
    adjusted_ : ndarray of bool, shape (n_sites, n_features_in_)
        Cells that are adjusted; False for the reference site, constant features and
        features a site never observed (those cells come back unchanged).
    covariate_encoding_ : dict
        How covariates enter the design (JSON-serialisable).
    covariate_columns_ : list of str
        Names of the covariate design columns.
    n_iter_ : int
        Largest number of parametric EB iterations over the sites (0 when nothing iterates:
        non-parametric, mean-only or ``eb=False``).
    priors_ : pandas.DataFrame
        One row per site: ``site, n_samples, n_features_used, gamma_bar, tau2, a_prior,
        b_prior, eb, mean_only, n_iter, converged``.
    smooth_ : dict
        ComBat-GAM spline terms: ``{covariate: {"knots": ndarray, "degree": 3}}`` (empty
        without ``smooth``); their design columns are named ``age[spline0]`` ... in
        ``covariate_columns_`` and their effects are rows of ``beta_``.

    See Also
    --------
    combat : the function form.

    Notes
    -----
    Missing values (NaN) are allowed: each feature is fitted on its observed cells (as
    sva), and NaN comes back exactly where it went in.  Infinite values are an error.

    In a :class:`~sklearn.pipeline.Pipeline` with metadata routing enabled
    (``sklearn.set_config(enable_metadata_routing=True)``), request the site labels with
    ``ComBat().set_fit_request(sites=True, covariates=True).set_transform_request(sites=True,
    covariates=True)`` and pass ``sites=...`` to ``fit``/``cross_val_score(params=...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sitekit.harmonize import ComBat
    >>> rng = np.random.default_rng(0)
    >>> sites = np.repeat(["a", "b", "c"], 20)
    >>> X = rng.normal(size=(60, 5)) + (sites == "b")[:, None] * 2.0
    >>> Xh = ComBat().fit_transform(X, sites=sites)
    >>> bool(abs(Xh[sites == "b"].mean() - Xh[sites == "a"].mean()) < 0.5)
    True
    """

    def __init__(
        self,
        *,
        parametric: bool = True,
        mean_only: bool = False,
        eb: bool = True,
        ref_site=None,
        categorical: list | None = None,
        continuous: list | None = None,
        smooth: list | dict | None = None,
        target_site=None,
        unseen_sites: str = "error",
        tol: float = 1e-4,
        max_iter: int = 1000,
        prior_features: int | str | None = "auto",
        random_state=None,
    ) -> None:
        self.parametric = parametric
        self.mean_only = mean_only
        self.eb = eb
        self.ref_site = ref_site
        self.categorical = categorical
        self.continuous = continuous
        self.smooth = smooth
        self.target_site = target_site
        self.unseen_sites = unseen_sites
        self.tol = tol
        self.max_iter = max_iter
        self.prior_features = prior_features
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        owner = "ComBat"
        check_bool(self.parametric, name="parametric", owner=owner)
        check_bool(self.mean_only, name="mean_only", owner=owner)
        check_bool(self.eb, name="eb", owner=owner)
        check_number(self.tol, name="tol", owner=owner, low=0, low_inclusive=False)
        check_number(self.max_iter, name="max_iter", owner=owner, low=1, integer=True)
        check_option(self.unseen_sites, ("error", "adapt"), name="unseen_sites", owner=owner)
        if not (self.prior_features is None or isinstance(self.prior_features, str)):
            check_number(self.prior_features, name="prior_features", owner=owner, low=2, integer=True)
        elif isinstance(self.prior_features, str):
            check_option(self.prior_features, ("auto",), name="prior_features", owner=owner)
        check_random_state(self.random_state)
        self._check_ext_params()
        for name in ("categorical", "continuous"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, str) or not hasattr(value, "__iter__")):
                raise ValidationError(
                    f"The '{name}' parameter of ComBat must be a list of column names. "
                    f"Got {value!r} instead."
                )

    def _prepare(self, X, sites, covariates, *, reset: bool):
        """Validate X, align sites and covariates; return (Y, index, columns, sites, covs)."""
        if sites is None:
            raise ValidationError(
                "ComBat needs the site of every sample: pass sites=... (one label per row of X)."
            )
        index = columns = None
        if isinstance(X, pd.DataFrame):
            dup = X.columns[X.columns.duplicated()].unique().tolist()
            if dup:
                raise ValidationError(
                    f"ComBat: X has duplicate column name(s) {_names(dup)}; rename them so every "
                    "feature has its own name."
                )
            bad = [
                c for c in X.columns
                if not (pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c]))
            ]
            if bad:
                raise ValidationError(
                    f"ComBat: feature column(s) {_names(bad)} are not numeric; pass only numeric "
                    "features (sites and covariates go in sites=/covariates=)."
                )
            index, columns = X.index, X.columns
        try:
            Y = validate_data(
                self, X, reset=reset, dtype=[np.float64, np.float32], ensure_all_finite=False,
                ensure_min_samples=1,
            )
        except ValidationError:
            raise
        except ValueError as exc:  # sklearn's shape/feature-name checks: same text, our class
            raise ValidationError(f"ComBat: {exc}") from exc
        if Y.ndim == 2 and Y.shape[0] > 1 and Y.flags.f_contiguous and not Y.flags.c_contiguous:
            # a DataFrame's values come column-major: gathering a site's rows from that is a
            # strided walk over the whole matrix per block (25,000 x 2,000: 27 s instead of
            # 0.5 s); one row-major copy makes every pass sequential
            Y = np.ascontiguousarray(Y)
        # a block sum is finite unless the block holds NaN or inf (cheap, no temporary)
        with np.errstate(over="ignore", invalid="ignore"):  # a sum may overflow: then look
            has_inf = any(
                not np.isfinite(Y[sl].sum()) and np.isinf(Y[sl]).any()
                for sl in _eb.row_chunks(*Y.shape)
            )
        if has_inf:
            bad_cols = np.flatnonzero(np.isinf(Y).any(axis=0))
            names = [columns[j] for j in bad_cols] if columns is not None else bad_cols.tolist()
            raise ValidationError(
                f"ComBat: feature(s) {_names(names)} contain infinite values; replace them "
                "(NaN is allowed and is passed through)."
            )
        n = Y.shape[0]
        if isinstance(sites, pd.DataFrame):
            if sites.shape[1] != 1:
                raise ValidationError("ComBat: 'sites' must be one column of labels.")
            sites = sites.iloc[:, 0]
        if not isinstance(sites, pd.Series):
            sites = np.asarray(sites, dtype=object)
            if sites.ndim != 1:
                raise ValidationError(
                    f"ComBat: 'sites' must be 1-D (one label per sample); got shape {sites.shape}."
                )
        sites = _align(sites, index, "sites", n)
        sites = np.asarray(sites, dtype=object)
        if covariates is not None:
            if isinstance(covariates, pd.Series):
                covariates = covariates.to_frame()
            elif not isinstance(covariates, pd.DataFrame):
                arr = np.asarray(covariates, dtype=object)
                if arr.ndim == 1:
                    arr = arr[:, None]
                covariates = pd.DataFrame(arr, columns=list(range(arr.shape[1]))).infer_objects()
            covariates = _align(covariates, index, "covariates", n)
            covariates = covariates.reset_index(drop=True)
        return Y, index, columns, sites, covariates

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, *, sites, covariates=None) -> ComBat:
        """Estimate the site effects.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features, NaN allowed.
        y : None
            Ignored.
        sites : array-like of shape (n_samples,)
            Site of each sample (str or int).  A pandas Series is aligned on X's index.
        covariates : DataFrame or array-like of shape (n_samples, n_covariates), default=None
            Biological covariates whose effects are kept.  A DataFrame is aligned on X's index.

        Returns
        -------
        self : ComBat
        """
        if _dask.is_dask_collection(X):  # out-of-core / cluster engine: _dask.py
            return _dask.fit(self, X, sites=sites, covariates=covariates)
        self._check_params()
        Y, _, _, sites, covariates = self._prepare(X, sites, covariates, reset=True)
        codes = encode_sites(sites)
        state = self._fit_arrays(Y, codes, covariates)
        self._set_state(state)
        return self

    def _fit_arrays(self, Y: np.ndarray, codes: SiteCodes, covariates) -> dict:
        """Fit from validated arrays; return the fitted state as a dict of arrays/metadata."""
        K, N = codes.n_sites, Y.shape[0]
        if K < 2:
            raise ValidationError(
                f"ComBat: all {N} samples come from one site ({codes.levels[0]!r}); there is "
                "nothing to harmonise. Pass data from at least two sites."
            )
        counts = codes.counts()
        ref = self._reference_index(list(codes.levels), counts)
        self._check_target(list(codes.levels))
        linear, continuous = self._fit_smooth(covariates)
        encoding = fit_covariate_encoding(
            linear, categorical=self.categorical, continuous=continuous
        )
        C = covariate_matrix(linear, encoding, n_samples=N)
        extra = self._extra_design(covariates, N)
        D = design_matrix(codes, C, extra)
        cov_names = covariate_column_names(encoding)
        extra_names = self._extra_names(extra)
        check_full_rank(D, [str(s) for s in codes.levels] + cov_names + extra_names, n_sites=K)

        if isinstance(Y, _dask.DaskMatrix):  # the same sums, map-reduced over row blocks
            B, mom = Y.coefficients_and_moments(D, codes.codes, K, levels=list(codes.levels),
                                                estimator=self, encoding=encoding)
        else:
            # site indicators only and no NaN cell: one pass; otherwise OLS then residuals
            one_pass = _eb.site_moments_complete(Y, codes.codes, K) if D.shape[1] == K else None
            if one_pass is not None:
                B, mom = one_pass
            else:
                cp = _eb.ols_cross_products(Y, D)
                B = _eb.solve_ols(cp)
                mom = _eb.residual_moments(Y, D, B, codes.codes, K, missing=cp.missing)
        return self._finish_fit(
            list(codes.levels), counts, ref, B, mom, encoding, cov_names + extra_names
        )

    def _covariate_design(self, covariates, n_samples: int, encoding: dict) -> np.ndarray:
        """Covariate and extra (spline) design columns of some rows, as in :meth:`_fit_arrays`
        (used by the Dask engine to build each block's own design rows)."""
        smooth = getattr(self, "smooth_", None) or {}
        linear = covariates
        if covariates is not None and smooth:
            keep = [c for c in covariates.columns if to_json_value(c) not in smooth]
            linear = covariates[keep] if keep else None
        C = covariate_matrix(linear, encoding, n_samples=n_samples)
        extra = self._extra_design(covariates, n_samples)
        return C if extra is None or not extra.shape[1] else np.hstack([C, extra])

    def _reference_index(self, levels: list, counts: np.ndarray) -> int | None:
        """Index of ``ref_site`` among ``levels`` (None without one); warns about one-sample
        sites.  Shared by the in-memory, Dask and federated fits."""
        ref = None
        if self.ref_site is not None:
            try:
                ref = encode_sites([self.ref_site], levels=levels).codes[0]
            except UnknownSiteError:
                raise UnknownSiteError(
                    f"The 'ref_site' parameter of ComBat must be one of the sites "
                    f"{levels}. Got {self.ref_site!r} instead."
                ) from None
        lonely = [levels[i] for i in np.flatnonzero(counts == 1)]
        if lonely and not self.mean_only:
            warnings.warn(
                f"Site(s) {_names(lonely)} have a single sample: their scale cannot be "
                "estimated, so only their location is adjusted (mean-only for those sites).",
                DataWarning,
                stacklevel=4,
            )
        return None if ref is None else int(ref)

    def _finish_fit(self, levels: list, counts: np.ndarray, ref: int | None, B: np.ndarray, mom,
                    encoding: dict, column_names: list) -> dict:
        """The fit after the data pass(es), from pooled sufficient statistics only.

        ``B`` are the OLS coefficients (site levels, then covariate columns) and ``mom`` the
        per-site moments (``n, r1, r2, ymin, ymax``).  Computes the grand mean and pooled
        variance, decides which features are left unchanged (with warnings), and runs the
        empirical-Bayes step; returns the fitted state for :meth:`_set_state`.  The
        federated coordinator calls this too, so both give the same model.
        """
        K, F = len(levels), B.shape[1]
        n = mom.n
        site_coef = B[:K]
        beta = B[K:]

        present = n > 0
        # grand mean: sample-weighted site levels (sva: n_i / N), over the sites observing g
        if ref is not None:
            grand_mean = np.where(present[ref], site_coef[ref], np.nan)
        else:
            w = counts[:, None] * present
            with np.errstate(invalid="ignore", divide="ignore"):
                grand_mean = (w * np.where(present, site_coef, 0.0)).sum(axis=0) / w.sum(axis=0)
        # the sums of extreme-magnitude features come scaled by powers of two (exact)
        scale = mom.scale if getattr(mom, "scale", None) is not None else np.ones(F)
        var_scaled = _eb.pooled_variance(n, mom.r1, mom.r2, ref=ref)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            var_pooled = (var_scaled * scale) * scale  # scale**2 alone may overflow

        # features left unchanged, with the reason
        all_nan = ~present.any(axis=0)
        with np.errstate(invalid="ignore"):
            const_all = (np.nanmax(np.where(present, mom.ymax, -np.inf), axis=0)
                         == np.nanmin(np.where(present, mom.ymin, np.inf), axis=0)) & ~all_nan
            const_site = ((mom.ymax == mom.ymin) & (n >= 2)).any(axis=0) & ~const_all & ~all_nan
        no_ref = np.zeros(F, dtype=bool) if ref is None else (~present[ref] & ~all_nan)
        bad_var = ~(var_scaled > 0) & ~all_nan & ~const_all & ~const_site & ~no_ref
        skip = all_nan | const_all | const_site | no_ref | bad_var
        feat_names = self._feature_labels(F)
        # a variance beyond the float64 range (features of magnitude ~1e154 and more, or
        # ~1e-154 and less) cannot be stored: refuse rather than return NaN or a wrong scale
        with np.errstate(invalid="ignore"):
            huge = ~skip & ~(np.abs(var_pooled) < np.inf)
            tiny = ~skip & ~huge & (var_pooled < np.finfo(np.float64).tiny)
        for mask, what in ((huge, "above"), (tiny, "below")):
            if mask.any():
                raise NumericalError(
                    f"ComBat: feature(s) {_names(feat_names[mask])} have a residual variance "
                    f"{what} the float64 range (values of magnitude around "
                    f"{float(np.nanmax(np.abs(np.r_[mom.ymin[:, mask].ravel(), mom.ymax[:, mask].ravel()]))):.0e}); "
                    "rescale them by a power of ten before harmonising (e.g. divide by 1e100) "
                    "and multiply the output back.",
                    features=np.flatnonzero(mask),
                )
        for mask, why in (
            (all_nan, "are missing (NaN) in every sample"),
            (const_all, "are constant"),
            (const_site, "are constant within a site"),
            (no_ref, "have no observed value in the reference site"),
            (bad_var, "have zero residual variance after the covariates"),
        ):
            if mask.any():
                warnings.warn(
                    f"Feature(s) {_names(feat_names[mask])} {why}; they are returned unchanged.",
                    DataWarning,
                    stacklevel=4,
                )
        site_missing = ~present & ~skip[None, :]
        for i in np.flatnonzero(site_missing.any(axis=1)):
            warnings.warn(
                f"Site {levels[i]!r} has no observed value of feature(s) "
                f"{_names(feat_names[site_missing[i]])}; new samples of that site keep those "
                "features unchanged.",
                DataWarning,
                stacklevel=4,
            )

        use = present & ~skip[None, :]
        safe_var = np.where(skip, 1.0, var_scaled)
        offset = np.where(present, site_coef - np.where(skip, 0.0, grand_mean), 0.0) / scale
        s1, s2, m2 = _eb.standardized_moments(n, mom.r1, mom.r2, offset, safe_var)
        fit = _eb.fit_eb(
            n, s1, s2, m2=m2, use=use, parametric=self.parametric, mean_only=self.mean_only,
            eb=self.eb, ref=ref, tol=self.tol, max_iter=self.max_iter,
            prior_features=self._prior_support(use, ref), rng=check_random_state(self.random_state),
        )
        self._check_finite_fit(fit, use, feat_names)
        if self.eb:
            noeb = [levels[i] for i in range(K) if i != ref and use[i].any() and not fit.eb_used[i]]
            if noeb:
                warnings.warn(
                    f"Empirical-Bayes priors could not be estimated for site(s) {_names(noeb)} "
                    "(fewer than two usable features, or no spread across features); their "
                    "location/scale estimates are used unshrunk (as eb=False).",
                    DataWarning,
                    stacklevel=4,
                )
        slow = [levels[i] for i in np.flatnonzero(~fit.converged)]
        if slow:
            warnings.warn(
                f"The parametric EB iteration did not reach tol={self.tol} within "
                f"max_iter={self.max_iter} for site(s) {_names(slow)}; raise max_iter.",
                SitekitWarning,
                stacklevel=4,
            )
        adjusted = use.copy()
        if ref is not None:
            adjusted[ref] = False
        priors = {
            "site": list(levels),
            "n_samples": counts.astype(np.int64),
            "n_features_used": use.sum(axis=1).astype(np.int64),
            "gamma_bar": fit.gamma_bar,
            "tau2": fit.tau2,
            "a_prior": fit.a_prior,
            "b_prior": fit.b_prior,
            "eb": fit.eb_used,
            "mean_only": fit.mean_only_site,
            "n_iter": fit.n_iter,
            "converged": fit.converged,
        }
        return {
            "sites": list(levels),
            "ref": ref,
            "covariate_encoding": encoding,
            "covariate_columns": list(column_names),
            "gamma_star_": fit.gamma_star,
            "delta_star_": fit.delta_star,
            "gamma_hat_": fit.gamma_hat,
            "delta_hat_": fit.delta_hat,
            "grand_mean_": np.where(skip, np.nan, grand_mean),
            "var_pooled_": np.where(skip, np.nan, var_pooled),
            "beta_": beta,
            "site_coef_": site_coef,
            "n_per_site_": n,
            "adjusted_": adjusted,
            "priors": priors,
        }

    def _prior_support(self, use: np.ndarray, ref: int | None) -> int | None:
        """Size of the non-parametric prior's support (None: exact), with a cost warning."""
        if self.parametric or not self.eb or self.mean_only:
            return None
        counts = use.sum(axis=1)
        if ref is not None:
            counts = np.delete(counts, ref)
        largest = int(counts.max()) if counts.size else 0
        if self.prior_features == "auto":
            return None if largest <= _AUTO_EXACT_FEATURES else _AUTO_SUPPORT
        if self.prior_features is not None:
            return int(self.prior_features)
        seconds = float((counts.astype(np.float64) ** 2).sum()) * _SECONDS_PER_PAIR
        if seconds > _SLOW_SECONDS:
            warnings.warn(
                f"Exact non-parametric EB over {largest:,} features weighs every feature against "
                f"every other one per site ({float((counts.astype(np.float64) ** 2).sum()):.1e} "
                f"likelihood terms, about {seconds:,.0f} s here). Pass prior_features=2000 "
                "(and random_state) for a sampled prior: a Monte Carlo estimate of the same "
                "posterior means at a cost of about 2 x 2000 terms per feature.",
                CostWarning,
                stacklevel=5,
            )
        return None

    def _check_finite_fit(self, fit, use: np.ndarray, feat_names: np.ndarray) -> None:
        """Final guard of the fit: every adjusted cell has a finite location and scale."""
        with np.errstate(invalid="ignore"):
            bad = use & ~(np.isfinite(fit.gamma_star) & np.isfinite(fit.delta_star)
                          & (fit.delta_star > 0))
        if bad.any():
            cols = np.flatnonzero(bad.any(axis=0))
            raise NumericalError(
                f"ComBat: the site location/scale estimates of feature(s) "
                f"{_names(feat_names[cols])} are not finite; check these features for extreme "
                "values (rescale them) or leave them out.",
                features=cols,
            )

    def _feature_labels(self, n_features: int) -> np.ndarray:
        names = getattr(self, "feature_names_in_", None)
        if names is not None and len(names) == n_features:
            return np.asarray(names, dtype=object)
        return np.asarray([f"x{j}" for j in range(n_features)], dtype=object)

    def _set_state(self, state: dict) -> None:
        self.sites_ = np.asarray(state["sites"], dtype=object)
        self._ref_index = state["ref"]
        self.covariate_encoding_ = state["covariate_encoding"]
        self.covariate_columns_ = list(state["covariate_columns"])
        for name in _ARRAYS:
            setattr(self, name, state[name])
        self.priors_ = pd.DataFrame({k: state["priors"][k] for k in _PRIOR_COLUMNS})
        self.n_iter_ = int(self.priors_["n_iter"].max())

    # ------------------------------------------------------------------ transform
    def transform(self, X, *, sites, covariates=None):
        """Remove the fitted site effects from (new) samples of known sites.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features, NaN allowed (passed through).
        sites : array-like of shape (n_samples,)
            Site of each sample; every site must be among ``sites_``.
        covariates : DataFrame or array-like, default=None
            The same covariate columns as in fit (required if fit had covariates).

        Returns
        -------
        X_new : ndarray or DataFrame of shape (n_samples, n_features)
            Harmonised features; a DataFrame (same index and columns) for DataFrame input.

        Raises
        ------
        UnknownSiteError
            A site, or a categorical covariate level, that fit never saw.
        """
        check_is_fitted(self, "gamma_star_")
        if _dask.is_dask_collection(X):  # lazy, blockwise: _dask.py
            return _dask.transform(self, X, sites=sites, covariates=covariates)
        Y, index, columns, sites, covariates = self._prepare(X, sites, covariates, reset=False)
        if self.unseen_sites == "adapt":
            new = ~np.isin(sites, self.sites_)
            if new.any():
                rows = pd.DataFrame(Y[new], columns=columns) if columns is not None else Y[new]
                model = self.adapt(
                    rows, sites=sites[new],
                    covariates=None if covariates is None else covariates.iloc[np.flatnonzero(new)]
                    .reset_index(drop=True),
                )
                out = model.transform(Y if columns is None else pd.DataFrame(Y, columns=columns),
                                      sites=sites, covariates=covariates)
                out = np.asarray(out)
                if columns is not None:
                    return pd.DataFrame(out, index=index, columns=columns, copy=False)
                return out
        codes = encode_sites(sites, levels=list(self.sites_))
        C = covariate_matrix(covariates, self.covariate_encoding_, n_samples=Y.shape[0])
        extra = self._extra_design(covariates, Y.shape[0])
        if extra is not None and extra.shape[1]:
            C = np.hstack([C, extra])
        try:
            out = _eb.adjust(Y, codes.codes, C=C, beta=self.beta_, **self._adjust_params())
        except NumericalError as exc:
            names = self._feature_labels(Y.shape[1])[exc.features]
            raise NumericalError(
                f"ComBat.transform: feature(s) {_names(names)} would come back NaN or infinite "
                "for finite input (values beyond the float64 range after the adjustment); "
                "rescale them by a power of ten before harmonising.",
                features=exc.features,
            ) from None
        if columns is not None:
            return pd.DataFrame(out, index=index, columns=columns, copy=False)
        return out

    def fit_transform(self, X, y=None, *, sites, covariates=None):
        """Fit, then harmonise the same samples (equals ``fit(X, ...).transform(X, ...)``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        sites : array-like of shape (n_samples,)
        covariates : DataFrame or array-like, default=None

        Returns
        -------
        X_new : ndarray or DataFrame of shape (n_samples, n_features)
        """
        return self.fit(X, sites=sites, covariates=covariates).transform(
            X, sites=sites, covariates=covariates
        )

    # ------------------------------------------------------------------ extensions (issue 8)
    def _check_ext_params(self) -> None:
        """Validate ``smooth`` and ``target_site`` (ComBat-GAM, M-ComBat)."""
        smooth = self.smooth
        if smooth is not None:
            if isinstance(smooth, str) or not (isinstance(smooth, dict) or hasattr(smooth, "__iter__")):
                raise ValidationError(
                    "The 'smooth' parameter of ComBat must be a list of continuous covariate "
                    f"names or a dict {{name: n_knots}}. Got {smooth!r} instead."
                )
            items = smooth.items() if isinstance(smooth, dict) else [(s, _DEFAULT_KNOTS) for s in smooth]
            for name, k in items:
                check_number(k, name=f"smooth[{name!r}] (n_knots)", owner="ComBat", low=2, integer=True)
        if self.target_site is not None and self.ref_site is not None:
            raise ValidationError(
                "ComBat: 'target_site' and 'ref_site' cannot be combined; ref_site keeps the "
                "reference rows unchanged, target_site maps every site (itself included) onto "
                "the target. Choose one."
            )

    def _smooth_spec(self) -> dict:
        if self.smooth is None:
            return {}
        if isinstance(self.smooth, dict):
            return {to_json_value(k): int(v) for k, v in self.smooth.items()}
        return {to_json_value(k): _DEFAULT_KNOTS for k in self.smooth}

    def _fit_smooth(self, covariates: pd.DataFrame | None):
        """Fit the spline knots of the ``smooth`` covariates on the training range.

        Sets ``smooth_`` and returns the covariates and ``continuous`` list of the linear
        part of the design (the smoothed columns leave it: the basis carries their effect).
        """
        spec = self._smooth_spec()
        self.smooth_ = {}
        if not spec:
            return covariates, self.continuous
        names = [] if covariates is None else [to_json_value(c) for c in covariates.columns]
        missing = [s for s in spec if s not in names]
        if missing:
            raise ValidationError(
                f"ComBat: the 'smooth' covariate(s) {missing} are not among the covariates "
                f"{names}; pass them in covariates=."
            )
        bad = [s for s in spec if s in [to_json_value(c) for c in (self.categorical or [])]]
        if bad:
            raise ValidationError(
                f"ComBat: covariate(s) {bad} are listed in 'smooth' and 'categorical'; spline "
                "terms need a continuous covariate."
            )
        lookup = {to_json_value(c): c for c in covariates.columns}
        for name, n_knots in spec.items():
            series = covariates[lookup[name]]
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
            if (pd.api.types.is_bool_dtype(series) or not np.all(np.isfinite(values))):
                raise ValidationError(
                    f"ComBat: 'smooth' covariate '{name}' must be continuous (numeric and "
                    "finite); spline terms need a continuous covariate."
                )
            lo, hi = float(values.min()), float(values.max())
            if not hi > lo:
                raise ValidationError(
                    f"ComBat: 'smooth' covariate '{name}' is constant ({lo}); a spline needs a range."
                )
            knots = np.linspace(lo, hi, n_knots)
            self.smooth_[name] = {"knots": knots, "degree": _SPLINE_DEGREE}
        keep = [c for c in covariates.columns if to_json_value(c) not in spec]
        linear = covariates[keep] if keep else None
        continuous = [c for c in (self.continuous or []) if to_json_value(c) not in spec]
        return linear, continuous

    def _extra_design(self, covariates: pd.DataFrame | None, n_samples: int) -> np.ndarray | None:
        """Spline basis of the ``smooth`` covariates (ComBat-GAM); None without smoothing.

        Values outside the training range are extended linearly (the fitted curve continues
        with its boundary slope) with a :class:`~sitekit.exceptions.DataWarning`.
        """
        smooth = getattr(self, "smooth_", None)
        if not smooth:
            return None
        from sklearn.preprocessing import SplineTransformer

        if covariates is None:
            raise ValidationError(
                f"ComBat was fitted with spline terms for {list(smooth)}; pass them as "
                "covariates= for these samples too."
            )
        lookup = {to_json_value(c): c for c in covariates.columns}
        blocks = []
        for name, spec in smooth.items():
            if name not in lookup:
                raise ValidationError(
                    f"ComBat: the 'smooth' covariate '{name}' used in fit is missing from "
                    f"covariates (got {list(lookup)})."
                )
            values = pd.to_numeric(covariates[lookup[name]], errors="coerce").to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise ValidationError(
                    f"ComBat: 'smooth' covariate '{name}' must be numeric and finite in every sample."
                )
            knots = np.asarray(spec["knots"], dtype=np.float64)
            outside = (values < knots[0]) | (values > knots[-1])
            if outside.any():
                warnings.warn(
                    f"Covariate '{name}' has {int(outside.sum())} value(s) outside the training "
                    f"range [{knots[0]:g}, {knots[-1]:g}] (e.g. {values[outside][0]:g}); its "
                    "spline effect is extended linearly from the boundary there.",
                    DataWarning,
                    stacklevel=3,
                )
            st = SplineTransformer(
                knots=knots[:, None], degree=int(spec["degree"]), include_bias=False,
                extrapolation="linear",
            ).fit(knots[:, None])
            blocks.append(st.transform(values[:, None]))
        return np.hstack(blocks)

    def _extra_names(self, extra: np.ndarray | None) -> list[str]:
        if extra is None or not extra.shape[1]:
            return []
        smooth = getattr(self, "smooth_", None) or {}
        names = [
            f"{name}[spline{k}]"
            for name, spec in smooth.items()
            for k in range(len(spec["knots"]) + int(spec["degree"]) - 2)
        ]
        return names if len(names) == extra.shape[1] else [f"extra{k}" for k in range(extra.shape[1])]

    def _extra_arrays(self) -> dict:
        """Model-file arrays of the extensions (spline knots)."""
        return {
            f"smooth.{name}.knots": np.asarray(spec["knots"], dtype=np.float64)
            for name, spec in (getattr(self, "smooth_", None) or {}).items()
        }

    def _extra_metadata(self) -> dict:
        return {"smooth": [
            {"name": name, "degree": int(spec["degree"])}
            for name, spec in (getattr(self, "smooth_", None) or {}).items()
        ]}

    def _restore_extra(self, arrays: dict, meta: dict | None) -> None:
        self.smooth_ = {}
        for item in (meta or {}).get("smooth", []):
            name = item["name"]
            self.smooth_[name] = {
                "knots": np.asarray(arrays[f"smooth.{name}.knots"], dtype=np.float64),
                "degree": int(item["degree"]),
            }

    def _check_target(self, levels: list) -> None:
        if self.target_site is None:
            return
        try:
            encode_sites([self.target_site], levels=levels)
        except UnknownSiteError:
            raise ValidationError(
                f"The 'target_site' parameter of ComBat must be one of the sites {levels}. "
                f"Got {self.target_site!r} instead."
            ) from None

    def _adjust_params(self) -> dict:
        """Keyword arguments of :func:`_eb.adjust` for this fitted model.

        With ``target_site`` the estimates are re-expressed so that every site lands on the
        target's location and scale: ``Y* = m + sigma (gamma*_t + sqrt(delta*_t) (Z - gamma*_i)
        / sqrt(delta*_i))``, i.e. grand mean ``alpha + sigma gamma*_t``, variance
        ``sigma^2 delta*_t``, ``gamma' = (gamma* - gamma*_t) / sqrt(delta*_t)`` and
        ``delta' = delta* / delta*_t``.
        """
        grand_mean = np.nan_to_num(self.grand_mean_)
        var_pooled = np.nan_to_num(self.var_pooled_, nan=1.0)
        gamma, delta = self.gamma_star_, self.delta_star_
        keep = ~self.adjusted_
        if self.target_site is not None:
            t = encode_sites([self.target_site], levels=list(self.sites_)).codes[0]
            ok = self.adjusted_[t] & np.isfinite(gamma[t]) & np.isfinite(delta[t]) & (delta[t] > 0)
            g_t = np.where(ok, gamma[t], 0.0)
            d_t = np.where(ok, delta[t], 1.0)
            grand_mean = grand_mean + np.sqrt(var_pooled) * g_t
            var_pooled = var_pooled * d_t
            with np.errstate(invalid="ignore", divide="ignore"):
                gamma = (gamma - g_t) / np.sqrt(d_t)
                delta = delta / d_t
        return dict(grand_mean=grand_mean, var_pooled=var_pooled, gamma_star=gamma,
                    delta_star=delta, keep=keep)

    def adapt(self, X, *, sites, covariates=None, min_site_size: int = 2) -> ComBat:
        """Return a model that also harmonises sites never seen in fit.

        The fitted grand mean, covariate (and spline) effects and pooled variance stay
        frozen; each new site's location and scale are estimated from its own samples,
        standardised with the frozen model, and shrunk with empirical Bayes exactly as in
        :meth:`fit` (priors from that site's own features).  The training sites' estimates
        are copied, so their outputs do not change.  ``self`` is left unchanged.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples of the new site(s), NaN allowed.
        sites : array-like of shape (n_samples,)
            Their sites; none may be known to the model already (use :meth:`transform`).
        covariates : DataFrame or array-like, default=None
            The covariate columns of fit (required if fit had covariates).
        min_site_size : int, default=2
            Fewest samples a new site needs (at least 2); under 20 a
            :class:`~sitekit.exceptions.DataWarning` says the estimates are noisy.

        Returns
        -------
        ComBat
            A new fitted model whose ``sites_`` include the new sites.

        Examples
        --------
        >>> import numpy as np
        >>> from sitekit.harmonize import ComBat
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(60, 4)); sites = np.repeat(["a", "b"], 30)
        >>> model = ComBat().fit(X, sites=sites)
        >>> new = model.adapt(rng.normal(2.0, 1.0, size=(25, 4)), sites=["c"] * 25)
        >>> list(new.sites_)
        ['a', 'b', 'c']
        """
        check_is_fitted(self, "gamma_star_")
        owner = "ComBat.adapt"
        check_number(min_site_size, name="min_site_size", owner=owner, low=2, integer=True)
        Y, _, _, site_labels, covariates = self._prepare(X, sites, covariates, reset=False)
        new = encode_sites(site_labels, owner=owner)
        known_text = {str(s) for s in self.sites_}
        already = [s for s in new.levels if str(s) in known_text]
        if already:
            raise ValidationError(
                f"{owner}: site(s) {already} are already in the model; use transform for them "
                "(adapt estimates sites the model has not seen)."
            )
        counts = new.counts()
        small = [s for s, c in zip(new.levels, counts) if c < min_site_size]
        if small:
            raise ValidationError(
                f"{owner}: site(s) {small} have fewer than {min_site_size} samples; a new site "
                f"needs at least {min_site_size} samples to estimate its location and scale."
            )
        few = [f"{s!r} ({c})" for s, c in zip(new.levels, counts) if c < _ADAPT_WARN_SIZE]
        if few:
            warnings.warn(
                f"New site(s) {', '.join(few)} have fewer than {_ADAPT_WARN_SIZE} samples; their "
                "location/scale estimates are noisy.",
                DataWarning,
                stacklevel=2,
            )
        N, F = Y.shape
        C = covariate_matrix(covariates, self.covariate_encoding_, n_samples=N)
        extra = self._extra_design(covariates, N)
        if extra is not None and extra.shape[1]:
            C = np.hstack([C, extra])
        skip = ~np.isfinite(self.grand_mean_) | ~(np.nan_to_num(self.var_pooled_) > 0)
        mean = np.nan_to_num(self.grand_mean_) + (C @ self.beta_ if C.shape[1] else 0.0)
        sd = np.sqrt(np.where(skip, 1.0, self.var_pooled_))
        Z = (Y - mean) / sd
        K = new.n_sites
        n = np.zeros((K, F))
        s1 = np.zeros((K, F))
        s2 = np.zeros((K, F))
        m2 = np.zeros((K, F))
        const = np.zeros((K, F), dtype=bool)
        for i in range(K):
            z = Z[new.codes == i]
            ok = np.isfinite(z)
            zz = np.where(ok, z, 0.0)
            n[i] = ok.sum(axis=0)
            s1[i] = zz.sum(axis=0)
            s2[i] = (zz**2).sum(axis=0)
            mu = s1[i] / np.maximum(n[i], 1.0)
            m2[i] = (np.where(ok, z - mu, 0.0) ** 2).sum(axis=0)
            with np.errstate(invalid="ignore"):
                const[i] = (n[i] >= 2) & (np.nanmax(np.where(ok, z, -np.inf), axis=0)
                                          == np.nanmin(np.where(ok, z, np.inf), axis=0))
        use = (n > 0) & ~skip[None, :] & ~const
        feat_names = self._feature_labels(F)
        for i in np.flatnonzero((const & ~skip[None, :]).any(axis=1)):
            warnings.warn(
                f"New site {new.levels[i]!r}: feature(s) {_names(feat_names[const[i] & ~skip])} "
                "are constant there; they are returned unchanged for that site.",
                DataWarning,
                stacklevel=2,
            )
        unseen = (n == 0) & ~skip[None, :]
        for i in np.flatnonzero(unseen.any(axis=1)):
            warnings.warn(
                f"New site {new.levels[i]!r} has no observed value of feature(s) "
                f"{_names(feat_names[unseen[i]])}; new samples of that site keep those features "
                "unchanged.",
                DataWarning,
                stacklevel=2,
            )
        fit = _eb.fit_eb(
            n, s1, s2, m2=m2, use=use, parametric=self.parametric, mean_only=self.mean_only,
            eb=self.eb, ref=None, tol=self.tol, max_iter=self.max_iter,
            prior_features=self._prior_support(use, None),
            rng=check_random_state(self.random_state),
        )
        # merge: old sites then new, re-sorted like fit sorts sites
        levels = list(self.sites_) + list(new.levels)
        try:
            order = sorted(range(len(levels)), key=lambda j: levels[j])
        except TypeError:
            order = sorted(range(len(levels)), key=lambda j: str(levels[j]))

        def stack(old, add):
            return np.concatenate([np.asarray(old), np.asarray(add)], axis=0)[order]

        site_coef_new = np.where(use, np.nan_to_num(self.grand_mean_) + sd * fit.gamma_hat, np.nan)
        priors_new = {
            "site": list(new.levels),
            "n_samples": counts.astype(np.int64),
            "n_features_used": use.sum(axis=1).astype(np.int64),
            "gamma_bar": fit.gamma_bar, "tau2": fit.tau2, "a_prior": fit.a_prior,
            "b_prior": fit.b_prior, "eb": fit.eb_used, "mean_only": fit.mean_only_site,
            "n_iter": fit.n_iter, "converged": fit.converged,
        }
        priors = {
            c: stack(self.priors_[c].to_numpy(), np.asarray(priors_new[c]).astype(self.priors_[c].dtype))
            for c in _PRIOR_COLUMNS
            if c != "site"
        }
        priors["site"] = [levels[j] for j in order]
        ref = None if self._ref_index is None else order.index(self._ref_index)
        state = {
            "sites": [levels[j] for j in order],
            "ref": ref,
            "covariate_encoding": self.covariate_encoding_,
            "covariate_columns": self.covariate_columns_,
            "gamma_star_": stack(self.gamma_star_, fit.gamma_star),
            "delta_star_": stack(self.delta_star_, fit.delta_star),
            "gamma_hat_": stack(self.gamma_hat_, fit.gamma_hat),
            "delta_hat_": stack(self.delta_hat_, fit.delta_hat),
            "grand_mean_": self.grand_mean_,
            "var_pooled_": self.var_pooled_,
            "beta_": self.beta_,
            "site_coef_": stack(self.site_coef_, site_coef_new),
            "n_per_site_": stack(self.n_per_site_, n),
            "adjusted_": stack(self.adjusted_, use),
            "priors": priors,
        }
        adapted = copy.deepcopy(self)
        adapted._set_state(state)
        return adapted

    # ------------------------------------------------------------------ persistence
    # save/load: PersistenceMixin (sitekit.harmonize._persistence)
    _model_kind = "ComBat"

    @classmethod
    def _from_model_file(cls, mf: ModelFile) -> ComBat:
        est = combat_from_content(mf, mf.metadata, cls=cls)
        est.file_metadata_ = mf.info()
        return est

    def _model_content(self) -> tuple[dict, dict]:
        """Arrays and JSON metadata of the fitted model (composite models embed them)."""
        check_is_fitted(self, "gamma_star_")
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        for c in _PRIOR_COLUMNS:
            if c != "site":
                arrays[f"priors.{c}"] = np.asarray(self.priors_[c].to_numpy())
        arrays.update(self._extra_arrays())
        names = getattr(self, "feature_names_in_", None)
        meta = {
            "params": to_jsonable(self.get_params()),
            "sites": [to_json_value(s) for s in self.sites_],
            "ref": self._ref_index,
            "n_features_in": int(self.n_features_in_),
            "feature_names": None if names is None else [str(s) for s in names],
            "covariate_encoding": self.covariate_encoding_,
            "covariate_columns": list(self.covariate_columns_),
            "extensions": self._extra_metadata(),
        }
        return arrays, meta


def combat_from_content(mf: ModelFile, meta: dict, prefix: str = "", cls=None) -> ComBat:
    """Rebuild a fitted ComBat from a model file's arrays (names starting with ``prefix``)
    and its metadata ``meta``, validating every array against the metadata.

    Raises
    ------
    InvalidModelError
        Shapes, dtypes, non-finite parameters or names that do not match the arrays.
    """
    cls = ComBat if cls is None else cls
    sites = meta["sites"]
    F = meta["n_features_in"]
    if not isinstance(sites, list) or len(sites) < 2 or not isinstance(F, int) or F < 1:
        raise mf.invalid(f"{prefix}sites {sites!r} / n_features_in {F!r} are not a fitted model's")
    K = len(sites)
    if len({str(s) for s in sites}) != K:
        raise mf.invalid(f"{prefix}site names {sites} are not unique")
    names = meta["feature_names"]
    if names is not None and (not isinstance(names, list) or len(names) != F
                              or len(set(map(str, names))) != F):
        raise mf.invalid(f"{prefix}feature_names has {len(names) if isinstance(names, list) else names!r} "
                         f"entries (or duplicates) for {F} features")
    ref = meta["ref"]
    if ref is not None and not (isinstance(ref, int) and 0 <= ref < K):
        raise mf.invalid(f"{prefix}reference site index {ref!r} is not one of {K} sites")
    encoding = meta["covariate_encoding"]
    columns = meta["covariate_columns"]
    base = covariate_column_names(encoding)
    for spec in encoding["columns"]:
        if spec["kind"] == "categorical" and len(set(map(str, spec["levels"]))) != len(spec["levels"]):
            raise mf.invalid(f"{prefix}covariate '{spec['name']}' has duplicated levels {spec['levels']}")
    if not isinstance(columns, list) or columns[: len(base)] != base:
        raise mf.invalid(f"{prefix}covariate_columns {columns!r} do not match the covariate encoding "
                         f"(levels give {base})")
    est = cls(**meta["params"])
    est._restore_extra({k[len(prefix):]: v for k, v in mf.arrays.items() if k.startswith(prefix)},
                       meta.get("extensions"))
    n_spline = sum(len(s["knots"]) + int(s["degree"]) - 2 for s in est.smooth_.values())
    for name in est.smooth_:
        knots = mf.array(f"{prefix}smooth.{name}.knots", finite=True)
        if knots.ndim != 1 or knots.size < 2 or not np.all(np.diff(knots) > 0):
            raise mf.invalid(f"{prefix}spline knots of '{name}' are not increasing")
    C = len(columns)
    if C != len(base) + n_spline:
        raise mf.invalid(f"{prefix}covariate_columns has {C} entries; the encoding and spline terms "
                         f"give {len(base) + n_spline}")
    adjusted = mf.array(f"{prefix}adjusted_", shape=(K, F), kind="b")
    used = adjusted.any(axis=0)
    arrays = {
        "adjusted_": adjusted,
        "gamma_star_": mf.array(f"{prefix}gamma_star_", shape=(K, F), finite=adjusted),
        "delta_star_": mf.array(f"{prefix}delta_star_", shape=(K, F), finite=adjusted, positive=adjusted),
        "gamma_hat_": mf.array(f"{prefix}gamma_hat_", shape=(K, F)),
        "delta_hat_": mf.array(f"{prefix}delta_hat_", shape=(K, F)),
        "grand_mean_": mf.array(f"{prefix}grand_mean_", shape=(F,), finite=used),
        "var_pooled_": mf.array(f"{prefix}var_pooled_", shape=(F,), finite=used, positive=used),
        "beta_": mf.array(f"{prefix}beta_", shape=(C, F), finite=np.broadcast_to(used, (C, F))),
        "site_coef_": mf.array(f"{prefix}site_coef_", shape=(K, F)),
        "n_per_site_": mf.array(f"{prefix}n_per_site_", shape=(K, F), kind="fiu", finite=True),
    }
    kinds = {"n_samples": "iu", "n_features_used": "iu", "n_iter": "iu", "eb": "b",
             "mean_only": "b", "converged": "b"}
    priors = {"site": sites} | {
        c: mf.array(f"{prefix}priors.{c}", shape=(K,), kind=kinds.get(c, "f"))
        for c in _PRIOR_COLUMNS if c != "site"
    }
    est._set_state({"sites": sites, "ref": ref, "covariate_encoding": encoding,
                    "covariate_columns": columns, **arrays, "priors": priors})
    est.n_features_in_ = F
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    if est.target_site is not None:
        est._check_target(list(sites))
    return est


register_kind("ComBat", ComBat._from_model_file)


def combat(X, *, sites, covariates=None, **params):
    """Harmonise ``X`` across sites with ComBat in one call.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    sites : array-like of shape (n_samples,)
    covariates : DataFrame or array-like, default=None
    **params
        Parameters of :class:`ComBat` (``parametric``, ``mean_only``, ``eb``,
        ``ref_site``, ``categorical``, ``continuous``, ``tol``, ``max_iter``).

    Returns
    -------
    X_new : ndarray or DataFrame of shape (n_samples, n_features)

    Examples
    --------
    >>> import numpy as np
    >>> from sitekit.harmonize import combat
    >>> X = np.random.default_rng(0).normal(size=(40, 3))
    >>> combat(X, sites=[0, 1] * 20).shape
    (40, 3)
    """
    return ComBat(**params).fit_transform(X, sites=sites, covariates=covariates)
