"""Benchmark of ``sitekit.features.extract`` against raw pyradiomics.

1. Overhead: a plain loop of ``RadiomicsFeatureExtractor(params).execute(image, mask)`` over
   the manifest (the reference) vs ``extract(manifest, out=...)`` in-process, which adds
   the checks, file hashes, provenance, part files and the consolidated Parquet.  Target:
   at most 5 % slower.
2. Parallel: ``extract`` in-process (workers=1) vs on a 2-worker Dask LocalCluster.  The
   cluster is started once and warmed up, then reused through ``scheduler=`` so that the
   ratio measures extraction, not process start-up (reported separately).  Target: >= 1.7x
   on 2 cores.

Rounds are interleaved (reference, sitekit, reference, ...) and medians reported, because
the machine is shared.  Data: ``sample_data/cohort`` (32 cases, 4 sites, 2-4 mm voxels),
its rows repeated ``--repeat`` times under new subject ids.

Run: ``.venv/bin/python benchmarks/extract.py [--quick] [--repeat K] [--rounds R]``
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radiomics.featureextractor import RadiomicsFeatureExtractor  # noqa: E402

from sitekit.features import DEFAULT_PARAMS, extract  # noqa: E402


def _manifest(tmp: Path, repeat: int) -> Path:
    src = ROOT / "sample_data" / "cohort" / "manifest.csv"
    if src.exists():
        base = pd.read_csv(src, dtype={"subject_id": str})
        base["image"] = [str(src.parent / p) for p in base["image"]]
        base["mask"] = [str(src.parent / p) for p in base["mask"]]
    else:  # no sample data: make a cohort like it
        import SimpleITK as sitk

        from sitekit.datasets import make_cohort

        cohort = make_cohort(n_per_site=8, random_state=0)
        rows = []
        for case in cohort.cases:
            img, mask = tmp / f"{case.subject_id}_img.nii.gz", tmp / f"{case.subject_id}_mask.nii.gz"
            sitk.WriteImage(case.image, str(img))
            sitk.WriteImage(case.mask, str(mask))
            rows.append({"subject_id": case.subject_id, "site": case.site, "image": str(img),
                         "mask": str(mask)})
        base = pd.DataFrame(rows)
    df = pd.concat([base.assign(subject_id=base["subject_id"] + f"_r{k}") for k in range(repeat)],
                   ignore_index=True)
    path = tmp / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def _large_manifest(tmp: Path, n: int) -> Path:
    """Clinical-size lesions: 72^3 voxels of 2.5 mm, heterogeneous sphere-ish lesions of
    radius 15-30 mm (14-113 mL), so that pyradiomics' own work per case is realistic."""
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage

    rng = np.random.default_rng(0)
    rows = []
    size = 72
    z, y, x = (np.mgrid[:size, :size, :size] - size / 2) * 2.5
    for i in range(n):
        radius = rng.uniform(15, 30)
        r = np.sqrt(x**2 + (1.2 * y) ** 2 + (0.9 * z) ** 2)
        texture = ndimage.gaussian_filter(rng.standard_normal(r.shape), 1.5)
        suv = 1.2 + rng.uniform(4, 12) * (r < radius) * (1 + 2.0 * texture)
        suv = ndimage.gaussian_filter(np.clip(suv, 0, None), 1.2).astype(np.float32)
        img = sitk.GetImageFromArray(suv)
        img.SetSpacing((2.5, 2.5, 2.5))
        mask = sitk.GetImageFromArray((r < radius).astype(np.uint8))
        mask.CopyInformation(img)
        ip, mp = tmp / f"L{i:03d}_img.nii.gz", tmp / f"L{i:03d}_mask.nii.gz"
        sitk.WriteImage(img, str(ip))
        sitk.WriteImage(mask, str(mp))
        rows.append({"subject_id": f"L{i:03d}", "site": "site_L", "image": str(ip), "mask": str(mp)})
    path = tmp / "manifest_large.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _raw(df: pd.DataFrame) -> tuple[float, float]:
    extractor = RadiomicsFeatureExtractor(str(DEFAULT_PARAMS))
    log = logging.getLogger("radiomics")
    old = log.level
    log.setLevel(logging.CRITICAL + 1)  # the same silencing sitekit applies
    try:
        t, c = time.perf_counter(), time.process_time()
        for image, mask in zip(df["image"], df["mask"], strict=True):
            extractor.execute(image, mask)
        return time.perf_counter() - t, time.process_time() - c
    finally:
        log.setLevel(old)


def _sitekit(manifest: Path, out: Path, **kw) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    features, errors = extract(manifest, out=out, force=True, **kw)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    assert errors.empty and len(features), errors
    return dt, dc


