"""Shared synthetic phantoms for the EARL tests (small FOV, seeded, cached per worker)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sitekit.datasets import get_profile, make_phantom_scan
from sitekit.harmonize.earl import PhantomGeometry

#: real PET DICOM of a NEMA IQ phantom (two GE reconstructions, MIT; see its README and LICENSE)
SMALL_FOV = (200.0, 200.0, 48.0)
FULL_FOV = (340.0, 340.0, 48.0)
REAL_DATA = Path(__file__).resolve().parents[2] / "data" / "nema-iq-dicom"


def gaussian_profile(fwhm, voxel=(2.0, 2.0, 2.0), *, noise_cov=0.10, bias=0.0):
    """A pure-Gaussian site profile (no overshoot, no calibration bias unless asked)."""
    return get_profile("site_B").replace(fwhm_mm=(float(fwhm),) * 3, voxel_mm=tuple(voxel), noise_cov=noise_cov,
                                         calibration_bias=bias, overshoot=0.0, name=f"gauss{fwhm:g}")


@lru_cache(maxsize=16)
def phantom(fwhm=8.0, voxel=(2.0, 2.0, 2.0), noise=False, seed=0, centre=(0.0, 0.0, 0.0), rotation=0.0,
            tilt=0.0, mirrored=False, fov=SMALL_FOV, fov_centre=(0.0, 0.0, 0.0), noise_cov=0.10, bias=0.0):
    """A seeded synthetic phantom scan (cached).  The default FOV covers the sphere ring only
    (fast to generate); ``FULL_FOV`` also holds the NEMA background ROIs."""
    geom = PhantomGeometry(centre=centre, rotation_deg=rotation, tilt_deg=tilt, mirrored=mirrored)
    return make_phantom_scan(gaussian_profile(fwhm, voxel, noise_cov=noise_cov, bias=bias), geometry=geom,
                             fov_mm=fov, fov_centre=fov_centre, noise=noise, random_state=seed)
