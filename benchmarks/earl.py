"""Benchmark of the EARL phantom check and calibration sweep.

Times ``earl.measure`` + ``earl.check`` on a 256 x 256 x 200 PET phantom scan, the calibration
sweep (Gaussian FWHM 0-14 mm, 0.5 mm steps) on the same scan, and the real NEMA IQ DICOM data,
side by side with the reference open tool ``pynemaiqpet`` (its ``fit_WB_NEMA_sphere_profiles``,
which locates the spheres and fits their profiles).  ``pynemaiqpet`` pulls in numba,
scikit-image, pymirc and lmfit, so it is not a sitekit dependency: it is used when importable,
or from another interpreter given with ``--reference-python`` (e.g. a venv with
``pip install pynemaiqpet``); otherwise only sitekit's figures are printed.

    .venv/bin/python benchmarks/earl.py [--quick] [--reference-python /path/to/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sitekit.datasets import get_profile, make_phantom_scan
from sitekit.harmonize import earl

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "nema-iq-dicom"

_REF_SCRIPT = r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
import matplotlib
matplotlib.use("Agg")
from pynemaiqpet.nema_wb import fit_WB_NEMA_sphere_profiles
vol = np.load(sys.argv[1])          # x, y, z order
vox = np.array(json.loads(sys.argv[2]))
t = time.perf_counter()
c = time.process_time()
fitres, res = fit_WB_NEMA_sphere_profiles(vol, vox, sameSignal=True, dfix=1.5)
dt = time.perf_counter() - t
cpu = time.process_time() - c
res = res.sort_values("R")  # ascending diameter, as sitekit reports
print(json.dumps({"seconds": dt, "cpu": cpu, "fwhm": [float(v) for v in res["FWHM"]], "R": [float(v) for v in res["R"]],
                  "max": [float(v) for v in res["max"]], "signal": float(res["signal"].values[0])}))
"""


