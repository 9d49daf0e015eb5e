"""Pure plot functions for the reports: ``plot_x(data, *, ax=None) -> Axes``.

Every function takes plain data (a tidy DataFrame with documented columns), draws on the
given Axes (or on a new figure made with :class:`matplotlib.figure.Figure`, which never
touches pyplot's global state, so nothing has to be closed) and returns the Axes.  Nothing
here computes statistics: the numbers come from the analysis functions and are only drawn.

Columns are documented per function; the figures are tested by their data (lines, labels,
shaded bands), see ``tests/reports/test_figures.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from sitekit.exceptions import ValidationError

__all__ = [
    "new_axes",
    "plot_rc_curve",
    "plot_rc_vs_fwhm",
    "plot_site_effect_share",
    "plot_pca_sites",
    "plot_site_boxplots",
    "plot_eb_prior",
    "plot_eb_prior_scale",
    "plot_site_predictability",
    "plot_icc_distribution",
    "plot_icc_heatmap",
    "plot_robust_counts",
    "plot_stress_curves",
    "plot_site_forest",
    "plot_adversarial_distances",
    "plot_calibration_by_site",
]

#: Colour-blind-safe palette (Okabe & Ito) used for sites and series.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
PASS_COLOR = "#009E73"
FAIL_COLOR = "#D55E00"
BAND_COLOR = "#9ecae1"


def new_axes(figsize: tuple[float, float] = (5.0, 3.4)) -> Axes:
    """A fresh Axes on a pyplot-free :class:`~matplotlib.figure.Figure`."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def _axes(ax: Axes | None, figsize=(5.0, 3.4)) -> Axes:
    return new_axes(figsize) if ax is None else ax


def _require(data, columns: Sequence[str], who: str) -> pd.DataFrame:
    df = pd.DataFrame(data)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValidationError(
            f"{who} needs the column(s) {missing}; got {list(df.columns)}."
        )
    return df


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# --------------------------------------------------------------------------------- EARL
def plot_rc_curve(data, *, title: str | None = None, ax: Axes | None = None) -> Axes:
    """Recovery coefficient against sphere diameter with the standard's band shaded.

    Parameters
    ----------
    data : DataFrame
        Columns ``sphere_mm``, ``rc``, ``lower``, ``upper``; optional ``site`` (one line
        per site) and ``passed`` (failing spheres are marked with a red cross).  One metric.
    title : str, default=None
    ax : matplotlib Axes, default=None

    Returns
    -------
    Axes
        The band is ``ax.collections[0]`` (a ``fill_between``); one line per site.
    """
    df = _require(data, ["sphere_mm", "rc", "lower", "upper"], "plot_rc_curve")
    ax = _axes(ax)
    band = df.groupby("sphere_mm", as_index=False)[["lower", "upper"]].first().sort_values("sphere_mm")
    ax.fill_between(band["sphere_mm"], band["lower"], band["upper"], color=BAND_COLOR,
                    alpha=0.5, label="band", step=None)
    groups = df.groupby("site", sort=True) if "site" in df.columns else [(None, df)]
    for i, (site, g) in enumerate(groups):
        g = g.sort_values("sphere_mm")
        ax.plot(g["sphere_mm"], g["rc"], marker="o", color=_color(i),
                label=str(site) if site is not None else "measured")
        if "passed" in g.columns:
            bad = g[~g["passed"].astype(bool)]
            if len(bad):
                ax.plot(bad["sphere_mm"], bad["rc"], linestyle="none", marker="x", markersize=9,
                        markeredgewidth=2, color=FAIL_COLOR, label="_fail")
    ax.set_xlabel("sphere diameter (mm)")
    ax.set_ylabel("recovery coefficient")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    return ax


