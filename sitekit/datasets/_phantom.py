"""Synthetic NEMA/IEC body phantom scans imaged through a site profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import SimpleITK as sitk

from sitekit.datasets._profiles import SiteProfile, get_profile, occupancy_from_sdf, render
from sitekit.harmonize.earl import Compartment, FillDescription
from sitekit.harmonize.earl.geometry import (
    BACKGROUND_VOLUME_ML,
    F18_HALF_LIFE_S,
    INTERIOR_LENGTH_MM,
    SPHERE_DIAMETERS_MM,
    SPHERE_PLANE_FROM_LID_MM,
    PhantomGeometry,
    body_sdf,
    lung_sdf,
    sphere_centres_phantom,
)

__all__ = ["PhantomScan", "make_phantom_scan", "make_fill"]


@dataclass
class PhantomScan:
    """A synthetic phantom scan and the truth behind it.

    Attributes
    ----------
    image : SimpleITK.Image
        Activity concentration in Bq/mL (float32), as the site's scanner would report it
        (calibration bias included).
    truth : pandas.DataFrame
        One row per sphere: ``sphere_mm``, ``centre_x``, ``centre_y``, ``centre_z`` (physical mm),
        ``sphere_conc`` and ``background_conc`` (true Bq/mL at scan start).
    fill : FillDescription
        The fill from which the true concentrations follow by decay correction.
    profile : SiteProfile
    geometry : PhantomGeometry
    """

    image: sitk.Image
    truth: pd.DataFrame
    fill: FillDescription
    profile: SiteProfile
    geometry: PhantomGeometry
    info: dict = field(default_factory=dict)


def make_fill(
    sphere_conc: float = 20000.0,
    background_conc: float = 2000.0,
    *,
    scan_start: datetime | None = None,
    stated_ratio: float | None = 10.0,
) -> FillDescription:
    """A fill description whose decay-corrected concentrations are the given ones.

    The stock solution (100 mL) is measured 50 min and the background 40 min before scan
    start; activities are back-computed with the F-18 half-life.
    """
    t0 = scan_start or datetime(2026, 3, 2, 10, 0, 0)
    t_sph = t0 - timedelta(minutes=50)
    t_bkg = t0 - timedelta(minutes=40)

    def activity(conc, vol, t):
        return conc * vol / 1e6 * 2.0 ** ((t0 - t).total_seconds() / F18_HALF_LIFE_S)

    return FillDescription(
        scan_start=t0,
        sphere=Compartment(activity(sphere_conc, 100.0, t_sph), 100.0, t_sph),
        background=Compartment(activity(background_conc, BACKGROUND_VOLUME_ML, t_bkg), BACKGROUND_VOLUME_ML, t_bkg),
        half_life_s=F18_HALF_LIFE_S,
        stated_ratio=stated_ratio,
    )


def make_phantom_scan(
    profile: str | SiteProfile = "site_A",
    *,
    sphere_conc: float = 20000.0,
    background_conc: float = 2000.0,
    geometry: PhantomGeometry | None = None,
    fov_mm=(340.0, 340.0, 200.0),
    fov_centre=None,
    noise: bool = True,
    random_state=None,
) -> PhantomScan:
    """Image a NEMA/IEC body phantom (10:1 fill by default) through a site profile.

    Parameters
    ----------
    profile : str or SiteProfile, default="site_A"
        The site's scanner (see :data:`SITE_PROFILES`).
    sphere_conc, background_conc : float
        True concentrations at scan start in Bq/mL (EARL: ~20 and ~2 kBq/mL).
    geometry : PhantomGeometry, optional
        Placement (centre offset, in-plane rotation, tilt, mirroring); default centred.
    fov_mm : tuple of 3 float, default=(340, 340, 200)
        Extent of the image along x, y, z.
    fov_centre : tuple of 3 float, optional
        Physical centre of the image; default: the scanner axis (x = y = 0) at the middle
        of the phantom's interior length.
    noise : bool, default=True
        False gives the noise-free expected image.
    random_state : int, Generator or None
        Seed of the noise.

    Returns
    -------
    PhantomScan

    Examples
    --------
    >>> from sitekit.datasets import make_phantom_scan
    >>> scan = make_phantom_scan("site_C", fov_mm=(320, 280, 60), random_state=0)
    >>> scan.image.GetSpacing()
    (4.0, 4.0, 4.0)
    """
    prof = get_profile(profile)
    geom = geometry or PhantomGeometry()
    rot = geom.rotation()
    centre = np.asarray(geom.centre, float)
    if fov_centre is None:
        mid = SPHERE_PLANE_FROM_LID_MM - INTERIOR_LENGTH_MM / 2.0
        fov_centre = (0.0, 0.0, centre[2] + mid)
    vox = np.asarray(prof.voxel_mm, float)
    size = np.maximum(1, np.round(np.asarray(fov_mm, float) / vox)).astype(int)
    origin = np.asarray(fov_centre, float) - (size - 1) / 2.0 * vox
    sph_centres = sphere_centres_phantom()
    radii = np.asarray(SPHERE_DIAMETERS_MM) / 2.0

    def density(x, y, z, h):
        dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
        # phantom coordinates p = R^T (X - c)
        px = (rot[0, 0] * dx + rot[1, 0] * dy + rot[2, 0] * dz).astype(np.float32)
        py = (rot[0, 1] * dx + rot[1, 1] * dy + rot[2, 1] * dz).astype(np.float32)
        pz = (rot[0, 2] * dx + rot[1, 2] * dy + rot[2, 2] * dz).astype(np.float32)
        body = occupancy_from_sdf(body_sdf(px, py, pz), h)
        lung = occupancy_from_sdf(lung_sdf(px, py, pz), h)
        act = background_conc * body * (1.0 - lung)
        for (cx, cy, cz), r in zip(sph_centres, radii):
            d = np.sqrt((px - cx) ** 2 + (py - cy) ** 2 + (pz - cz) ** 2) - r
            act += (sphere_conc - background_conc) * occupancy_from_sdf(d, h)
        return act

    image, _ = render(density, prof, origin_mm=origin, size=size, noise_ref=background_conc,
                      random_state=random_state, noise=noise)
    image.SetMetaData("0054|1001", "BQML")
    image.SetMetaData("0008|0060", "PT")
    phys = geom.to_physical(sph_centres)
    truth = pd.DataFrame({
        "sphere_mm": np.asarray(SPHERE_DIAMETERS_MM),
        "centre_x": phys[:, 0], "centre_y": phys[:, 1], "centre_z": phys[:, 2],
        "sphere_conc": float(sphere_conc), "background_conc": float(background_conc),
    })
    fill = make_fill(sphere_conc, background_conc,
                     stated_ratio=sphere_conc / background_conc if background_conc > 0 else None)
    info = {"profile": prof.to_dict(), "geometry": {
        "centre": list(map(float, geom.centre)), "rotation_deg": geom.rotation_deg,
        "tilt_deg": geom.tilt_deg, "mirrored": geom.mirrored}, "noise": noise}
    return PhantomScan(image=image, truth=truth, fill=fill, profile=prof, geometry=geom, info=info)
