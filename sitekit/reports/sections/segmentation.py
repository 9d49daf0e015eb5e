"""Report section for image segmentation models: per-site Dice, MTV agreement, sweeps, attacks.

Pure plot functions ``plot_x(data, *, ax=None) -> Axes`` draw plain tables; the section
builder :func:`segmentation_section` reads a results folder written by
:func:`sitekit.robustness.segmentation.demo_step` (or the same layout) and assembles them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap

from sitekit.reports.figures import PALETTE, _axes, _require
from sitekit.reports.html import Section, Verdict
from sitekit.reports.sections._common import keyword_build
from sitekit.robustness.segmentation import load_segmentation_results

__all__ = [
    "ID",
    "TITLE",
    "build",
    "plot_dice_forest",
    "plot_bland_altman",
    "plot_severity_curves",
    "plot_attack_example",
    "segmentation_section",
]


ID = "segmentation"
TITLE = "Image segmentation models across sites"


def plot_dice_forest(data, *, metric: str = "dice", ax: Axes | None = None) -> Axes:
    """Per-site mean with its bootstrap CI, one row per site and model.

    Parameters
    ----------
    data : DataFrame
        ``site, mean, ci_low, ci_high`` and optionally ``model`` (the per-site summary of
        :func:`~sitekit.robustness.segmentation.site_summary`, filtered to one metric).
    metric : str, default="dice"
        x-axis label.
    ax : Axes, optional

    Returns
    -------
    Axes
    """
    df = _require(data, ["site", "mean", "ci_low", "ci_high"], "plot_dice_forest")
    if "model" not in df.columns:
        df = df.assign(model="model")
    ax = _axes(ax, (5.0, 0.45 * len(df) + 1.2))
    models = list(dict.fromkeys(df["model"]))
    sites = list(dict.fromkeys(df["site"]))
    step = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        g = df[df["model"] == model].set_index("site").reindex(sites)
        y = np.arange(len(sites)) + (i - (len(models) - 1) / 2) * step
        ax.errorbar(g["mean"], y, xerr=[g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]], fmt="o",
                    color=PALETTE[i % len(PALETTE)], label=str(model), capsize=3)
    ax.set_yticks(np.arange(len(sites)), sites)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (mean, 95 % bootstrap CI)")
    if len(models) > 1:
        ax.legend(loc="best", fontsize="small")
    return ax


def plot_bland_altman(data, *, quantity: str = "MTV (mL)", ax: Axes | None = None) -> Axes:
    """Bland-Altman plot: difference (pred - ref) against the mean, per site, with bias and LoA.

    Parameters
    ----------
    data : DataFrame
        One row per case: ``site, pred, ref``.
    quantity : str, default="MTV (mL)"
        Axis label.
    ax : Axes, optional

    Returns
    -------
    Axes
        Lines: the pooled bias and the two 95 % limits of agreement (bias -+ 1.96 SD).
    """
    df = _require(data, ["site", "pred", "ref"], "plot_bland_altman")
    ax = _axes(ax)
    mean = (df["pred"] + df["ref"]) / 2
    diff = df["pred"] - df["ref"]
    for i, site in enumerate(dict.fromkeys(df["site"])):
        sel = df["site"] == site
        ax.scatter(mean[sel], diff[sel], s=18, color=PALETTE[i % len(PALETTE)], label=str(site))
    bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    ax.axhline(bias, color="black", lw=1, label=f"bias {bias:.2f}")
    for v in (bias - 1.96 * sd, bias + 1.96 * sd):
        ax.axhline(v, color="black", lw=0.8, ls="--")
    ax.set_xlabel(f"mean of predicted and reference {quantity}")
    ax.set_ylabel(f"predicted - reference {quantity}")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_severity_curves(data, *, metric: str = "dice", unit: str = "", ax: Axes | None = None) -> Axes:
    """Mean metric against perturbation severity, one line per site (and model).

    Parameters
    ----------
    data : DataFrame
        ``site, severity, mean`` and optionally ``model`` (from
        :func:`~sitekit.robustness.segmentation.severity_curves`).
    metric : str, default="dice"
    unit : str, default=""
        Unit of the severity (x label).
    ax : Axes, optional

    Returns
    -------
    Axes
    """
    df = _require(data, ["site", "severity", "mean"], "plot_severity_curves")
    if "model" not in df.columns:
        df = df.assign(model="")
    ax = _axes(ax)
    styles = ["-", "--", ":", "-."]
    for j, model in enumerate(dict.fromkeys(df["model"])):
        for i, site in enumerate(dict.fromkeys(df["site"])):
            g = df[(df["model"] == model) & (df["site"] == site)].sort_values("severity")
            label = f"{site} {model}".strip()
            ax.plot(g["severity"], g["mean"], styles[j % len(styles)], marker="o", ms=3,
                    color=PALETTE[i % len(PALETTE)], label=label)
    ax.set_xlabel(f"severity ({unit})" if unit else "severity")
    ax.set_ylabel(metric)
    ax.legend(loc="best", fontsize="x-small", ncol=2)
    return ax


def plot_attack_example(image: np.ndarray, reference: np.ndarray, clean: np.ndarray, attacked: np.ndarray,
                        *, title: str = "", ax: Axes | None = None) -> Axes:
    """One slice of an attacked image with the reference, clean and attacked masks outlined.

    Parameters
    ----------
    image : ndarray of shape (ny, nx)
        The attacked image slice (SUV).
    reference, clean, attacked : ndarray of shape (ny, nx)
        Masks: reference (black), clean prediction (blue), prediction under attack (orange).
    title : str, default=""
    ax : Axes, optional

    Returns
    -------
    Axes
    """
    ax = _axes(ax, (3.4, 3.4))
    ax.imshow(image, cmap=ListedColormap(np.linspace(1, 0, 256)[:, None].repeat(3, 1)), interpolation="nearest")
    for m, colour in ((reference, "black"), (clean, PALETTE[0]), (attacked, PALETTE[1])):
        if np.any(m) and not np.all(m):
            ax.contour(np.asarray(m, float), levels=[0.5], colors=[colour], linewidths=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize="small")
    return ax


def segmentation_section(path, *, section_id: str = ID, title: str = TITLE) -> Section:
    """Build the report section from a segmentation results folder.

    Parameters
    ----------
    path : path-like
        A folder written by :func:`sitekit.robustness.segmentation.demo_step` (its marker
        ``segmentation_results.json`` names the models, sweeps and attacks).
    section_id : str, default="segmentation"
    title : str, default="Image segmentation models across sites"

    Returns
    -------
    Section
    """
    res = load_segmentation_results(Path(path))
    sec = Section(section_id, title, intro=(
        "How the segmentation models do at each site (Dice with 95 % bootstrap intervals), how their "
        "metabolic tumour volumes agree with the reference, how they degrade as the images are "
        "blurred, and what a query-only attacker achieves within a small intensity budget compared "
        "with random noise of the same size."))
    summ = res["summary"]
    dice = summ[(summ["metric"] == "dice") & (summ["perturbation"] == "none") & (summ["site"] != "all")]
    sec.add_figure(plot_dice_forest(dice), "Dice per site (dot: mean over the site's cases; bar: 95 % "
                                           "bootstrap interval). The lowest dot is the worst site.")
    for model, g in dice.groupby("model"):
        worst = g.loc[g["mean"].idxmin()]
        sec.verdicts.append(Verdict(f"{model}: worst-site Dice", "INFO",
                                    f"{worst['site']}: {worst['mean']:.2f} "
                                    f"[{worst['ci_low']:.2f}, {worst['ci_high']:.2f}]"))
    sec.add_table(dice[["model", "site", "n", "mean", "ci_low", "ci_high"]], "Dice per site and model.")
    met = res["metrics"]
    for model, g in met[met["perturbation"] == "none"].groupby("model"):
        wide = g.pivot_table(index=["subject_id", "site"], columns="metric", values="value").reset_index()
        ba = pd.DataFrame({"site": wide["site"], "pred": wide["mtv_pred_ml"], "ref": wide["mtv_ref_ml"]})
        sec.add_figure(plot_bland_altman(ba), f"{model}: Bland-Altman agreement of the predicted MTV with "
                                              "the reference (solid: bias; dashed: 95 % limits).")
    ba_tab = res["bland_altman"]
    ba_tab = ba_tab[(ba_tab["perturbation"] == "none") & ba_tab["quantity"].isin(["mtv", "tlg", "suvmean"])]
    sec.add_table(ba_tab[["model", "site", "quantity", "n", "bias", "loa_low", "loa_high", "bias_percent"]],
                  "Bland-Altman bias and limits of agreement per site (pred - ref).")
    curves = res["curves"]
    if len(curves):
        sec.add_figure(plot_severity_curves(curves, unit="mm FWHM added"),
                       "Mean Dice per site as the images are blurred (solid and dashed: the two models).")
        sec.add_table(res["crossing"], "Blur (mm FWHM) at which each site's mean Dice has dropped by the "
                                       "tolerance (crossed = False: never within the sweep).")
    attacks = res["attacks"]
    if len(attacks):
        sec.add_table(attacks, "Query-only attacks: Dice clean, under the attack and under random +-epsilon "
                               "noise of the same budget; epsilon against the image's background SD.")
        for ex in res["examples"]:
            ax = plot_attack_example(ex["image"], ex["reference"], ex["clean"], ex["attacked"],
                                     title=ex["title"])
            sec.add_figure(ax, f"{ex['title']}: reference (black), clean prediction (blue), prediction "
                               "under attack (orange).", format="png")
    sec.results = {"summary": dice, "attacks": attacks}
    return sec


build = keyword_build(segmentation_section, "``path``, and optionally ``section_id`` and ``title``")