def plot_rc_vs_fwhm(data, *, chosen_fwhm: float | None = None,
                    compliant: tuple[float, float] | None = None, title: str | None = None,
                    ax: Axes | None = None) -> Axes:
    """Recovery coefficients against the post-filter FWHM, one line per sphere.

    Parameters
    ----------
    data : DataFrame
        Columns ``fwhm_mm``, ``sphere_mm``, ``rc``.  One site and one metric.
    chosen_fwhm : float, default=None
        The chosen filter, drawn as a vertical dashed line (label ``chosen``).
    compliant : (float, float), default=None
        The range of filters with every sphere in band, shaded (label ``compliant``).
    title : str, default=None
    ax : matplotlib Axes, default=None
    """
    df = _require(data, ["fwhm_mm", "sphere_mm", "rc"], "plot_rc_vs_fwhm")
    ax = _axes(ax)
    if compliant is not None:
        ax.axvspan(float(compliant[0]), float(compliant[1]), color=PASS_COLOR, alpha=0.15,
                   label="compliant")
    for i, (sphere, g) in enumerate(df.groupby("sphere_mm", sort=True)):
        g = g.sort_values("fwhm_mm")
        ax.plot(g["fwhm_mm"], g["rc"], color=_color(i), label=f"{sphere:g} mm")
    if chosen_fwhm is not None and np.isfinite(chosen_fwhm):
        ax.axvline(float(chosen_fwhm), color="black", linestyle="--", label="chosen")
    ax.set_xlabel("post-filter FWHM (mm)")
    ax.set_ylabel("recovery coefficient")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="x-small", ncol=2)
    return ax


# ------------------------------------------------------------------------ harmonisation
def plot_site_effect_share(data, *, ax: Axes | None = None) -> Axes:
    """Share of features with a significant site effect, before and after harmonisation.

    Parameters
    ----------
    data : DataFrame
        Columns ``stage`` (e.g. ``"before"``, ``"after"``) and ``share`` (0-1).
    """
    df = _require(data, ["stage", "share"], "plot_site_effect_share")
    ax = _axes(ax, (4.0, 3.0))
    colours = [FAIL_COLOR if i == 0 else PASS_COLOR for i in range(len(df))]
    bars = ax.bar(df["stage"].astype(str), 100 * df["share"].astype(float), color=colours)
    for b, v in zip(bars, df["share"]):
        ax.annotate(f"{100 * v:.0f} %", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize="small")
    ax.set_ylim(0, 105)
    ax.set_ylabel("features with a site effect (%)")
    return ax


def plot_pca_sites(data, *, title: str | None = None, ax: Axes | None = None) -> Axes:
    """Scatter of the first two principal components coloured by site.

    Parameters
    ----------
    data : DataFrame
        Columns ``pc1``, ``pc2``, ``site``.
    """
    df = _require(data, ["pc1", "pc2", "site"], "plot_pca_sites")
    ax = _axes(ax, (4.2, 3.6))
    for i, (site, g) in enumerate(df.groupby("site", sort=True)):
        ax.scatter(g["pc1"], g["pc2"], s=12, alpha=0.75, color=_color(i), label=str(site))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="x-small", markerscale=1.5)
    return ax


