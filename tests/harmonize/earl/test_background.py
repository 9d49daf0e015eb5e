"""Background ROIs on phantoms rendered by an independent renderer (issue 14 item 1).

Regression: the body template was turned 60 degrees against the sphere ring (curved side
between the 13 and 17 mm spheres instead of between the 10 and 13 mm spheres) and shifted by
15 mm, so on real scans several background ROIs lay partly in air: background 17 % low,
37 mm ROI variability 24 %.  The synthetic phantoms shared that template, so no test saw it.

The renderer below uses none of sitekit's geometry: it places the IEC body (interior: a half
disc of radius 147 mm on a half stadium of radius 77 mm around a 140 mm segment, lung-insert
axis half-way between the curved and the flat wall, curved side facing the gap between the
10 and 13 mm spheres, as on the real scan in tests/data) and the six spheres (ring radius
57.2 mm, 60 degrees apart) straight in scanner coordinates, rotated and mirrored.
"""

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from sitekit.exceptions import DataWarning
from sitekit.harmonize import earl

DIAMETERS = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
BKG, SPHERE = 2000.0, 20000.0


def _inside_body(x, y, centre, anterior_rad):
    """Interior of the IEC body cross-section (scanner x, y in mm)."""
    ax, ay = np.cos(anterior_rad), np.sin(anterior_rad)
    qx, qy = x - centre[0], y - centre[1]
    v = qx * ax + qy * ay + 35.0  # distance from the base line towards the curved side
    u = np.abs(-qx * ay + qy * ax)
    upper = (v >= 0) & (u**2 + v**2 <= 147.0**2)
    lower = (v < 0) & (np.maximum(u - 70.0, 0.0) ** 2 + v**2 <= 77.0**2)
    return upper | lower


def _body_edge_distance(x, y, centre, anterior_rad):
    """Distance (mm) from points inside the body to its edge, by brute force on the outline."""
    t = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    rr = np.linspace(0, 200, 2001)
    edge = []
    for a in t:  # outline: the last inside point along each ray from the ring centre
        px = centre[0] + rr * np.cos(a)
        py = centre[1] + rr * np.sin(a)
        k = np.flatnonzero(_inside_body(px, py, centre, anterior_rad))[-1]
        edge.append((px[k], py[k]))
    edge = np.asarray(edge)
    return np.min(np.hypot(x[:, None] - edge[None, :, 0], y[:, None] - edge[None, :, 1]), axis=1)


def render(rotation_deg, mirrored, *, fwhm=7.0, voxel=3.0, fov_xy=372.0, noise_cov=0.0, random_state=0):
    """Blurred, optionally noisy IEC phantom; returns (image, sphere centres, anterior angle)."""
    s = -1.0 if mirrored else 1.0
    rot = np.deg2rad(rotation_deg)
    centre = np.array([7.0, -5.0, 3.0])
    sphere_ang = rot + s * np.deg2rad(60.0 * np.arange(6))
    spheres = centre + 57.2 * np.stack([np.cos(sphere_ang), np.sin(sphere_ang), np.zeros(6)], axis=1)
    anterior = rot + s * np.deg2rad(30.0)
    n_xy = int(round(fov_xy / voxel))
    n_z = int(round(96.0 / voxel))
    origin = np.array([-(n_xy - 1) / 2 * voxel, -(n_xy - 1) / 2 * voxel, centre[2] - (n_z - 1) / 2 * voxel])
    sub = (np.arange(3) + 0.5) / 3 - 0.5  # 3x3x3 supersampling of each voxel
    ax = [(origin[d] + (np.arange(n)[:, None] + sub[None, :]) * voxel).ravel()
          for d, n in enumerate((n_xy, n_xy, n_z))]
    X, Y = np.meshgrid(ax[0], ax[1], indexing="xy")  # (y, x)
    body2d = _inside_body(X, Y, centre, anterior) & (np.hypot(X - centre[0], Y - centre[1]) > 25.5)
    act = np.repeat((BKG * body2d)[None], ax[2].size, axis=0)  # (z, y, x); body longer than the FOV
    Z = ax[2][:, None, None]
    for c, d in zip(spheres, DIAMETERS):
        r2 = (X - c[0]) ** 2 + (Y - c[1]) ** 2
        near = r2 <= (d / 2) ** 2
        zz = (Z - c[2]) ** 2
        act = np.where(near[None] & (r2[None] + zz <= (d / 2) ** 2), SPHERE, act)
    act = act.reshape(n_z, 3, n_xy, 3, n_xy, 3).mean(axis=(1, 3, 5))
    act = ndimage.gaussian_filter(act, fwhm / 2.3548 / voxel, mode="constant")
    if noise_cov:
        rng = np.random.default_rng(random_state)
        act = act + rng.normal(0.0, noise_cov * BKG, act.shape) * (act > 0.05 * BKG)
    img = sitk.GetImageFromArray(act)
    img.SetSpacing((voxel,) * 3)
    img.SetOrigin(tuple(origin))
    return img, spheres, centre, anterior


@pytest.mark.parametrize("rotation_deg, mirrored", [(0.0, False), (77.0, True), (200.0, False), (302.0, True)])
def test_background_rois_inside_independently_rendered_body(rotation_deg, mirrored):
    img, spheres, centre, anterior = render(rotation_deg, mirrored, noise_cov=0.10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the outline is read from the image: no fallback
        pm = earl.measure_phantom(img, sphere_conc=SPHERE, background_conc=BKG)
    np.testing.assert_allclose(pm.spheres[["centre_x", "centre_y", "centre_z"]], spheres, atol=1.0)
    rois = pm.background_rois
    assert (rois["source"] == "image").all() and len(rois) == 60
    dist = _body_edge_distance(rois["x"].to_numpy(), rois["y"].to_numpy(), centre, anterior)
    # NEMA: 37 mm ROIs 15 mm inside the edge (2 mm for the outline of a blurred 3 mm grid)
    assert dist.min() >= 18.5 + 15.0 - 2.0, dist.min()
    gap = np.linalg.norm(rois[["x", "y"]].to_numpy()[:, None] - spheres[None, :, :2], axis=2)
    assert np.all(gap >= np.asarray(DIAMETERS) / 2 + 18.5), gap.min()
    b37 = pm.background.set_index("roi_mm").loc[37.0]
    assert b37["mean"] == pytest.approx(BKG, rel=0.01)
    assert b37["variability_pct"] < 2.0
    assert pm.info["background_measured"] == pytest.approx(BKG, rel=0.01)


def test_background_falls_back_to_template_with_a_warning_when_the_fov_cuts_the_body():
    img, spheres, centre, anterior = render(140.0, True, fov_xy=240.0)
    with pytest.warns(DataWarning, match="field of view cuts the body"):
        pm = earl.measure_phantom(img, sphere_conc=SPHERE, background_conc=BKG)
    assert (pm.background_rois["source"] == "template").all()
    assert pm.info["background_placement"] == "template"
    # the template agrees with the independent body: every ROI centre well inside it
    dist = _body_edge_distance(pm.background_rois["x"].to_numpy(), pm.background_rois["y"].to_numpy(),
                               centre, anterior)
    assert dist.min() >= 18.5 + 15.0 - 3.0
