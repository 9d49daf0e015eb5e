"""Small synthetic PET cases (SUV image + mask) for the extraction tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk


def make_case(seed: int = 0, *, n: int = 24, spacing=(3.0, 3.0, 3.0), radius: float = 5.0,
              label: int = 1) -> tuple[sitk.Image, sitk.Image]:
    """An SUV-like image with a textured blob and its spherical mask (seeded)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    c = n / 2 + rng.uniform(-1, 1, 3)
    r2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
    suv = 1.0 + rng.uniform(4, 10) * np.exp(-r2 / (2 * (radius * 0.8) ** 2))
    suv = suv * (1 + 0.25 * rng.standard_normal(suv.shape))
    img = sitk.GetImageFromArray(np.clip(suv, 0, None).astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 5.0, 2.5))
    mask = sitk.GetImageFromArray(((r2 <= radius**2) * label).astype(np.uint8))
    mask.CopyInformation(img)
    return img, mask


def write_manifest(root: Path, n_cases: int = 4, *, sites=("A", "B"), name="manifest.csv") -> Path:
    """Write ``n_cases`` NIfTI cases under ``root/images`` and a manifest CSV; return its path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_cases):
        img, mask = make_case(i)
        sitk.WriteImage(img, str(root / "images" / f"c{i}_pet.nii.gz"))
        sitk.WriteImage(mask, str(root / "images" / f"c{i}_mask.nii.gz"))
        rows.append({
            "subject_id": f"S{i:02d}", "site": sites[i % len(sites)],
            "image": f"images/c{i}_pet.nii.gz", "mask": f"images/c{i}_mask.nii.gz",
            "age": 50 + i, "outcome": i % 2,
        })
    path = root / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def case():
    return make_case(0)


@pytest.fixture
def manifest(tmp_path):
    return write_manifest(tmp_path)


@pytest.fixture
def case_factory():
    return make_case


@pytest.fixture
def manifest_factory():
    return write_manifest
