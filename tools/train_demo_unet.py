"""Train the small 3-D U-Net shipped as ``sample_data/models/unet_pet.onnx``.

Run in a separate environment that has torch (never needed by sitekit itself)::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch onnx numpy scipy SimpleITK pandas
    PYTHONPATH=. /tmp/torchenv/bin/python tools/train_demo_unet.py --out sample_data/models

Data: patient-like lesion cohorts simulated by :func:`sitekit.datasets.make_cohort` through
the physical site profiles ``site_A``, ``site_B`` and ``site_D`` (different PSFs, overshoot,
voxel sizes and noise) plus two extra training-only profiles (a sharp and a smooth scanner);
``site_C`` (older OSEM, 4 mm voxels, smooth) is never seen in training, so the demo shows an
external site.  The random state differs from the one of ``sample_data/``, so no evaluation
case is a training case.  Every case is resampled to the model spacing (2 mm isotropic);
images are scaled by 1/10 SUV (declared in the model card, so the evaluator applies the same).

The network: a 2-level 3-D U-Net (8-16-32 channels, batch norm, ReLU), sigmoid output,
trained with Dice + binary cross-entropy on 32^3 crops with flips, on one CPU thread.
The model card ``unet_pet.json`` records the data, this script, the training time and the
training/validation Dice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from sitekit.datasets import SITE_PROFILES, make_cohort

SPACING = 2.0
SCALE = 0.1  # input = SUV * SCALE
CROP = 32
BATCH = 4


def _resample(image: sitk.Image, mask: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    size_mm = np.array(image.GetSize()) * np.array(image.GetSpacing())
    new_size = [int(round(s / SPACING)) for s in size_mm]
    origin = np.array(image.GetOrigin()) - np.array(image.GetSpacing()) / 2 + SPACING / 2
    ref = sitk.Image(new_size, sitk.sitkFloat32)
    ref.SetSpacing([SPACING] * 3)
    ref.SetOrigin(origin.tolist())
    ident = sitk.Transform(3, sitk.sitkIdentity)
    img = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, ident, sitk.sitkLinear, 0.0)
    m = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), ref, ident, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(img), (sitk.GetArrayFromImage(m) >= 0.5).astype(np.float32)


def _pad_crop(a: np.ndarray, fill: float) -> np.ndarray:
    out = np.full((CROP,) * 3, fill, np.float32)
    src = [slice(max(0, (s - CROP) // 2), max(0, (s - CROP) // 2) + min(s, CROP)) for s in a.shape]
    dst = [slice(max(0, (CROP - s) // 2), max(0, (CROP - s) // 2) + min(s, CROP)) for s in a.shape]
    out[tuple(dst)] = a[tuple(src)]
    return out


def make_data(n_per_site: int, random_state: int):
    profiles = [SITE_PROFILES["site_A"], SITE_PROFILES["site_B"], SITE_PROFILES["site_D"],
                SITE_PROFILES["site_A"].replace(name="train_sharp", fwhm_mm=(4.0, 4.0, 4.0),
                                                voxel_mm=(2.0, 2.0, 2.0), noise_cov=0.14),
                SITE_PROFILES["site_B"].replace(name="train_smooth", fwhm_mm=(7.5, 7.5, 7.5),
                                                voxel_mm=(3.5, 3.5, 3.5), noise_cov=0.09,
                                                calibration_bias=0.05)]
    cohort = make_cohort(n_per_site=n_per_site, profiles=profiles, random_state=random_state)
    xs, ys, sites = [], [], []
    for case in cohort.cases:
        img, m = _resample(case.image, case.mask)
        bg = float(np.median(img))
        xs.append(_pad_crop(img, bg) * SCALE)
        ys.append(_pad_crop(m, 0.0))
        sites.append(case.site)
    return np.stack(xs)[:, None], np.stack(ys)[:, None], sites, [p.name for p in profiles]


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
    )


class UNet3D(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.e1, self.e2, self.b = block(1, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.pool = nn.MaxPool3d(2)
        self.u2 = nn.ConvTranspose3d(4 * c, 2 * c, 2, stride=2)
        self.d2 = block(4 * c, 2 * c)
        self.u1 = nn.ConvTranspose3d(2 * c, c, 2, stride=2)
        self.d1 = block(2 * c, c)
        self.head = nn.Conv3d(c, 1, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(self.pool(e1))
        b = self.b(self.pool(e2))
        d2 = self.d2(torch.cat([self.u2(b), e2], 1))
        d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
        return torch.sigmoid(self.head(d1))


def dice(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    inter = (p * y).sum(dim=(1, 2, 3, 4))
    return (2 * inter + 1) / (p.sum(dim=(1, 2, 3, 4)) + y.sum(dim=(1, 2, 3, 4)) + 1)


def hard_dice(p: np.ndarray, y: np.ndarray) -> float:
    b = p >= 0.5
    denom = b.sum() + y.sum()
    return float(2 * (b & (y > 0)).sum() / denom) if denom else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-per-site", type=int, default=30)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--random-state", type=int, default=2026)
    args = ap.parse_args()
    torch.manual_seed(args.random_state)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.random_state)
    t0 = time.time()
    x, y, sites, profile_names = make_data(args.n_per_site, args.random_state)
    n = len(x)
    order = rng.permutation(n)
    n_val = n // 8
    val, tr = order[:n_val], order[n_val:]
    t_data = time.time() - t0
    model = UNet3D(8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.iterations)
    bce = nn.BCELoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    for it in range(args.iterations):
        idx = rng.choice(tr, BATCH, replace=False)
        xb, yb = xt[idx], yt[idx]
        for ax in (2, 3, 4):
            if rng.random() < 0.5:
                xb, yb = xb.flip(ax), yb.flip(ax)
        # calibration jitter of +-10 % teaches the scale a little tolerance
        xb = xb * torch.from_numpy(rng.uniform(0.9, 1.1, (BATCH, 1, 1, 1, 1)).astype(np.float32))
        p = model(xb)
        loss = (1 - dice(p, yb)).mean() + bce(p, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if it % 100 == 0:
            print(f"iter {it} loss {np.mean(losses[-100:]):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        pred = model(xt).numpy()
    d_tr = [hard_dice(pred[i, 0], y[i, 0]) for i in tr]
    d_val = [hard_dice(pred[i, 0], y[i, 0]) for i in val]
    t_train = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "unet_pet.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, CROP, CROP, CROP), str(onnx_path),
                      input_names=["suv"], output_names=["probability"], opset_version=17,
                      dynamic_axes={"suv": {2: "z", 3: "y", 4: "x"}, "probability": {2: "z", 3: "y", 4: "x"}},
                      dynamo=False)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    card = {
        "format": "sitekit-model-card",
        "version": 1,
        "name": "unet_pet",
        "task": "binary lesion segmentation of FDG-PET (SUV) volumes",
        "input": {"name": "suv", "layout": "NCDHW (z, y, x)", "units": "SUV"},
        "output": {"name": "probability", "kind": "probability"},
        "spacing": [SPACING, SPACING, SPACING],
        "patch_size": [CROP, CROP, CROP],
        "normalise": {"kind": "scale", "offset": 0.0, "scale": SCALE},
        "threshold": 0.5,
        "sha256": digest,
        "architecture": "3-D U-Net, 2 levels, 8-16-32 channels, batch norm, sigmoid output",
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "training": {
            "script": "tools/train_demo_unet.py",
            "framework": f"torch {torch.__version__} (CPU, 1 thread)",
            "data": (f"sitekit.datasets.make_cohort(n_per_site={args.n_per_site}, "
                     f"random_state={args.random_state}) through the profiles "
                     f"{', '.join(profile_names)}; site_C never seen"),
            "n_cases": n, "n_train": len(tr), "n_validation": len(val),
            "crop_voxels": CROP, "iterations": args.iterations, "batch_size": BATCH,
            "loss": "soft Dice + binary cross-entropy", "optimiser": "Adam lr 3e-3, cosine schedule",
            "augmentation": "flips along each axis, calibration x U(0.9, 1.1)",
            "seconds_data": round(t_data, 1), "seconds_total": round(t_train, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 4),
            "dice_train_mean": round(float(np.mean(d_tr)), 4),
            "dice_validation_mean": round(float(np.mean(d_val)), 4),
            "dice_validation_by_profile": {
                s: round(float(np.mean([hard_dice(pred[i, 0], y[i, 0]) for i in val if sites[i] == s])), 4)
                for s in sorted({sites[i] for i in val})
            },
        },
        "intended_use": "demonstration of sitekit's image-model robustness tools only; not for clinical use",
    }
    (args.out / "unet_pet.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["training"], indent=2))


if __name__ == "__main__":
    main()