def _attributed(manifest: Path, out: Path) -> dict[str, float]:
    """CPU time inside pyradiomics' execute and SimpleITK's ReadImage vs the rest of a run."""
    import SimpleITK as sitk

    acc = {"core": 0.0}
    real_execute, real_read = RadiomicsFeatureExtractor.execute, sitk.ReadImage

    def timed(fn):
        def wrapper(*a, **k):
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                acc["core"] += time.process_time() - c
        return wrapper

    RadiomicsFeatureExtractor.execute = timed(real_execute)
    sitk.ReadImage = timed(real_read)
    try:
        total = _sitekit(manifest, out)[1]
    finally:
        RadiomicsFeatureExtractor.execute, sitk.ReadImage = real_execute, real_read
    return {"core": acc["core"], "rest": total - acc["core"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases and rounds")
    ap.add_argument("--repeat", type=int, default=None, help="copies of the 32 sample cases")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--skip-parallel", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--large", action="store_true",
                    help="synthetic clinical-size lesions (8 x repeat cases) instead of the sample cohort")
    args = ap.parse_args()
    repeat = args.repeat or (2 if args.quick else 6)
    rounds = args.rounds or (3 if args.quick else 5)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        manifest = _large_manifest(tmp, 8 * repeat) if args.large else _manifest(tmp, repeat)
        df = pd.read_csv(manifest)
        n = len(df)
        print(f"{n} cases, {rounds} interleaved rounds, {os.cpu_count()} CPUs, "
              f"load average before: {os.getloadavg()[0]:.1f}")
        _raw(df.head(4))  # warm caches and imports
        _sitekit(manifest, tmp / "warm.parquet")

        raw_t, sk_t = [], []
        for _ in range(0 if args.skip_overhead else rounds):
            raw_t.append(_raw(df))
            sk_t.append(_sitekit(manifest, tmp / "f.parquet"))
        if not args.skip_overhead:
            _report_overhead(raw_t, sk_t, n, manifest, tmp)

        if args.skip_parallel:
            return
        _parallel(manifest, tmp, n, rounds)


def _report_overhead(raw_t, sk_t, n, manifest, tmp) -> None:
    print("\n## Overhead over raw pyradiomics (1 process)")
    print(f"{'':28}{'wall s':>9}{'ms/case':>9}{'CPU s':>9}{'ms/case':>9}")
    for label, runs in (("raw pyradiomics loop", raw_t), ("sitekit extract(out=...)", sk_t)):
        w = statistics.median(r[0] for r in runs)
        c = statistics.median(r[1] for r in runs)
        print(f"{label:28}{w:9.3f}{1000 * w / n:9.1f}{c:9.3f}{1000 * c / n:9.1f}")
    for k, what in ((0, "wall"), (1, "CPU")):
        ratios = [s[k] / r[k] for s, r in zip(sk_t, raw_t, strict=True)]
        best = min(s[k] for s in sk_t) / min(r[k] for r in raw_t)
        print(f"overhead ({what} time): median of rounds {100 * (statistics.median(ratios) - 1):+.1f} %, "
              f"best-of-rounds {100 * (best - 1):+.1f} % (per round "
              f"{', '.join(f'{x:.3f}' for x in ratios)}); target <= +5 %")

    # Same-run attribution, robust to a busy machine: inside one sitekit run, the CPU
    # time spent in pyradiomics (execute) and in reading the images (what the raw loop
    # does too) vs everything else sitekit adds.
    inside = _attributed(manifest, tmp / "attr.parquet")
    print(f"same-run attribution: pyradiomics + image reading {inside['core']:.3f} s CPU, "
          f"sitekit's own work {inside['rest']:.3f} s CPU = "
          f"{100 * inside['rest'] / inside['core']:+.1f} % (checks, hashes, provenance, "
          "part files, consolidated Parquet)")


def _parallel(manifest: Path, tmp: Path, n: int, rounds: int) -> None:
    from distributed import Client, LocalCluster

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
    startup = time.perf_counter() - t
    try:
        with Client(cluster) as client:
            addr = cluster.scheduler_address
            _sitekit(manifest, tmp / "warm2.parquet", scheduler=addr)  # warm the workers
            one, two, worker_cpu = [], [], []
            for _ in range(rounds):
                one.append(_sitekit(manifest, tmp / "f1.parquet"))
                before = sum(client.run(time.process_time).values())
                two.append(_sitekit(manifest, tmp / "f2.parquet", scheduler=addr))
                worker_cpu.append(sum(client.run(time.process_time).values()) - before)
            client.close()
    finally:
        cluster.close()
    cold = _sitekit(manifest, tmp / "f3.parquet", workers=2)[0]
    one_raw = one
    one, two = [r[0] for r in one], [r[0] for r in two]
    o_med, t_med = statistics.median(one), statistics.median(two)
    speed = [a / b for a, b in zip(one, two, strict=True)]
    print("\n## Parallel: 1 process vs 2 Dask worker processes")
    print(f"{'':34}{'median s':>10}{'ms/case':>10}")
    print(f"{'workers=1 (in-process)':34}{o_med:10.3f}{1000 * o_med / n:10.1f}")
    print(f"{'2-worker LocalCluster (warm)':34}{t_med:10.3f}{1000 * t_med / n:10.1f}")
    print(f"speed-up: median {statistics.median(speed):.2f}x, best-of-rounds "
          f"{min(one) / min(two):.2f}x (per round "
          f"{', '.join(f'{x:.2f}' for x in speed)}); target >= 1.7x")
    cpu_one = statistics.median(r[1] for r in one_raw)
    cpu_two = statistics.median(worker_cpu)
    print(f"CPU time: in-process {cpu_one:.2f} s, both workers together {cpu_two:.2f} s "
          f"(parallel work efficiency {cpu_one / cpu_two:.0%}); wall-clock speed-up is "
          f"bounded by the free cores (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs)")
    print(f"LocalCluster start-up: {startup:.1f} s; a cold `workers=2` run incl. start-up: "
          f"{cold:.1f} s vs {o_med:.1f} s in-process")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
