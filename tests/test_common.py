"""Generic checks over every sitekit estimator.

1. scikit-learn's own estimator checks (``parametrize_with_checks``).  They call
   ``fit(X, y)`` without metadata, but a harmoniser needs ``sites=``; each harmoniser is
   therefore checked through a thin adapter that derives a site label from every row's
   values (deterministically, so a row keeps its site in any subset or order).  Every check
   that is expected to fail is listed in ``_expected_failed`` with its reason.
2. sitekit's own ``check_*`` functions, run on every harmoniser (through the same adapter)
   with real ``sites=``: row-order invariance, unknown site raises, a single site raises,
   the docstring documents exactly the ``__init__`` parameters, get/set params and clone,
   save/load round trip.

The harmonisers are ComBat in each mode (parametric, non-parametric, mean-only, without
EB, reference site, GAM, target site), CovBat and NestedComBat (whose one batch variable
the adapter takes from ``sites``).  The adapter's site labels are ``"a"``/``"b"`` so that
``ref_site="a"`` and ``target_site="a"`` exist in every check.

Add new harmonisers to ``HARMONISERS`` (instances) and their adapter to ``ADAPTERS``.
"""

from __future__ import annotations

import inspect
import re
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from sitekit.exceptions import UnknownSiteError, ValidationError
from sitekit.harmonize import ComBat, CovBat, NestedComBat

#: every public harmoniser, ComBat in each of its modes
HARMONISERS = [
    ComBat(),
    ComBat(parametric=False),
    ComBat(mean_only=True),
    ComBat(eb=False),
    ComBat(ref_site="a"),
    ComBat(smooth=["age"]),
    ComBat(target_site="a"),
    CovBat(),
    CovBat(pca_scaling="pooled"),
    CovBat(target_site="a"),
    NestedComBat(batch_cols=["b"]),
    NestedComBat(batch_cols=["b"], ref_site={"b": "a"}),
]

_NO_ITERATION = (
    "only the parametric EB iterates; with parametric=False, mean_only=True or eb=False "
    "ComBat has nothing to iterate and n_iter_ is 0"
)


# Every check expected to fail, with its reason (check name -> reason), per estimator.
def _expected_failed(est) -> dict[str, str]:
    out = {}
    if not (est.parametric and est.eb and not est.mean_only):
        out["check_transformer_n_iter"] = _NO_ITERATION
    return out


def _row_sites(X) -> np.ndarray:
    """A site label per row from the row's values: stable under subsetting and reordering."""
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        return np.full(len(X), "a", dtype=object)
    if A.ndim != 2 or A.shape[0] == 0:
        return np.full(A.shape[0] if A.ndim else 0, "a", dtype=object)
    key = np.round(np.nan_to_num(A, nan=0.0, posinf=0.0, neginf=0.0), 9)
    return np.array(["ab"[zlib.crc32(row.tobytes()) % 2] for row in key], dtype=object)


def _row_covariates(X):
    """A continuous covariate ``age`` per row from the row's values (for ``smooth``)."""
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if A.ndim != 2:
        return None
    key = np.round(np.nan_to_num(A, nan=0.0, posinf=0.0, neginf=0.0), 9)
    age = [20.0 + 60.0 * (zlib.crc32(b"age" + row.tobytes()) % 10007) / 10007 for row in key]
    return pd.DataFrame({"age": age})


class _RowSites:
    """Mixin: fill in ``sites`` (and, for ``smooth``, covariates) from the rows when a
    generic check does not pass them."""

    def _covs(self, X, covariates):
        if covariates is None and getattr(self, "smooth", None):
            return _row_covariates(X)
        return covariates

    def fit(self, X, y=None, *, sites=None, covariates=None):
        return super().fit(X, y, sites=_row_sites(X) if sites is None else sites,
                           covariates=self._covs(X, covariates))

    def transform(self, X, *, sites=None, covariates=None):
        return super().transform(X, sites=_row_sites(X) if sites is None else sites,
                                 covariates=self._covs(X, covariates))

    def fit_transform(self, X, y=None, *, sites=None, covariates=None):
        return self.fit(X, sites=sites, covariates=covariates).transform(X, sites=sites, covariates=covariates)


class _RowBatches:
    """Mixin for NestedComBat: one batch variable ``b`` from the rows, or from ``sites``."""

    @staticmethod
    def _batches(X, batches, sites):
        if batches is not None:
            return batches
        return pd.DataFrame({"b": _row_sites(X) if sites is None else np.asarray(sites)})

    def fit(self, X, y=None, *, batches=None, sites=None, covariates=None):
        return super().fit(X, y, batches=self._batches(X, batches, sites), covariates=covariates)

    def transform(self, X, *, batches=None, sites=None, covariates=None):
        return super().transform(X, batches=self._batches(X, batches, sites), covariates=covariates)

    def fit_transform(self, X, y=None, *, batches=None, sites=None, covariates=None):
        return self.fit(X, batches=batches, sites=sites, covariates=covariates).transform(
            X, batches=batches, sites=sites, covariates=covariates)


