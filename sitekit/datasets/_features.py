"""A quick multi-site feature table with known site, covariate and biology effects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sitekit._validation import check_number, check_random_state
from sitekit.exceptions import ValidationError

__all__ = ["FEATURE_NAMES", "make_feature_table"]

#: Feature names in pyradiomics style, so that name-based selectors (intensity features,
#: texture classes) behave as on real extractions.
FEATURE_NAMES: tuple[str, ...] = (
    "original_firstorder_Mean", "original_firstorder_Median", "original_firstorder_Maximum",
    "original_firstorder_90Percentile", "original_firstorder_10Percentile",
    "original_firstorder_Energy", "original_firstorder_Entropy", "original_firstorder_Skewness",
    "original_firstorder_Kurtosis", "original_firstorder_RootMeanSquared",
    "original_shape_MeshVolume", "original_shape_Sphericity", "original_shape_SurfaceArea",
    "original_shape_Maximum3DDiameter", "original_shape_Elongation",
    "original_glcm_Contrast", "original_glcm_Correlation", "original_glcm_JointEntropy",
    "original_glcm_Idm", "original_glcm_ClusterShade", "original_glrlm_RunEntropy",
    "original_glrlm_ShortRunEmphasis", "original_glrlm_GrayLevelNonUniformity",
    "original_glszm_ZoneEntropy", "original_glszm_SmallAreaEmphasis",
    "original_glszm_LargeAreaHighGrayLevelEmphasis", "original_gldm_DependenceEntropy",
    "original_gldm_LargeDependenceEmphasis", "original_ngtdm_Coarseness",
    "original_ngtdm_Busyness",
)


def make_feature_table(
    *,
    n_per_site=(60, 90, 45, 75),
    n_features: int = 30,
    sites=None,
    site_effect: float = 0.6,
    scale_effect: float = 0.35,
    biology_effect: float = 0.8,
    random_state=None,
    return_truth: bool = False,
):
    """A tabular multi-site cohort with known site location/scale and covariate effects.

    For subject ``j`` at site ``i`` and feature ``g`` (all effects in units of the feature's
    residual SD ``sigma_g``)::

        y = alpha_g + beta_age_g (age - 60)/10 + beta_sex_g [sex == "M"]
            + w_g * biology + sigma_g (gamma_ig + delta_ig * eps)

    ``biology`` is a latent standard normal that drives the binary ``outcome``
    (``P(outcome=1) = sigmoid(1.5 biology)``); site never enters the outcome, so any
    site information a model uses is leakage.  Ages differ a little between sites (a
    realistic imbalance that ComBat's covariate term must protect).

    Parameters
    ----------
    n_per_site : sequence of int, default=(60, 90, 45, 75)
        Samples per site (unbalanced by default).
    n_features : int, default=30
        Number of features; the first 30 carry pyradiomics-style names, more are
        named ``feature_030`` ...
    sites : sequence of str, optional
        Site names; default ``site_A``, ``site_B`` ...
    site_effect : float, default=0.6
        SD of the additive site effects ``gamma``.
    scale_effect : float, default=0.35
        SD of ``log(delta)``, the multiplicative site effects.
    biology_effect : float, default=0.8
        Scale of the biology loadings ``w``.
    random_state : int, Generator or None
    return_truth : bool, default=False
        Also return a dict with ``alpha``, ``beta_age``, ``beta_sex``, ``w``, ``sigma``
        (per feature) and ``gamma``, ``delta`` (DataFrames sites x features).

    Returns
    -------
    table : pandas.DataFrame
        Columns ``subject_id``, ``site``, ``age``, ``sex``, ``outcome``, then the features.
    truth : dict
        Only with ``return_truth=True``.

    Examples
    --------
    >>> from sitekit.datasets import make_feature_table
    >>> df = make_feature_table(n_per_site=(20, 30), n_features=5, random_state=0)
    >>> df.shape
    (50, 10)
    """
    rng = check_random_state(random_state)
    n_per_site = [int(check_number(n, name="n_per_site", integer=True, low=1)) for n in n_per_site]
    if len(n_per_site) < 1:
        raise ValidationError("The 'n_per_site' parameter must name at least one site.")
    check_number(n_features, name="n_features", integer=True, low=1)
    if sites is None:
        sites = [f"site_{chr(ord('A') + i)}" for i in range(len(n_per_site))]
    sites = list(sites)
    if len(sites) != len(n_per_site):
        raise ValidationError(f"Got {len(sites)} site names for {len(n_per_site)} entries of n_per_site.")
    names = [FEATURE_NAMES[g] if g < len(FEATURE_NAMES) else f"feature_{g:03d}" for g in range(n_features)]
    k, g = len(sites), n_features
    alpha = rng.uniform(1.0, 10.0, g) * 10.0 ** rng.integers(0, 3, g)
    sigma = alpha * rng.uniform(0.05, 0.25, g)
    beta_age = rng.normal(0.0, 0.5, g)
    beta_sex = rng.normal(0.0, 0.4, g)
    w = rng.normal(0.0, biology_effect, g)
    gamma = rng.normal(0.0, site_effect, (k, g))
    delta = np.exp(rng.normal(0.0, scale_effect, (k, g)))

    site_col = np.repeat(sites, n_per_site)
    site_idx = np.repeat(np.arange(k), n_per_site)
    n = site_col.size
    age_shift = np.linspace(-4.0, 4.0, k)[site_idx]
    age = np.clip(rng.normal(62.0, 9.0, n) + age_shift, 25.0, 90.0).round(1)
    sex = np.where(rng.random(n) < 0.5, "F", "M")
    biology = rng.standard_normal(n)
    outcome = (rng.random(n) < 1.0 / (1.0 + np.exp(-1.5 * biology))).astype(int)
    eps = rng.standard_normal((n, g))
    z = (
        beta_age * ((age - 60.0) / 10.0)[:, None]
        + beta_sex * (sex == "M")[:, None]
        + w * biology[:, None]
        + gamma[site_idx]
        + delta[site_idx] * eps
    )
    y = alpha + sigma * z
    df = pd.DataFrame(y, columns=names)
    meta = pd.DataFrame({
        "subject_id": [f"S{i:04d}" for i in range(n)],
        "site": site_col,
        "age": age,
        "sex": pd.Categorical(sex, categories=["F", "M"]),
        "outcome": outcome,
    })
    table = pd.concat([meta, df], axis=1)
    if not return_truth:
        return table
    truth = {
        "alpha": pd.Series(alpha, index=names), "sigma": pd.Series(sigma, index=names),
        "beta_age": pd.Series(beta_age * sigma, index=names),
        "beta_sex": pd.Series(beta_sex * sigma, index=names),
        "w": pd.Series(w * sigma, index=names),
        "gamma": pd.DataFrame(gamma, index=sites, columns=names),
        "delta": pd.DataFrame(delta, index=sites, columns=names),
        "biology": biology,
    }
    return table, truth
