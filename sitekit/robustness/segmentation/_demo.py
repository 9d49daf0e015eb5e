"""The segmentation step of ``sitekit demo`` and the reader of its results folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

import sitekit
from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit._version import __version__
from sitekit.exceptions import CorruptFileError, MissingFileError
from sitekit.features._manifest import read_manifest
from sitekit.io import atomic_directory, read_image, read_table
from sitekit.robustness.models import OnnxSegmenter, ThresholdSegmenter
from sitekit.robustness.segmentation._attack import background_sd, segmentation_attack
from sitekit.robustness.segmentation._evaluate import (
    crossing_severity,
    evaluate_segmentation,
    severity_curves,
)
from sitekit.robustness.segmentation._metrics import mask_array
from sitekit.robustness.segmentation._sweeps import blur_sweep

__all__ = ["demo_step", "load_segmentation_results", "RESULTS_MARKER"]

#: Marker file of a segmentation results folder (the report recognises it).
RESULTS_MARKER = "segmentation_results.json"
_FORMAT = "sitekit-segmentation-results"
_TABLES = ("metrics", "summary", "bland_altman", "curves", "crossing", "attacks")


def _sample_dir() -> Path:
    # sitekit.datasets (sample_data_dir) sits above robustness in the layers: resolve it here
    return Path(sitekit.__file__).resolve().parents[1] / "sample_data"


def demo_step(
    out_dir: PathLike,
    *,
    random_state=0,
    manifest: PathLike | None = None,
    model_path: PathLike | None = None,
    blur_fwhm_mm=(0.0, 4.0, 8.0),
    budgets_sd=(0.5, 2.0),
    max_queries: int = 150,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Evaluate the demo U-Net and the 41 % baseline per site, under blur and under attack.

    Writes ``<out_dir>/segmentation/`` (atomically, replacing an earlier one): the long
    metrics table, per-site summaries with bootstrap CIs, Bland-Altman tables, Dice-vs-blur
    curves and the blur at which each site's Dice drops by 0.05, the attacks (Square attack on
    one case at two budgets given in units of that image's background SD, with the random-noise
    comparison) with example slices, and the marker ``segmentation_results.json``.

    Parameters
    ----------
    out_dir : path-like
        The demo's output folder.
    random_state : int, default=0
        Seeds the bootstrap and the attacks.
    manifest : path-like, optional
        Default: the shipped ``sample_data/cohort/manifest.csv``.
    model_path : path-like, optional
        Default: the shipped ``sample_data/models/unet_pet.onnx``.
    blur_fwhm_mm : sequence of float, default=(0, 4, 8)
    budgets_sd : sequence of float, default=(0.5, 2.0)
        Attack budgets as multiples of the attacked image's background SD.
    max_queries : int, default=150
    progress : callable, optional
        Called with a short message before each stage.

    Returns
    -------
    pathlib.Path
        The results folder.
    """
    say = progress or (lambda msg: None)
    sample = _sample_dir()
    manifest = Path(manifest) if manifest is not None else sample / "cohort" / "manifest.csv"
    model_path = Path(model_path) if model_path is not None else sample / "models" / "unet_pet.onnx"
    for p, what in ((manifest, "manifest"), (model_path, "model")):
        if not p.exists():
            raise MissingFileError(f"The demo's {what} '{p}' is missing; run from a source checkout that has "
                                   "sample_data/ or pass it explicitly.")
    models = {"unet": OnnxSegmenter(model_path), "threshold_41": ThresholdSegmenter(0.41)}
    sweeps = [blur_sweep(tuple(blur_fwhm_mm))]
    frames: dict[str, list[pd.DataFrame]] = {k: [] for k in _TABLES}
    for name, model in models.items():
        say(f"segmentation: evaluating {name}")
        ev = evaluate_segmentation(model, manifest, perturbations=sweeps, n_bootstrap=1000,
                                   random_state=random_state)
        frames["metrics"].append(ev.metrics.assign(model=name))
        frames["summary"].append(ev.summary.assign(model=name))
        frames["bland_altman"].append(ev.bland_altman.assign(model=name))
        frames["curves"].append(severity_curves(ev.metrics, "dice").assign(model=name))
        frames["crossing"].append(crossing_severity(ev.metrics, "dice", tolerance=0.05).assign(model=name))
    # attack: the U-Net's best-segmented case (a clear lesion, so any drop is the attack's)
    say("segmentation: attacking unet")
    df, root = read_manifest(manifest)
    met = frames["metrics"][0]
    dice = met[(met["metric"] == "dice") & (met["perturbation"] == "none")]
    pick = dice.sort_values(["value", "subject_id"], ascending=[False, True]).iloc[0]
    row = df[df["subject_id"] == pick["subject_id"]].iloc[0]
    image = sitk.Cast(read_image(root / row["image"]), sitk.sitkFloat32)
    ref = sitk.Cast(read_image(root / row["mask"]) != 0, sitk.sitkUInt8)
    sd = background_sd(image, ref)
    attacks, examples = [], []
    rng = np.random.default_rng(random_state)
    clean = mask_array(models["unet"].predict(image))
    for k in budgets_sd:
        res = segmentation_attack(models["unet"], image, ref, epsilon=float(k * sd), max_queries=max_queries,
                                  method="square", random_state=int(rng.integers(0, 2**31 - 1)))
        d = res.to_dict()
        d.pop("params")
        attacks.append({"model": "unet", "subject_id": row["subject_id"], "site": row["site"],
                        "budget_sd": float(k), **d})
        attacked_img = sitk.GetArrayFromImage(image) + sitk.GetArrayFromImage(res.perturbation)
        pert_img = sitk.GetImageFromArray(attacked_img)
        pert_img.CopyInformation(image)
        attacked = mask_array(models["unet"].predict(pert_img))
        r = mask_array(ref)
        z = int(np.argmax(r.sum(axis=(1, 2))))
        examples.append({"title": f"{row['subject_id']}, epsilon = {k:g} x background SD "
                                  f"({res.epsilon:.3f} SUV): Dice {res.dice_clean:.2f} -> {res.dice_attacked:.2f}",
                         "image": attacked_img[z], "reference": r[z], "clean": clean[z], "attacked": attacked[z]})
    frames["attacks"] = [pd.DataFrame(attacks)]
    out = Path(out_dir) / "segmentation"
    with atomic_directory(out, force=True) as tmp:
        for name in _TABLES:
            pd.concat(frames[name], ignore_index=True).to_csv(tmp / f"{name}.csv", index=False)
        arrays = {}
        for i, ex in enumerate(examples):
            for key in ("image", "reference", "clean", "attacked"):
                arrays[f"{key}_{i}"] = np.asarray(ex[key], np.float32 if key == "image" else np.uint8)
        np.savez_compressed(tmp / "attack_examples.npz", **arrays)
        summ = pd.concat(frames["summary"])
        dice_sites = summ[(summ["metric"] == "dice") & (summ["perturbation"] == "none")]
        marker = {
            "format": _FORMAT, "version": 1, "sitekit_version": __version__,
            "models": {k: repr(v) for k, v in models.items()},
            "model_card": models["unet"].card_,
            "sweeps": [{"name": s.name, "severities": list(s.severities), "unit": s.unit} for s in sweeps],
            "attack": {"method": "square", "max_queries": max_queries, "budgets_sd": list(budgets_sd),
                       "background_sd": sd, "subject_id": row["subject_id"]},
            "example_titles": [ex["title"] for ex in examples],
            "dice_by_site": {f"{m}/{s}": v for m, s, v in
                             dice_sites[["model", "site", "mean"]].itertuples(index=False)},
            "random_state": random_state,
        }
        (tmp / RESULTS_MARKER).write_text(json.dumps(to_jsonable(marker), indent=2) + "\n", encoding="utf-8")
    return out


