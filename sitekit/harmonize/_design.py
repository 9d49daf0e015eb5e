"""Design matrices for the ComBat family: site one-hot columns, covariates, extra terms.

The design of ComBat is ``D = [S | C | E]``:

* ``S`` (n_samples x n_sites): one-hot site indicators, no intercept (the site columns
  span the intercept);
* ``C`` (n_samples x n_cov): covariate columns -- continuous covariates as they are,
  categorical covariates in treatment coding (one column per level except the first,
  levels sorted), exactly the column space of R's ``model.matrix(~ a + b)`` without its
  intercept, so fitted values agree with ``sva::ComBat(mod=...)``;
* ``E`` (n_samples x n_extra): optional extra columns supplied by a caller, e.g. the
  spline basis of ComBat-GAM.  They are treated exactly like covariate columns (their
  effects are kept, not removed).

The covariate *encoding* is a plain JSON-serialisable dict, so that a fitted model can be
saved without pickle and re-applied to new samples:

``{"columns": [{"name": "age", "kind": "continuous"},
               {"name": "sex", "kind": "categorical", "levels": ["F", "M"]}]}``

Levels are stored as JSON values (str, int, float or bool) in their sorted order; the
first level is the reference level and gets no column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sitekit.exceptions import ConfoundingError, UnknownSiteError, ValidationError

__all__ = [
    "SiteCodes",
    "encode_sites",
    "fit_covariate_encoding",
    "covariate_matrix",
    "covariate_column_names",
    "design_matrix",
    "check_full_rank",
    "to_json_value",
]


def to_json_value(value):
    """Return ``value`` as a plain Python scalar that :mod:`json` can store."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _sorted_levels(values: Sequence) -> list:
    uniq = list(pd.unique(pd.Series(list(values), dtype=object)))
    try:
        return sorted(uniq)
    except TypeError:  # mixed types: sort by their text
        return sorted(uniq, key=str)


def _level_index(values: Sequence, levels: Sequence) -> np.ndarray:
    """Position of each value among ``levels`` (-1 if absent); '3' matches the level 3.

    Labels may come back as text after a round trip through a table, so a value that is
    not a level itself is looked up by its text.
    """
    lookup = {lev: i for i, lev in enumerate(levels)}
    text_lookup = {str(lev): i for i, lev in enumerate(levels)}
    out = np.empty(len(values), dtype=np.intp)
    for j, v in enumerate(values):
        i = lookup.get(v)
        out[j] = text_lookup.get(str(v), -1) if i is None else i
    return out


@dataclass(frozen=True)
class SiteCodes:
    """Sites as integer codes.

    Attributes
    ----------
    levels : list
        The site names in sorted order (JSON scalars).
    codes : ndarray of shape (n_samples,), dtype intp
        ``levels[codes[j]]`` is the site of sample ``j``.
    """

    levels: list
    codes: np.ndarray

    @property
    def n_sites(self) -> int:
        return len(self.levels)

    def counts(self) -> np.ndarray:
        """Number of samples per site, in the order of ``levels``."""
        return np.bincount(self.codes, minlength=self.n_sites)

    def onehot(self, dtype=np.float64) -> np.ndarray:
        """The (n_samples, n_sites) indicator matrix."""
        out = np.zeros((self.codes.size, self.n_sites), dtype=dtype)
        out[np.arange(self.codes.size), self.codes] = 1
        return out


def encode_sites(sites, *, levels: list | None = None, owner: str = "ComBat") -> SiteCodes:
    """Encode site labels as integer codes.

    Parameters
    ----------
    sites : array-like of shape (n_samples,)
        Site labels (str or int).  Missing labels are an error.
    levels : list, optional
        The known sites of a fitted model.  A label not among them raises
        :class:`~sitekit.exceptions.UnknownSiteError` listing the known ones.  Without it
        the levels are the sorted unique labels.
    owner : str
        Name used in error messages.
    """
    values = pd.Series(np.asarray(sites, dtype=object).ravel(), dtype=object)
    if values.isna().any():
        bad = np.flatnonzero(values.isna().to_numpy())[:5].tolist()
        raise ValidationError(
            f"{owner}: 'sites' has missing labels (rows {bad}); give every sample a site."
        )
    first, uniques = pd.factorize(values)
    uniques = [to_json_value(u) for u in uniques]
    if levels is None:
        levels = _sorted_levels(uniques)
    index = _level_index(uniques, levels)
    if (index < 0).any():
        unknown = _sorted_levels([u for u, i in zip(uniques, index) if i < 0])
        raise UnknownSiteError(
            f"{owner}: site(s) {unknown} were not seen in fit; the known sites are {list(levels)}. "
            "Fit on data that includes these sites (adapting to unseen sites needs their own "
            "location/scale estimate)."
        )
    codes = index[first].astype(np.intp)
    return SiteCodes(levels=list(levels), codes=codes)


