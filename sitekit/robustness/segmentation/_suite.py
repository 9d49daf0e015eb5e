"""Image-model checks for robustness suites: the ``[model] kind = ...`` spec and the check logic.

The TOML suite (:mod:`sitekit.robustness.suite`) delegates image models here::

    [data]
    manifest = "../cohort/manifest.csv"

    [model]
    kind = "onnx"                 # "onnx" | "threshold" | "python"
    path = "../models/unet_pet.onnx"
    # kind = "threshold": fraction = 0.41 (or suv = 2.5 for a fixed threshold)
    # kind = "python":    callable = "package.module:function"  (fn(array, spacing) -> mask)

    [checks]
    worst_site_dice = { min = 0.6 }
    mtv_bias_at_blur = { max = 30.0, fwhm_mm = 4.0 }
    attack_dice_drop = { max = 0.3, epsilon = 0.2, max_queries = 200, n_cases = 2 }
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from sitekit._typing import PathLike
from sitekit._validation import check_number, check_option
from sitekit.exceptions import ValidationError
from sitekit.features._manifest import read_manifest
from sitekit.io import read_image
from sitekit.robustness.models import (
    CallableSegmenter,
    FixedThresholdSegmenter,
    OnnxSegmenter,
    ThresholdSegmenter,
)
from sitekit.robustness.segmentation._attack import segmentation_attack
from sitekit.robustness.segmentation._evaluate import evaluate_segmentation
from sitekit.robustness.segmentation._sweeps import blur_sweep

__all__ = ["MODEL_KINDS", "IMAGE_CHECKS", "segmenter_from_config", "run_image_checks"]

MODEL_KINDS = ("onnx", "threshold", "python")

#: name -> (allowed parameters with defaults, description)
IMAGE_CHECKS: dict[str, tuple[dict, str]] = {
    "worst_site_dice": ({}, "mean Dice of the worst site (no perturbation)"),
    "mtv_bias_at_blur": ({"fwhm_mm": 4.0},
                         "|pooled mean relative MTV bias| (%) with an extra Gaussian blur of fwhm_mm"),
    "attack_dice_drop": ({"epsilon": 0.2, "max_queries": 200, "n_cases": 2, "method": "square"},
                         "mean Dice drop under a query-only attack with L_inf budget epsilon (SUV)"),
}


def segmenter_from_config(model: Mapping, *, base_dir: PathLike = ".") -> object:
    """Build a segmenter from a suite's ``[model]`` table.

    Parameters
    ----------
    model : mapping
        ``kind = "onnx"`` with ``path`` (and optional ``spacing``, ``patch_size``,
        ``overlap``, ``threshold``); ``kind = "threshold"`` with ``fraction`` (default 0.41,
        region growing) or ``suv`` (a fixed threshold); ``kind = "python"`` with
        ``callable = "module:function"`` (called as ``fn(array, spacing)``).
    base_dir : path-like, default="."
        Directory of a relative ``path``.

    Returns
    -------
    object with ``predict``

    Raises
    ------
    ValidationError
        An unknown kind, a missing key, or a callable that cannot be imported.
    """
    spec = dict(model)
    kind = check_option(spec.pop("kind", None), MODEL_KINDS, name="kind", owner="[model]")
    if kind == "onnx":
        if "path" not in spec:
            raise ValidationError("[model] kind = \"onnx\" needs 'path' (the .onnx file).")
        path = Path(spec.pop("path"))
        path = path if path.is_absolute() else Path(base_dir) / path
        allowed = {"spacing", "patch_size", "overlap", "threshold", "normalise", "output"}
        extra = set(spec) - allowed
        if extra:
            raise ValidationError(f"[model] kind = \"onnx\" has unknown key(s) {sorted(extra)}; allowed: "
                                  f"{sorted(allowed | {'path'})}.")
        return OnnxSegmenter(path, **spec)
    if kind == "threshold":
        if "suv" in spec and "fraction" in spec:
            raise ValidationError("[model] kind = \"threshold\" takes 'fraction' or 'suv', not both.")
        if "suv" in spec:
            return FixedThresholdSegmenter(spec["suv"])
        return ThresholdSegmenter(spec.get("fraction", 0.41), margin_mm=spec.get("margin_mm", 10.0))
    target = spec.get("callable")
    if not isinstance(target, str) or ":" not in target:
        raise ValidationError("[model] kind = \"python\" needs callable = \"package.module:function\".")
    mod, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(f"[model] callable '{target}' cannot be imported ({exc}); check the name and "
                              "that the module is on the Python path.") from exc
    return CallableSegmenter(fn, threshold=spec.get("threshold", 0.5))


def run_image_checks(
    model,
    manifest: PathLike | pd.DataFrame,
    checks: Mapping[str, Mapping],
    *,
    base_dir: PathLike | None = None,
    n_bootstrap: int = 200,
    random_state=0,
) -> pd.DataFrame:
    """Evaluate image checks on a manifest.

    Parameters
    ----------
    model : object with ``predict``
    manifest : path-like or pandas.DataFrame
    checks : mapping name -> {"op": "min" | "max", "threshold": float, "params": dict}
        The parsed ``[checks]`` entries whose names are in :data:`IMAGE_CHECKS`.
    base_dir : path-like, optional
    n_bootstrap : int, default=200
    random_state : int, default=0

    Returns
    -------
    pandas.DataFrame
        ``name, value, op, threshold, passed, description`` (the suite's checks table).
    """
    for name, chk in checks.items():
        check_option(name, tuple(IMAGE_CHECKS), name="check", owner="image checks")
        extra = set(chk.get("params", {})) - set(IMAGE_CHECKS[name][0])
        if extra:
            raise ValidationError(f"check '{name}' has unknown key(s) {sorted(extra)}; allowed: "
                                  f"{sorted(IMAGE_CHECKS[name][0])} and min/max.")
    params = {n: {**IMAGE_CHECKS[n][0], **c.get("params", {})} for n, c in checks.items()}
    blur = sorted({float(p["fwhm_mm"]) for n, p in params.items() if n == "mtv_bias_at_blur"})
    sweeps = [blur_sweep(tuple(blur))] if blur else None
    ev = evaluate_segmentation(model, manifest, base_dir=base_dir, perturbations=sweeps,
                               n_bootstrap=n_bootstrap, random_state=random_state)
    rows = []
    for name, chk in checks.items():
        p = params[name]
        if name == "worst_site_dice":
            s = ev.summary
            per_site = s[(s["metric"] == "dice") & (s["perturbation"] == "none") & (s["site"] != "all")]
            value = float(per_site["mean"].min())
        elif name == "mtv_bias_at_blur":
            ba = ev.bland_altman
            sel = ba[(ba["site"] == "all") & (ba["quantity"] == "mtv") & (ba["perturbation"] == "blur")
                     & np.isclose(ba["severity"], float(p["fwhm_mm"]))]
            value = abs(float(sel["bias_percent"].iloc[0]))
        else:
            value = _attack_drop(model, manifest, base_dir, p, random_state)
        op, thr = chk["op"], float(chk["threshold"])
        passed = value >= thr if op == "min" else value <= thr
        rows.append({"name": name, "value": value, "op": op, "threshold": thr, "passed": bool(passed),
                     "description": IMAGE_CHECKS[name][1]})
    return pd.DataFrame(rows, columns=["name", "value", "op", "threshold", "passed", "description"])


def _attack_drop(model, manifest, base_dir, p, random_state) -> float:
    eps = float(check_number(p["epsilon"], name="epsilon", owner="attack_dice_drop", low=0, low_inclusive=False))
    n = int(check_number(p["n_cases"], name="n_cases", owner="attack_dice_drop", integer=True, low=1))
    df, root = read_manifest(manifest, base_dir=base_dir)
    rng = np.random.default_rng(random_state)
    idx = np.sort(rng.choice(len(df), size=min(n, len(df)), replace=False))
    drops = []
    for i in idx:
        row = df.iloc[int(i)]
        image = read_image(root / row["image"])
        ref = sitk.Cast(read_image(root / row["mask"]) != 0, sitk.sitkUInt8)
        res = segmentation_attack(model, image, ref, epsilon=eps, max_queries=int(p["max_queries"]),
                                  method=p["method"], random_state=int(rng.integers(0, 2**31 - 1)))
        drops.append(res.dice_drop)
    return float(np.mean(drops))
