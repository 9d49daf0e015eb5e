"""Patient-like lesions imaged through each site's scanner profile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from sitekit._validation import check_number, check_random_state
from sitekit.datasets._profiles import (
    SITE_PROFILES,
    SiteProfile,
    get_profile,
    occupancy_from_sdf,
    render,
)

__all__ = ["Case", "Cohort", "make_cohort", "make_case"]


@dataclass
class Case:
    """One imaged lesion: SUV image (float32), mask (uint8, label 1) and its truth."""

    subject_id: str
    site: str
    image: sitk.Image
    mask: sitk.Image
    truth: dict


@dataclass
class Cohort:
    """A multi-site cohort: the cases and a table of their covariates and truth."""

    cases: list[Case]
    table: pd.DataFrame


def _lesion_biology(rng: np.random.Generator) -> dict:
    grade = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    radius = float(np.exp(rng.normal(np.log(9.0), 0.25)) * (0.85 + 0.1 * grade))
    suv = float(max(2.5, 3.0 + 2.5 * grade + rng.normal(0.0, 0.8)))
    necrosis = float(np.clip(0.15 * grade - 0.1 + rng.normal(0.0, 0.05), 0.0, 0.6))
    lobes = rng.normal(0.0, 1.0, (3, 3))
    lobes /= np.linalg.norm(lobes, axis=1, keepdims=True)
    lobe_amp = rng.normal(0.0, 0.12, 3)
    logit = -0.3 + 1.3 * (grade - 2) + 2.0 * np.log(radius / 9.0) + 2.0 * necrosis + rng.normal(0.0, 0.5)
    outcome = int(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
    return {
        "grade": grade, "radius_mm": radius, "suv": suv, "necrosis": necrosis,
        "lobes": lobes, "lobe_amp": lobe_amp, "outcome": outcome,
    }


def make_case(
    profile: str | SiteProfile,
    *,
    subject_id: str = "S0000",
    age: float = 60.0,
    biology: dict | None = None,
    crop_mm: float = 64.0,
    noise: bool = True,
    random_state=None,
) -> Case:
    """Image one irregular, heterogeneous lesion in soft tissue through a site profile.

    The lesion is a sphere of radius ``radius_mm`` deformed by three random lobes, with
    uptake ``suv`` (SUV), a central necrotic dip of relative depth ``necrosis`` and a
    smooth multiplicative texture (15 %); the background is soft tissue of SUV ~1.2
    (slightly lower with age) with a 5 % texture.  The image is in SUV (float32); the mask is
    the true lesion at the site's voxel grid (partial volume >= 0.5).
    """
    prof = get_profile(profile)
    rng = check_random_state(random_state)
    bio = biology or _lesion_biology(rng)
    vox = np.asarray(prof.voxel_mm, float)
    size = np.maximum(4, np.round(crop_mm / vox)).astype(int)
    origin = -(size - 1) / 2.0 * vox
    centre = rng.uniform(-0.5, 0.5, 3) * vox  # sub-voxel position
    bg = 1.2 - 0.004 * (age - 60.0) + rng.normal(0.0, 0.05)
    tex_seed, tex_seed_bg = rng.integers(0, 2**32, 2)

    def sdf(x, y, z):
        dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
        r = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
        ux, uy, uz = dx / r, dy / r, dz / r
        shape = np.ones(np.broadcast_shapes(r.shape), np.float32)
        for (vx, vy, vz), a in zip(bio["lobes"], bio["lobe_amp"]):
            t = ux * vx + uy * vy + uz * vz
            shape = shape + a * (t * t * 1.5 - 0.5)
        return (r - bio["radius_mm"] * shape).astype(np.float32), r

    def texture(shape, seed, h, amp):
        f = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        f = ndimage.gaussian_filter(f, 2.5 / h, mode="wrap")
        return 1.0 + amp * f / f.std()

    def density(x, y, z, h):
        d, r = sdf(x, y, z)
        occ = occupancy_from_sdf(d, h)
        shape = occ.shape
        core = 1.0 - bio["necrosis"] * np.exp(-((r / (0.5 * bio["radius_mm"])) ** 2))
        lesion = bio["suv"] * core * texture(shape, tex_seed, h, 0.15)
        tissue = bg * texture(shape, tex_seed_bg, h, 0.05)
        return tissue * (1.0 - occ) + lesion * occ

    def occupancy(x, y, z, h):
        return occupancy_from_sdf(sdf(x, y, z)[0], h)

    image, mask = render(density, prof, origin_mm=origin, size=size, noise_ref=bg,
                         random_state=rng, noise=noise, occupancy=occupancy)
    if int(sitk.GetArrayViewFromImage(mask).sum()) == 0:  # tiny lesion on a coarse grid
        m = sitk.GetArrayFromImage(mask)
        idx = image.TransformPhysicalPointToIndex(tuple(float(c) for c in centre))
        m[idx[2], idx[1], idx[0]] = 1
        new = sitk.GetImageFromArray(m)
        new.CopyInformation(mask)
        mask = new
    truth = {k: v for k, v in bio.items() if k not in ("lobes", "lobe_amp")}
    truth["background_suv"] = float(bg)
    return Case(subject_id=subject_id, site=prof.name, image=image, mask=mask, truth=truth)


def make_cohort(
    *,
    n_per_site: int = 8,
    profiles=None,
    crop_mm: float = 64.0,
    noise: bool = True,
    random_state=None,
) -> Cohort:
    """Patient-like lesions at several sites, with covariates and a biology-driven outcome.

    Each subject gets an age, a sex and a lesion whose grade drives size, uptake and
    necrosis; the binary ``outcome`` depends on the lesion biology only, never on the site.
    The same lesion model is imaged through every site's profile, so site effects in the
    extracted features arise physically (resolution, voxel size, noise, calibration).

    Parameters
    ----------
    n_per_site : int, default=8
    profiles : sequence of str or SiteProfile, optional
        Default: the four :data:`SITE_PROFILES`.
    crop_mm : float, default=64
        Edge of the cubic field of view around each lesion.
    noise : bool, default=True
    random_state : int, Generator or None

    Returns
    -------
    Cohort
        ``cases`` and ``table`` (subject_id, site, age, sex, grade, outcome and the truth:
        radius_mm, suv, necrosis, background_suv).
    """
    rng = check_random_state(random_state)
    check_number(n_per_site, name="n_per_site", integer=True, low=1)
    profs = [get_profile(p) for p in (profiles or SITE_PROFILES.values())]
    cases, rows = [], []
    for prof in profs:
        for j in range(n_per_site):
            sid = f"{prof.name}_{j:03d}"
            age = float(np.clip(rng.normal(62.0, 9.0), 30.0, 88.0).round(1))
            sex = "F" if rng.random() < 0.5 else "M"
            case = make_case(prof, subject_id=sid, age=age, crop_mm=crop_mm, noise=noise, random_state=rng)
            cases.append(case)
            t = case.truth
            rows.append({"subject_id": sid, "site": prof.name, "age": age, "sex": sex,
                         "grade": t["grade"], "outcome": t["outcome"], "radius_mm": t["radius_mm"],
                         "suv": t["suv"], "necrosis": t["necrosis"], "background_suv": t["background_suv"]})
    return Cohort(cases=cases, table=pd.DataFrame(rows))