class RowSitesComBat(_RowSites, ComBat):
    __doc__ = ComBat.__doc__


class RowSitesCovBat(_RowSites, CovBat):
    __doc__ = CovBat.__doc__


class RowSitesNestedComBat(_RowBatches, NestedComBat):
    __doc__ = NestedComBat.__doc__


#: harmoniser class -> its adapter for the generic scikit-learn checks (module level, so
#: the adapters pickle like the classes they wrap)
ADAPTERS = {ComBat: RowSitesComBat, CovBat: RowSitesCovBat, NestedComBat: RowSitesNestedComBat}


def _adapted(est):
    return ADAPTERS[type(est)](**est.get_params())


@parametrize_with_checks([_adapted(e) for e in HARMONISERS], expected_failed_checks=_expected_failed)
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        check(estimator)


# ------------------------------------------------------------------ sitekit's own checks
def _cohort(seed=0, sizes=(12, 15, 10), n_features=6):
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.normal(rng.normal(0, 1, (len(sizes), n_features))[codes], 1.0) * 3 + 20
    return X, np.array(["a", "b", "c"])[codes]


def check_row_order_invariance(est):
    X, sites = _cohort()
    perm = np.random.default_rng(1).permutation(len(X))
    a = clone(est).fit_transform(X, sites=sites)[perm]
    b = clone(est).fit_transform(X[perm], sites=sites[perm])
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * X.std())


def check_unknown_site_raises(est):
    X, sites = _cohort()
    fitted = clone(est).fit(X, sites=sites)
    with pytest.raises(UnknownSiteError, match="'a', 'b', 'c'"):
        fitted.transform(X[:3], sites=["a", "zz", "zz"])


def check_single_site_raises(est):
    X, _ = _cohort()
    with pytest.raises(ValidationError, match="one site"):
        clone(est).fit(X, sites=np.full(len(X), "a"))


def check_docstring_parameters(est):
    doc = inspect.getdoc(type(est))
    section = doc.split("Parameters\n----------\n", 1)[1].split("Attributes\n----------", 1)[0]
    documented = re.findall(r"^(\w+) :", section, flags=re.M)
    params = [p for p in inspect.signature(type(est).__init__).parameters if p != "self"]
    assert documented == params, f"documented {documented} != __init__ {params}"
    for p in params:
        assert inspect.signature(type(est).__init__).parameters[p].kind == inspect.Parameter.KEYWORD_ONLY


def check_get_set_params_and_clone(est):
    params = est.get_params()
    copy = clone(est)
    assert copy is not est and copy.get_params() == params
    X, sites = _cohort(seed=3)
    fitted = clone(est).fit(X, sites=sites)
    fresh = clone(fitted)  # a clone of a fitted estimator is unfitted, same parameters
    assert fresh.get_params() == params
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(fresh))
    assert fresh.set_params(**params) is fresh and fresh.get_params() == params
    with pytest.raises(ValueError, match="Invalid parameter"):
        fresh.set_params(not_a_parameter=1)


def check_sparse_refused(est):
    """Sparse X is refused the scikit-learn way: a TypeError asking for dense data."""
    X, sites = _cohort(seed=4)
    assert est.__sklearn_tags__().input_tags.sparse is False
    with pytest.raises(TypeError, match="dense data is required"):
        clone(est).fit(sparse.csr_matrix(X), sites=sites)
    fitted = clone(est).fit(X, sites=sites)
    with pytest.raises(TypeError, match="dense data is required"):
        fitted.transform(sparse.csr_matrix(X), sites=sites)


def check_save_load_round_trip(est, tmp_path):
    if not hasattr(est, "save"):
        return
    X, sites = _cohort(seed=2)
    fitted = clone(est).fit(X, sites=sites)
    loaded = type(est).load(fitted.save(tmp_path / "model.npz"))
    np.testing.assert_array_equal(loaded.transform(X, sites=sites), fitted.transform(X, sites=sites))


SITEKIT_CHECKS = [
    check_row_order_invariance,
    check_unknown_site_raises,
    check_single_site_raises,
    check_docstring_parameters,
    check_get_set_params_and_clone,
    check_sparse_refused,
    check_save_load_round_trip,
]


@pytest.mark.parametrize("check", SITEKIT_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("est", [_adapted(e) for e in HARMONISERS], ids=repr)
def test_sitekit_checks(est, check, tmp_path):
    if "tmp_path" in inspect.signature(check).parameters:
        check(est, tmp_path)
    else:
        check(est)