def big_scan(quick: bool):
    """A 256 x 256 x 200 scan (2 mm voxels): the phantom imaged through site_A, air around it."""
    size = (128, 128, 100) if quick else (256, 256, 200)
    vox = 4.0 if quick else 2.0
    prof = get_profile("site_A").replace(voxel_mm=(vox, vox, vox))
    t = time.perf_counter()
    scan = make_phantom_scan(prof, fov_mm=(300.0, 260.0, 196.0), fov_centre=(12.0, -8.0, -20.0), random_state=0)
    small = sitk.GetArrayFromImage(scan.image)
    big = np.zeros(size[::-1], np.float32)
    off = [(b - s) // 2 for b, s in zip(big.shape, small.shape)]
    big[off[0]:off[0] + small.shape[0], off[1]:off[1] + small.shape[1], off[2]:off[2] + small.shape[2]] = small
    img = sitk.GetImageFromArray(big)
    img.SetSpacing(scan.image.GetSpacing())
    img.SetOrigin(tuple(np.asarray(scan.image.GetOrigin()) - np.asarray(off[::-1]) * vox))
    img.SetMetaData("0054|1001", "BQML")
    return img, scan, time.perf_counter() - t


def timed(fn):
    """Run ``fn``; return (result, (wall seconds, CPU seconds of this process))."""
    t = time.perf_counter()
    c = time.process_time()
    out = fn()
    return out, (time.perf_counter() - t, time.process_time() - c)


def reference(ref_python: str | None, img: sitk.Image):
    """Run pynemaiqpet on the image; None when it is not available."""
    vol = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)).astype(np.float64)
    vox = list(img.GetSpacing())
    python = ref_python
    if python is None:
        try:
            import pynemaiqpet  # noqa: F401

            python = sys.executable
        except ImportError:
            return None
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "vol.npy", vol)
        (Path(d) / "ref.py").write_text(_REF_SCRIPT)
        t = time.perf_counter()
        proc = subprocess.run([python, str(Path(d) / "ref.py"), str(Path(d) / "vol.npy"), json.dumps(vox)],
                              capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def row(name, ours, ref):
    wall, cpu = ours
    head = f"  {name:<40s} sitekit {wall:6.2f} s wall {cpu:6.2f} s CPU"
    if ref is None:
        print(f"{head}   reference: not available")
    elif "error" in ref:
        print(f"{head}   reference failed: {ref['error']}")
    else:
        print(f"{head}   pynemaiqpet {ref['seconds']:6.2f} s wall {ref['cpu']:6.2f} s CPU   "
              f"CPU ratio {ref['cpu'] / cpu:4.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128 x 128 x 100 scan at 4 mm and a short sweep")
    ap.add_argument("--reference-python", help="interpreter with pynemaiqpet installed")
    args = ap.parse_args()

    img, scan, t_gen = big_scan(args.quick)
    print(f"EARL benchmark: scan {img.GetSize()} voxels of {img.GetSpacing()[0]:g} mm "
          f"(generated in {t_gen:.1f} s)")
    (m, t_meas) = timed(lambda: earl.measure(img, fill=scan.fill, site="bench"))
    chk, t_chk = timed(lambda: earl.check(m, standard="all"))
    err = np.linalg.norm(m[["centre_x", "centre_y", "centre_z"]].to_numpy()
                         - scan.truth[["centre_x", "centre_y", "centre_z"]].to_numpy(), axis=1)
    ref = reference(args.reference_python, img)
    print("\nTimings (the machine is shared: CPU seconds are the fairer comparison)")
    row("locate + measure + check (EARL1+EARL2)", (t_meas[0] + t_chk[0], t_meas[1] + t_chk[1]), ref)
    grid = np.arange(0.0, 6.01, 1.0) if args.quick else np.arange(0.0, 14.01, 0.5)
    cal, t_cal = timed(lambda: earl.calibrate(img, fill=scan.fill, fwhm_grid=grid, site="bench"))
    print(f"  {'calibration sweep (' + str(len(grid)) + ' FWHMs, EARL1)':<40s} sitekit {t_cal[0]:6.2f} s wall "
          f"{t_cal[1]:6.2f} s CPU ({t_cal[1] / len(grid):.2f} s CPU per FWHM; no reference tool calibrates)")
    print(f"\nsitekit: centre error max {err.max():.2f} mm; RCmax 37 mm {m['rc_max'].iloc[-1]:.3f}; "
          f"fitted FWHM {m['fwhm_mm'].round(2).tolist()} (site_A: 5 mm + PSF overshoot + 2 mm voxels)")
    print(f"sitekit: EARL1 filter smallest {cal.smallest_fwhm} mm, band centre {cal.centre_fwhm} mm")
    if ref and "error" not in ref:
        print(f"pynemaiqpet: fitted FWHM {np.round(ref['fwhm'], 2).tolist()}")

    if REAL.is_dir():
        print("\nReal NEMA IQ DICOM (shared/data/nema-iq-dicom), no fill given")
        for rec in ("recon_1", "recon_2"):
            (im, t_read) = timed(lambda rec=rec: earl.read_phantom(REAL / rec))
            (mm, t_m) = timed(lambda im=im, rec=rec: earl.measure(im, site=rec))
            r = reference(args.reference_python, im)
            row(f"{rec}: locate + measure (read {t_read[0]:.1f} s)", t_m, r)
            print(f"    sitekit FWHM {mm['fwhm_mm'].round(2).tolist()}  RCmax {mm['rc_max'].round(2).tolist()}")
            if r and "error" not in r:
                rcmax = np.asarray(r["max"]) / r["signal"]
                print(f"    pynemaiqpet FWHM {np.round(r['fwhm'], 2).tolist()}  "
                      f"RCmax (max/fitted signal) {np.round(rcmax, 2).tolist()}")


if __name__ == "__main__":
    main()
