"""Benchmarks of the image-model harness (numbers in docs/benchmarks/segmentation.md).

1. Harness overhead: ``OnnxSegmenter.predict`` (image checks, normalisation, sliding window,
   Gaussian blending, thresholding, SimpleITK conversions) against raw
   ``onnxruntime.InferenceSession.run`` on the same volumes (the site_A sample cases are on
   the model's 2 mm grid, so no resampling is involved); target <= 10 %.  The full pipeline
   with resampling (the other sites) is reported too.
2. Cases per second of ``evaluate_segmentation`` (U-Net, clean + blur 4 mm) in-process and
   on a local Dask cluster with 1 and 2 worker processes.
3. Queries per second of the Square attack on the U-Net, against the raw predict rate.

Every timing is the best of ``--repeats`` runs; the machine load is printed with them.

    PYTHONPATH=. python benchmarks/segmentation.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings

import numpy as np
import onnxruntime as ort
import SimpleITK as sitk

from sitekit.datasets import load_sample_manifest, sample_data_dir
from sitekit.features import read_manifest
from sitekit.io import read_image
from sitekit.robustness import evaluate_segmentation, segmentation_attack
from sitekit.robustness.models import OnnxSegmenter
from sitekit.robustness.segmentation import blur_sweep

MODEL = sample_data_dir() / "models" / "unet_pet.onnx"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--overhead-repeats", type=int, default=15)
    ap.add_argument("--skip-dask", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out: dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    manifest = load_sample_manifest()
    df, root = read_manifest(manifest)
    images = {r.site: [] for r in df.itertuples()}
    for r in df.itertuples():
        images[r.site].append(sitk.Cast(read_image(root / r.image), sitk.sitkFloat32))
    model = OnnxSegmenter(MODEL)

    # 1. harness overhead on the model grid
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(MODEL), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    same_grid = images["site_A"]
    arrays = [sitk.GetArrayFromImage(i)[None, None] * np.float32(0.1) for i in same_grid]

    def raw():
        for a in arrays:
            sess.run(None, {name: a})

    def harness():
        for img in same_grid:
            model.predict(img)

    raw() and harness()  # warm up
    t_raw = t_h = float("inf")
    for _ in range(args.overhead_repeats):  # interleaved, so both see the same machine load
        t_raw = min(t_raw, best_of(raw, 1))
        t_h = min(t_h, best_of(harness, 1))
    out["overhead"] = {"cases": len(arrays), "raw_s": t_raw, "harness_s": t_h,
                       "overhead_percent": 100 * (t_h - t_raw) / t_raw}
    others = [i for s, lst in images.items() if s != "site_A" for i in lst]
    t_full = best_of(lambda: [model.predict(i) for i in others], args.repeats)
    out["resampling_pipeline"] = {"cases": len(others), "seconds_per_case": t_full / len(others)}

    # 2. cases per second, in-process and on Dask
    from distributed import LocalCluster

    sweeps = [blur_sweep((4.0,))]
    n = len(df)
    t0 = time.perf_counter()
    evaluate_segmentation(model, manifest, perturbations=sweeps, n_bootstrap=0)
    out["cases_per_second"] = {"in_process": n / (time.perf_counter() - t0)}
    for workers in () if args.skip_dask else (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        try:
            evaluate_segmentation(model, df.iloc[:4], base_dir=root, n_bootstrap=0,
                                  scheduler=cluster.scheduler_address)  # warm the workers
            t = best_of(lambda addr=cluster.scheduler_address: evaluate_segmentation(
                model, manifest, perturbations=sweeps, n_bootstrap=0, scheduler=addr), max(1, args.repeats - 1))
        finally:
            cluster.close()
        out["cases_per_second"][f"dask_{workers}_workers"] = n / t

    # 3. attack queries per second
    r = df[df["site"] == "site_A"].iloc[0]
    image = sitk.Cast(read_image(root / r["image"]), sitk.sitkFloat32)
    ref = read_image(root / r["mask"])
    t_att = best_of(lambda: segmentation_attack(model, image, ref, epsilon=0.1, max_queries=100, n_random=0,
                                                random_state=0), args.repeats)
    t_pred = best_of(lambda: [model.predict(image) for _ in range(20)], args.repeats) / 20
    out["attack"] = {"queries": 100, "queries_per_second": 100 / t_att, "predict_per_second": 1 / t_pred,
                     "attack_overhead_percent": 100 * (t_att / 100 - t_pred) / t_pred}
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