def _is_categorical_dtype(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def fit_covariate_encoding(
    covariates: pd.DataFrame | None,
    *,
    categorical: Sequence | None = None,
    continuous: Sequence | None = None,
    owner: str = "ComBat",
) -> dict:
    """Decide how each covariate column enters the design.

    Parameters
    ----------
    covariates : DataFrame or None
        One column per covariate (already aligned with the samples).
    categorical, continuous : sequence of column names, optional
        Force columns to be categorical (one-hot, treatment coding) or continuous.  Columns
        not listed are auto-detected: numeric (not bool) -> continuous, everything else ->
        categorical.
    owner : str
        Name used in error messages.

    Returns
    -------
    dict
        The JSON-serialisable encoding described in the module docstring.
    """
    if covariates is None or covariates.shape[1] == 0:
        return {"columns": []}
    names = [to_json_value(c) for c in covariates.columns]
    categorical = [to_json_value(c) for c in (categorical or [])]
    continuous = [to_json_value(c) for c in (continuous or [])]
    both = sorted(set(categorical) & set(continuous), key=str)
    if both:
        raise ValidationError(
            f"{owner}: column(s) {both} are listed both as categorical and continuous; keep one."
        )
    missing = [c for c in categorical + continuous if c not in names]
    if missing:
        raise ValidationError(
            f"{owner}: covariate column(s) {missing} named in 'categorical'/'continuous' are not "
            f"among the covariates {names}."
        )
    columns = []
    for name, col in zip(names, covariates.columns):
        series = covariates[col]
        if series.isna().any():
            raise ValidationError(
                f"{owner}: covariate '{name}' has {int(series.isna().sum())} missing value(s); "
                "covariates must be complete (drop or impute those samples)."
            )
        if name in categorical or (name not in continuous and _is_categorical_dtype(series)):
            levels = _sorted_levels([to_json_value(u) for u in pd.unique(series)])
            columns.append({"name": name, "kind": "categorical", "levels": levels})
        else:
            values = pd.to_numeric(series, errors="coerce")
            if values.isna().any():
                raise ValidationError(
                    f"{owner}: covariate '{name}' is declared continuous but has non-numeric "
                    "values; declare it categorical instead."
                )
            if not np.all(np.isfinite(values.to_numpy(dtype=np.float64))):
                raise ValidationError(f"{owner}: covariate '{name}' has infinite values.")
            columns.append({"name": name, "kind": "continuous"})
    return {"columns": columns}


def covariate_column_names(encoding: dict) -> list[str]:
    """Names of the design columns a covariate encoding produces (``sex[M]`` style)."""
    out = []
    for spec in encoding["columns"]:
        if spec["kind"] == "continuous":
            out.append(str(spec["name"]))
        else:
            out.extend(f"{spec['name']}[{lev}]" for lev in spec["levels"][1:])
    return out


def covariate_matrix(
    covariates: pd.DataFrame | None, encoding: dict, *, n_samples: int, owner: str = "ComBat"
) -> np.ndarray:
    """Build the covariate block ``C`` of the design from a fitted encoding.

    Raises
    ------
    ValidationError
        A covariate column of the encoding is missing, or has missing values.
    UnknownSiteError
        A categorical level that was not seen in fit (its effect is unknown).
    """
    specs = encoding["columns"]
    if not specs:
        return np.zeros((n_samples, 0))
    if covariates is None:
        raise ValidationError(
            f"{owner} was fitted with covariates {[s['name'] for s in specs]}; pass them as "
            "covariates= for these samples too."
        )
    lookup = {to_json_value(c): c for c in covariates.columns}
    blocks = []
    for spec in specs:
        name = spec["name"]
        if name not in lookup:
            raise ValidationError(
                f"{owner}: covariate column '{name}' used in fit is missing from covariates "
                f"(got {list(lookup)})."
            )
        series = covariates[lookup[name]]
        if series.isna().any():
            raise ValidationError(
                f"{owner}: covariate '{name}' has {int(series.isna().sum())} missing value(s); "
                "covariates must be complete."
            )
        if spec["kind"] == "continuous":
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise ValidationError(
                    f"{owner}: covariate '{name}' must be numeric and finite."
                )
            blocks.append(values[:, None])
        else:
            levels = spec["levels"]
            first, uniques = pd.factorize(series)
            uniques = [to_json_value(u) for u in uniques]
            index = _level_index(uniques, levels)
            if (index < 0).any():
                unseen = [u for u, i in zip(uniques, index) if i < 0]
                raise UnknownSiteError(
                    f"{owner}: categorical covariate '{name}' has level(s) "
                    f"{_sorted_levels(unseen)} not seen in fit (known levels: {levels}); "
                    "their effect cannot be kept. Refit with samples of these levels."
                )
            codes = index[first]
            vals = codes
            block = np.zeros((len(vals), len(levels) - 1))
            rows = np.flatnonzero(codes > 0)
            block[rows, codes[rows] - 1] = 1.0
            blocks.append(block)
    return np.hstack(blocks) if blocks else np.zeros((n_samples, 0))


def design_matrix(
    sites: SiteCodes, covariates: np.ndarray | None = None, extra: np.ndarray | None = None
) -> np.ndarray:
    """Stack ``[site one-hot | covariates | extra]`` into the ComBat design.

    Parameters
    ----------
    sites : SiteCodes
    covariates : ndarray of shape (n_samples, n_cov), optional
        From :func:`covariate_matrix`.
    extra : ndarray of shape (n_samples, n_extra), optional
        Further columns whose effects are preserved (e.g. spline terms).
    """
    blocks = [sites.onehot()]
    for b in (covariates, extra):
        if b is not None and b.shape[1]:
            blocks.append(np.asarray(b, dtype=np.float64))
    return np.hstack(blocks)


def check_full_rank(design: np.ndarray, names: Sequence[str], *, n_sites: int, owner: str = "ComBat") -> None:
    """Raise :class:`~sitekit.exceptions.ConfoundingError` if ``design`` is rank deficient.

    The message names the covariate columns that are confounded with site (a column that
    lies in the span of the site indicators and the other columns), or with each other.
    """
    p = design.shape[1]
    # fast path: a well-conditioned Gram matrix of the unit-norm columns means full rank;
    # anything doubtful goes to the SVD of the design itself
    gram = design.T @ design
    norms = np.sqrt(np.diag(gram))
    if np.all(norms > 0):
        ev = np.linalg.eigvalsh(gram / np.outer(norms, norms))
        if ev.min() > 1e-10 * ev.max():
            return
    if np.linalg.matrix_rank(design) == p:
        return
    cov_names = list(names)[n_sites:]
    # a covariate column is confounded with site if it is constant within every site
    S = design[:, :n_sites]
    counts = S.sum(axis=0)
    with_site = []
    for k, name in enumerate(cov_names):
        col = design[:, n_sites + k]
        site_means = (S.T @ col) / np.maximum(counts, 1)
        if np.allclose(S @ site_means, col):
            with_site.append(name)
    if with_site:
        raise ConfoundingError(
            f"{owner}: covariate column(s) {with_site} are confounded with site (constant within "
            "every site), so their effect cannot be told apart from the site effect. Remove them "
            "from the covariates."
        )
    # otherwise the covariates are collinear among themselves (or jointly with site)
    culprits = []
    for k, name in enumerate(cov_names):
        reduced = np.delete(design, n_sites + k, axis=1)
        if np.linalg.matrix_rank(reduced) == np.linalg.matrix_rank(design):
            culprits.append(name)
    raise ConfoundingError(
        f"{owner}: the design is not of full rank; covariate column(s) {culprits} are "
        "collinear with site and/or each other. Remove one of them from the covariates."
    )