def load_segmentation_results(path: PathLike) -> dict:
    """Read a folder written by :func:`demo_step`.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict
        The tables (``metrics``, ``summary``, ``bland_altman``, ``curves``, ``crossing``,
        ``attacks`` as DataFrames), ``examples`` (list of dicts of 2-D arrays and a title) and
        ``meta`` (the marker's content).

    Raises
    ------
    MissingFileError
        No marker file in ``path``.
    CorruptFileError
        A marker of another format.
    """
    path = Path(path)
    marker = path / RESULTS_MARKER
    if not marker.is_file():
        raise MissingFileError(f"'{path}' is not a segmentation results folder (no {RESULTS_MARKER}).")
    meta = json.loads(marker.read_text(encoding="utf-8"))
    if meta.get("format") != _FORMAT:
        raise CorruptFileError(f"'{marker}' is not a sitekit segmentation results marker.")
    out: dict = {"meta": meta}
    for name in _TABLES:
        out[name] = read_table(path / f"{name}.csv", dtype={"subject_id": str, "site": str})
    examples = []
    with np.load(path / "attack_examples.npz", allow_pickle=False) as z:
        for i, title in enumerate(meta.get("example_titles", [])):
            examples.append({"title": title, **{k: z[f"{k}_{i}"] for k in ("image", "reference", "clean",
                                                                              "attacked")}})
    out["examples"] = examples
    return out
