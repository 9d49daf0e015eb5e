"""NEMA-style background ROIs of the body phantom, placed from the body outline in the image.

NEMA NU 2 places twelve 37 mm ROIs in the background of the sphere plane and of the planes
10 and 20 mm either side of it (60 in all), 15 mm inside the edge of the phantom and away
from the spheres; the smaller ROI sizes share their centres.  The edge is read from the
image itself: the slab of +-20 mm around the sphere plane is resampled onto a 2 mm grid in
phantom coordinates, averaged along the axis, smoothed, and cut at half the background level
(warm background against air); the holes of the spheres and the lung insert are filled.  The
ROI centres lie on the line ``15 mm + 18.5 mm`` inside that outline, equally spaced by arc
length, leaving out the stretches near a sphere or the lung insert.  This needs no template
of the body's orientation; the template (:func:`sitekit.harmonize.earl.geometry.body_sdf`)
is used only when the field of view cuts the body, with a :class:`~sitekit.exceptions.DataWarning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from sitekit.exceptions import DataWarning
from sitekit.harmonize.earl._image import VoxelGrid
from sitekit.harmonize.earl._localize import Localization
from sitekit.harmonize.earl.geometry import (
    LUNG_INSERT_DIAMETER_MM,
    SPHERE_DIAMETERS_MM,
    body_sdf,
    sphere_centres_phantom,
)

__all__ = ["BackgroundPlacement", "background_rois", "place_background_rois", "measure_background",
           "BKG_OFFSETS_MM", "N_BKG_ROIS", "EDGE_DISTANCE_MM"]

BKG_OFFSETS_MM = (-20.0, -10.0, 0.0, 10.0, 20.0)
N_BKG_ROIS = 12
EDGE_DISTANCE_MM = 15.0
_BIG = max(SPHERE_DIAMETERS_MM) / 2.0
_RADII = np.asarray(SPHERE_DIAMETERS_MM) / 2.0
_STEP = 2.0
_HALF_FIELD = 200.0


@dataclass
class BackgroundPlacement:
    """Where the background ROIs are and how they were placed.

    Attributes
    ----------
    centres : ndarray of shape (n_rois, 2)
        In-plane ROI centres in phantom coordinates (mm).
    source : str
        ``"image"`` (body outline read from the scan) or ``"template"``.
    level : float
        Background level used for the outline (image units; NaN for the template).
    """

    centres: np.ndarray
    source: str
    level: float = float("nan")


def _sample_slab(arr: np.ndarray, grid: VoxelGrid, loc: Localization, half_z: float):
    """Mean over the slab of the scan on a 2 mm in-plane grid in phantom coordinates."""
    xs = np.arange(-_HALF_FIELD, _HALF_FIELD + _STEP / 2, _STEP)
    X, Y = np.meshgrid(xs, xs)
    thick = float(np.abs(grid.matrix.T @ loc.axes[2]).max())
    offsets = np.arange(-half_z, half_z + 1e-9, max(thick, 2.5))
    total = np.zeros(X.shape)
    seen = np.zeros(X.shape, bool)
    vol = np.nan_to_num(arr, nan=0.0) if np.isnan(arr).any() else arr
    for dz in offsets:
        pts = loc.ring_centre + X[..., None] * loc.axes[0] + Y[..., None] * loc.axes[1] + dz * loc.axes[2]
        idx = grid.to_index(pts)
        inside_fov = np.all((idx > -0.5) & (idx < grid.size - 0.5), axis=-1)
        v = ndimage.map_coordinates(vol, idx[..., ::-1].reshape(-1, 3).T, order=1,
                                    mode="nearest").reshape(X.shape)
        total += np.where(inside_fov, v, 0.0)
        seen |= inside_fov
    return xs, total / len(offsets), seen


def _level(v: np.ndarray) -> float:
    pos = v[v > 0.1 * np.percentile(v, 99.5)]
    if pos.size == 0:
        return float("nan")
    b0 = float(np.median(pos))
    body = pos[(pos > 0.5 * b0) & (pos < 2.0 * b0)]
    return float(np.median(body)) if body.size else b0


def _contour(dist_at, offset_mm: float, n_candidates: int = 72) -> np.ndarray:
    """Points where the inside distance first falls below ``offset_mm`` going out from the
    ring centre, equally spaced by arc length (2D phantom coordinates)."""
    t = np.linspace(0, 2 * np.pi, 721)[:-1]
    r = np.arange(0.0, _HALF_FIELD, 0.5)
    px = r[None, :] * np.cos(t)[:, None]
    py = r[None, :] * np.sin(t)[:, None]
    d = dist_at(px, py)
    below = d < offset_mm
    first = np.where(below.any(axis=1), np.argmax(below, axis=1), len(r) - 1)
    radius = r[np.maximum(first - 1, 0)]
    pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    seg = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1)
    s = np.r_[0.0, np.cumsum(seg)[:-1]]
    targets = np.linspace(0, s[-1] + seg[-1], n_candidates, endpoint=False)
    return pts[np.searchsorted(s, targets).clip(0, len(pts) - 1)]


def _pick(cand: np.ndarray, n_rois: int) -> np.ndarray:
    sph = sphere_centres_phantom()[:, :2]
    ok = np.ones(len(cand), bool)
    for c, r in zip(sph, _RADII):
        ok &= np.linalg.norm(cand - c, axis=1) > r + _BIG + 5.0
    ok &= np.linalg.norm(cand, axis=1) > LUNG_INSERT_DIAMETER_MM / 2 + _BIG + 5.0
    cand = cand[ok]
    if len(cand) < n_rois:
        return np.empty((0, 2))
    pick = np.round(np.linspace(0, len(cand), n_rois, endpoint=False)).astype(int)
    return cand[pick]


def background_rois(*, n_rois: int = N_BKG_ROIS) -> np.ndarray:
    """In-plane centres (phantom x, y in mm) of the background ROIs on the phantom template.

    The ROIs sit 15 mm inside the template's body edge (for the 37 mm ROI), away from the
    spheres and the lung insert.  :func:`place_background_rois` places them from the body
    outline in a scan instead; this is its fallback.

    Parameters
    ----------
    n_rois : int, default=12
        Number of ROIs per plane.

    Returns
    -------
    ndarray of shape (n_rois, 2)
    """
    def dist_at(x, y):
        return -body_sdf(x, y, np.zeros_like(x))

    return _pick(_contour(dist_at, EDGE_DISTANCE_MM + _BIG), n_rois)


def place_background_rois(arr: np.ndarray, grid: VoxelGrid, loc: Localization, *,
                          n_rois: int = N_BKG_ROIS) -> BackgroundPlacement:
    """Place the background ROIs from the body outline seen in the scan.

    Parameters
    ----------
    arr : ndarray of shape (nz, ny, nx)
        The scan's voxel values.
    grid : VoxelGrid
        Its voxel <-> physical mapping.
    loc : Localization
        The sphere localization (ring centre and phantom axes).
    n_rois : int, default=12
        Number of ROIs per plane.

    Returns
    -------
    BackgroundPlacement
    """
    xs, v, seen = _sample_slab(arr, grid, loc, max(BKG_OFFSETS_MM))
    v = ndimage.gaussian_filter(v, 2.0 / _STEP)
    level = _level(v[seen])
    reason = None
    if np.isfinite(level) and level > 0:
        mask = ndimage.binary_fill_holes(v > 0.5 * level)
        labels, _ = ndimage.label(mask)
        c = int(np.argmin(np.abs(xs)))
        body = labels == labels[c, c] if labels[c, c] else np.zeros_like(mask)
        ring = ~ndimage.binary_erosion(seen, iterations=2)
        if not body.any():
            reason = "no warm body around the sphere ring"
        elif (body & ring).any():
            reason = "the field of view cuts the body"
        else:
            dist = ndimage.distance_transform_edt(body, sampling=_STEP)

            def dist_at(x, y):
                idx = np.stack([(y - xs[0]) / _STEP, (x - xs[0]) / _STEP])
                return ndimage.map_coordinates(dist, idx.reshape(2, -1), order=1, cval=0.0).reshape(x.shape)

            centres = _pick(_contour(dist_at, EDGE_DISTANCE_MM + _BIG), n_rois)
            if len(centres):
                return BackgroundPlacement(centres=centres, source="image", level=level)
            reason = "the body outline leaves no room for the ROIs"
    else:
        reason = "no background activity"
    warnings.warn(f"Background ROIs placed from the phantom template: {reason} in the sphere plane "
                  "(see the background section of the EARL user guide).", DataWarning, stacklevel=3)
    return BackgroundPlacement(centres=background_rois(n_rois=n_rois), source="template")


def _slab_voxels(arr, grid: VoxelGrid, loc: Localization, half_z: float, centres2d: np.ndarray):
    """Values and phantom coordinates of the voxels within ``half_z`` of the sphere plane."""
    half = float(np.max(np.linalg.norm(centres2d, axis=1))) + _BIG + 5.0
    # the slab is thin along the phantom axis: a box thin along the axis nearest to it
    axis = int(np.argmax(np.abs(loc.axes[2])))
    widths = np.full(3, max(half, half_z))
    widths[axis] = half_z + 0.15 * half  # room for a tilt of up to ~8 degrees
    box = grid.box(loc.ring_centre, widths)
    ph = loc.to_phantom(grid.coords(box))
    sel = np.abs(ph[..., 2]) <= half_z
    return arr[box][sel], ph[sel]


def measure_background(arr, grid: VoxelGrid, loc: Localization, placement: BackgroundPlacement) -> pd.DataFrame:
    """Mean and variability of the background ROIs, one row per ROI size.

    Returns
    -------
    pandas.DataFrame
        ``roi_mm, n_rois, mean, sd, variability_pct`` (sd of the ROI means over their mean).
    """
    thick = float(np.abs(grid.matrix.T @ loc.axes[2]).max())  # voxel extent along the phantom axis
    vals, ph = _slab_voxels(arr, grid, loc, max(BKG_OFFSETS_MM) + thick, placement.centres)
    per_roi = []
    for cx, cy in placement.centres:
        r2 = (ph[:, 0] - cx) ** 2 + (ph[:, 1] - cy) ** 2
        near = r2 <= _BIG**2
        per_roi.append((vals[near], ph[near, 2], r2[near]))
    rows = []
    for dmm in SPHERE_DIAMETERS_MM:
        means = []
        for dz in BKG_OFFSETS_MM:
            for v, z, r2 in per_roi:
                m = (np.abs(z - dz) <= thick / 2.0) & (r2 <= (dmm / 2.0) ** 2)
                if m.any():
                    means.append(float(v[m].mean()))
        means = np.asarray(means)
        mean = float(means.mean()) if means.size else float("nan")
        sd = float(means.std(ddof=1)) if means.size > 1 else float("nan")
        rows.append({"roi_mm": dmm, "n_rois": int(means.size), "mean": mean, "sd": sd,
                     "variability_pct": 100.0 * sd / mean if mean else float("nan")})
    return pd.DataFrame(rows)


def background_cov(arr, grid, loc: Localization, placement: BackgroundPlacement) -> float:
    """Voxel coefficient of variation (%) in the 37 mm background ROIs of the sphere plane."""
    thick = float(np.abs(grid.matrix.T @ loc.axes[2]).max())
    vals, ph = _slab_voxels(arr, grid, loc, thick / 2.0, placement.centres)
    sel = np.zeros(len(vals), bool)
    for cx, cy in placement.centres:
        sel |= (ph[:, 0] - cx) ** 2 + (ph[:, 1] - cy) ** 2 <= _BIG**2
    v = vals[sel]
    return float(100.0 * v.std(ddof=1) / v.mean()) if v.size > 1 and v.mean() else float("nan")


def roi_table(loc: Localization, placement: BackgroundPlacement) -> pd.DataFrame:
    """Physical centres of every background ROI: ``plane_mm, roi, x, y, z, source``."""
    rows = []
    for dz in BKG_OFFSETS_MM:
        for i, (cx, cy) in enumerate(placement.centres):
            p = loc.ring_centre + cx * loc.axes[0] + cy * loc.axes[1] + dz * loc.axes[2]
            rows.append({"plane_mm": dz, "roi": i, "x": p[0], "y": p[1], "z": p[2], "source": placement.source})
    return pd.DataFrame(rows)