def plot_site_boxplots(data, *, feature: str | None = None, ax: Axes | None = None) -> Axes:
    """Per-site distributions of one feature, before and after harmonisation side by side.

    Parameters
    ----------
    data : DataFrame
        Columns ``site``, ``value``; optional ``stage`` (``"before"``/``"after"``).
    feature : str, default=None
        Used as the title.
    """
    df = _require(data, ["site", "value"], "plot_site_boxplots")
    ax = _axes(ax, (4.6, 3.2))
    sites = sorted(df["site"].astype(str).unique())
    stages = list(pd.unique(df["stage"])) if "stage" in df.columns else [None]
    width = 0.8 / len(stages)
    for j, stage in enumerate(stages):
        sub = df if stage is None else df[df["stage"] == stage]
        values = [sub.loc[sub["site"].astype(str) == s, "value"].dropna().to_numpy() for s in sites]
        pos = np.arange(len(sites)) + (j - (len(stages) - 1) / 2) * width
        bp = ax.boxplot(values, positions=pos, widths=width * 0.9, patch_artist=True,
                        showfliers=False, label=None if stage is None else str(stage))
        for patch in bp["boxes"]:
            patch.set_facecolor(_color(j))
            patch.set_alpha(0.6)
    ax.set_xticks(np.arange(len(sites)), sites, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("value")
    if feature:
        ax.set_title(feature, fontsize="small")
    if stages != [None]:
        ax.legend(fontsize="x-small")
    return ax


def plot_eb_prior(data, *, gamma_bar: float, tau2: float, title: str | None = None,
                  ax: Axes | None = None) -> Axes:
    """Empirical-Bayes prior fit: histogram of the per-feature site shifts with the prior.

    Parameters
    ----------
    data : DataFrame
        Column ``gamma_hat`` (one site's standardised location estimates, one per feature).
    gamma_bar, tau2 : float
        The fitted normal prior's mean and variance; drawn as a density (label ``prior``).
    """
    df = _require(data, ["gamma_hat"], "plot_eb_prior")
    ax = _axes(ax, (3.6, 2.8))
    g = df["gamma_hat"].astype(float).dropna().to_numpy()
    ax.hist(g, bins=min(30, max(5, len(g) // 2)), density=True, color="#bbbbbb",
            edgecolor="white", label="estimates")
    sd = float(np.sqrt(max(tau2, 1e-12)))
    lo = min(g.min() if len(g) else gamma_bar, gamma_bar - 3 * sd)
    hi = max(g.max() if len(g) else gamma_bar, gamma_bar + 3 * sd)
    x = np.linspace(lo, hi, 200)
    ax.plot(x, np.exp(-0.5 * ((x - gamma_bar) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)),
            color=PALETTE[0], label="prior")
    ax.set_xlabel("site shift (standardised)")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize="small")
    ax.legend(fontsize="x-small")
    return ax


def plot_eb_prior_scale(data, *, a_prior: float, b_prior: float, title: str | None = None,
                        ax: Axes | None = None) -> Axes:
    """Empirical-Bayes prior of the site scale: histogram of ``delta_hat`` with the prior.

    Parameters
    ----------
    data : DataFrame
        Column ``delta_hat`` (one site's per-feature variances of the standardised data).
    a_prior, b_prior : float
        Shape and scale of the fitted inverse-gamma prior; drawn as a density (label ``prior``).
    """
    df = _require(data, ["delta_hat"], "plot_eb_prior_scale")
    ax = _axes(ax, (3.6, 2.8))
    d = df["delta_hat"].astype(float)
    d = d[np.isfinite(d) & (d > 0)].to_numpy()
    ax.hist(d, bins=min(30, max(5, len(d) // 2)), density=True, color="#bbbbbb",
            edgecolor="white", label="estimates")
    prior = stats.invgamma(a=a_prior, scale=b_prior)
    hi = max(float(d.max()) if len(d) else 1.0, float(prior.ppf(0.99)))
    x = np.linspace(max(1e-6, 0.0), hi, 300)
    ax.plot(x, prior.pdf(x), color=PALETTE[1], label="prior")
    ax.set_xlabel("site scale (variance, standardised)")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize="small")
    ax.legend(fontsize="x-small")
    return ax


def plot_site_predictability(data, *, threshold: float = 0.625, ax: Axes | None = None) -> Axes:
    """Site predictability (AUC of predicting the site) before and after harmonisation.

    Parameters
    ----------
    data : DataFrame
        Columns ``stage`` and ``auc``.
    threshold : float, default=0.625
        Leakage warning line; a dotted line at 0.5 marks chance.
    """
    df = _require(data, ["stage", "auc"], "plot_site_predictability")
    ax = _axes(ax, (4.0, 3.0))
    colours = [FAIL_COLOR if a >= threshold else PASS_COLOR for a in df["auc"]]
    ax.bar(df["stage"].astype(str), df["auc"].astype(float), color=colours)
    ax.axhline(0.5, color="grey", linestyle=":", label="chance (0.5)")
    ax.axhline(threshold, color=FAIL_COLOR, linestyle="--", label=f"warning ({threshold:g})")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("site predictability (AUC)")
    ax.legend(fontsize="x-small", loc="lower left")
    return ax


# --------------------------------------------------------------------------- robustness
def plot_icc_distribution(data, *, threshold: float = 0.9, ax: Axes | None = None) -> Axes:
    """Histogram of per-feature ICCs with the robustness threshold.

    Parameters
    ----------
    data : DataFrame
        Column ``icc``.
    threshold : float, default=0.9
        Drawn as a vertical dashed line (label ``threshold``).
    """
    df = _require(data, ["icc"], "plot_icc_distribution")
    ax = _axes(ax, (4.4, 3.0))
    v = df["icc"].astype(float).dropna().clip(-1, 1)
    ax.hist(v, bins=np.linspace(min(0.0, float(v.min()) if len(v) else 0.0), 1.0, 21),
            color=PALETTE[0], edgecolor="white", label="features")
    ax.axvline(threshold, color=FAIL_COLOR, linestyle="--", label=f"threshold ({threshold:g})")
    ax.set_xlabel("ICC")
    ax.set_ylabel("features")
    ax.legend(fontsize="x-small", loc="upper left")
    return ax


def plot_icc_heatmap(data, *, max_features: int = 40, ax: Axes | None = None) -> Axes:
    """Heatmap of ICC by feature (rows) and perturbation (columns).

    Parameters
    ----------
    data : DataFrame
        Columns ``feature``, ``perturbation``, ``icc``.
    max_features : int, default=40
        Keep the least stable features (lowest mean ICC) when there are more.

    Returns
    -------
    Axes
        ``ax.images[0]`` holds the ICC matrix (clipped to [0, 1]).
    """
    df = _require(data, ["feature", "perturbation", "icc"], "plot_icc_heatmap")
    mat = df.pivot_table(index="feature", columns="perturbation", values="icc", aggfunc="mean")
    mat = mat.loc[mat.mean(axis=1).sort_values().index[:max_features]]
    h = 1.2 + 0.16 * len(mat)
    ax = _axes(ax, (2.8 + 0.9 * mat.shape[1], min(h, 9.0)))
    im = ax.imshow(mat.to_numpy(dtype=float).clip(0, 1), aspect="auto", vmin=0, vmax=1,
                   cmap="viridis", interpolation="nearest")
    ax.set_yticks(np.arange(len(mat)), [str(f).removeprefix("original_") for f in mat.index],
                  fontsize=6)
    ax.set_xticks(np.arange(mat.shape[1]), [str(c) for c in mat.columns], rotation=30,
                  ha="right", fontsize="small")
    ax.figure.colorbar(im, ax=ax, label="ICC")
    return ax


def plot_robust_counts(data, *, ax: Axes | None = None) -> Axes:
    """Robust-feature counts per group (perturbation or feature class).

    Parameters
    ----------
    data : DataFrame
        Columns ``group``, ``n_robust``, ``n_total``.
    """
    df = _require(data, ["group", "n_robust", "n_total"], "plot_robust_counts")
    ax = _axes(ax, (4.6, 3.0))
    x = np.arange(len(df))
    ax.bar(x, df["n_total"], color="#dddddd", label="features")
    ax.bar(x, df["n_robust"], color=PASS_COLOR, label="robust")
    ax.set_xticks(x, df["group"].astype(str), rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("features")
    ax.legend(fontsize="x-small")
    return ax


def plot_stress_curves(data, *, min_span: float = 0.1, ax: Axes | None = None) -> Axes:
    """Score against perturbation severity, one line per perturbation, CIs shaded.

    The y axis spans at least ``min_span`` score units, centred on the data, so that a change
    of a few thousandths (a model that does not care) is drawn as the flat line it is rather
    than stretched over the whole axis.

    Parameters
    ----------
    data : DataFrame
        Columns ``perturbation``, ``severity``, ``score``; optional ``ci_low``/``ci_high``
        (a shaded band per line), ``baseline`` (the unperturbed score, a dashed line labelled
        ``baseline``) and ``metric`` (the y label).
    min_span : float, default=0.1
        Smallest y-axis span in score units (0 lets matplotlib scale to the data).
    ax : matplotlib Axes, default=None

    Returns
    -------
    Axes
    """
    df = _require(data, ["perturbation", "severity", "score"], "plot_stress_curves")
    ax = _axes(ax)
    values = [df["score"].astype(float).to_numpy()]
    for i, (name, g) in enumerate(df.groupby("perturbation", sort=True)):
        g = g.sort_values("severity")
        ax.plot(g["severity"], g["score"], marker="o", color=_color(i), label=str(name))
        if {"ci_low", "ci_high"} <= set(g.columns) and g["ci_low"].notna().any():
            ax.fill_between(g["severity"].astype(float), g["ci_low"].astype(float),
                            g["ci_high"].astype(float), color=_color(i), alpha=0.2)
            values += [g["ci_low"].astype(float).to_numpy(), g["ci_high"].astype(float).to_numpy()]
    if "baseline" in df.columns and df["baseline"].notna().any():
        base = float(df["baseline"].dropna().iloc[0])
        ax.axhline(base, color="grey", linestyle="--", linewidth=1, label="baseline")
        values.append(np.array([base]))
    allv = np.concatenate(values)
    allv = allv[np.isfinite(allv)]
    if min_span and allv.size:
        lo, hi = float(allv.min()), float(allv.max())
        if hi - lo < min_span:
            mid = (lo + hi) / 2.0
            ax.set_ylim(mid - min_span / 2.0, mid + min_span / 2.0)
    ax.set_xlabel("severity")
    metric = str(df["metric"].iloc[0]) if "metric" in df.columns and len(df) else "score"
    ax.set_ylabel(metric)
    ax.legend(fontsize="x-small")
    return ax


def plot_site_forest(data, *, reference: float | None = None, title: str | None = None,
                     ax: Axes | None = None) -> Axes:
    """Forest plot of a per-site metric with confidence intervals.

    Parameters
    ----------
    data : DataFrame
        Columns ``site``, ``value``, ``ci_low``, ``ci_high``; optional ``model`` (one
        series per model, e.g. with and without harmonisation, offset vertically).
    reference : float, default=None
        A vertical reference line (e.g. the pooled value, or 0.5 for AUC).
    """
    df = _require(data, ["site", "value", "ci_low", "ci_high"], "plot_site_forest")
    sites = list(pd.unique(df["site"].astype(str)))
    models = list(pd.unique(df["model"])) if "model" in df.columns else [None]
    ax = _axes(ax, (5.0, 1.2 + 0.35 * len(sites) * max(1, len(models))))
    step = 0.6 / max(1, len(models))
    for j, model in enumerate(models):
        sub = df if model is None else df[df["model"] == model]
        y = np.array([sites.index(s) for s in sub["site"].astype(str)], dtype=float)
        y = y + (j - (len(models) - 1) / 2) * step
        v = sub["value"].astype(float).to_numpy()
        lo = v - sub["ci_low"].astype(float).to_numpy()
        hi = sub["ci_high"].astype(float).to_numpy() - v
        ax.errorbar(v, y, xerr=np.vstack([np.abs(lo), np.abs(hi)]), fmt="o", capsize=3,
                    color=_color(j), label=None if model is None else str(model))
    if reference is not None and np.isfinite(reference):
        ax.axvline(float(reference), color="grey", linestyle=":")
    ax.set_yticks(np.arange(len(sites)), sites)
    ax.invert_yaxis()
    metric = str(df["metric"].iloc[0]) if "metric" in df.columns and len(df) else "metric"
    ax.set_xlabel(metric)
    if title:
        ax.set_title(title, fontsize="small")
    if models != [None]:
        ax.legend(fontsize="x-small")
    return ax


def plot_adversarial_distances(data, *, ax: Axes | None = None) -> Axes:
    """Distribution of the smallest decision-flipping perturbation per case.

    Parameters
    ----------
    data : DataFrame
        Column ``distance`` (standardised units); optional ``norm`` (one histogram each).
    """
    df = _require(data, ["distance"], "plot_adversarial_distances")
    ax = _axes(ax, (4.4, 3.0))
    groups = df.groupby("norm", sort=True) if "norm" in df.columns else [("distance", df)]
    for i, (norm, g) in enumerate(groups):
        d = g["distance"].astype(float)
        d = d[np.isfinite(d)]
        if len(d):
            ax.hist(d, bins=20, alpha=0.6, color=_color(i), label=str(norm))
            ax.axvline(float(np.median(d)), color=_color(i), linestyle="--")
    ax.set_xlabel("smallest flipping perturbation (standardised units)")
    ax.set_ylabel("cases")
    ax.legend(fontsize="x-small")
    return ax


def plot_calibration_by_site(data, *, ax: Axes | None = None) -> Axes:
    """Reliability diagram per held-out site: observed share of positives against prediction.

    Parameters
    ----------
    data : DataFrame
        Columns ``site``, ``mean_predicted``, ``observed``; optional ``ci_low``/``ci_high``
        (the confidence interval of each bin's observed share, drawn as a band per site) and
        ``n``.
    ax : matplotlib Axes, default=None

    Returns
    -------
    Axes
        One line per site (label = site), its band when given, and the diagonal (label
        ``perfect``).
    """
    df = _require(data, ["site", "mean_predicted", "observed"], "plot_calibration_by_site")
    ax = _axes(ax, (4.4, 3.8))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    band = {"ci_low", "ci_high"} <= set(df.columns)
    for i, (site, g) in enumerate(df.groupby("site", sort=True)):
        g = g.sort_values("mean_predicted")
        ax.plot(g["mean_predicted"], g["observed"], marker="o", color=_color(i), label=str(site),
                markersize=4)
        if band and g["ci_low"].notna().any():
            ax.fill_between(g["mean_predicted"].astype(float), g["ci_low"].astype(float),
                            g["ci_high"].astype(float), color=_color(i), alpha=0.15,
                            linewidth=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed share of positives")
    ax.legend(fontsize="x-small")
    return ax
