"""Real PET DICOM of a NEMA IQ phantom (tests/data/nema-iq-dicom, two GE reconstructions).

The scans ship with the repository, so these tests always run.  Every pinned number comes
from a measurement that does not use sitekit's EARL code: the sphere centres from a plain
threshold-and-centroid estimate (:func:`centroid_centres`, recomputed here), the background
from pynemaiqpet (1687 Bq/mL on recon_1, 1666 on recon_2; issue 14) and from a plain
eroded-body mean (:func:`eroded_body_mean`).
"""

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from sitekit.cli import main
from sitekit.harmonize import earl

# Sphere centres (x, y, z; mm, physical), order 10..37 mm: the activity-weighted centroid of
# each hot blob (centroid_centres), recon_1 and recon_2 agree to 0.3 mm.
PINNED = np.array([
    [28.8, -47.0, -4.8],
    [-29.0, -48.8, -4.0],
    [-59.4, -0.5, -4.1],
    [-32.2, 49.9, -5.0],
    [25.2, 51.8, -2.1],
    [55.1, 3.7, -5.6],
])
# background (Bq/mL) measured by pynemaiqpet on the same scans (issue 14)
PYNEMAIQPET_BACKGROUND = {"recon_1": 1687.0, "recon_2": 1666.0}
# RCmax with the 37 mm profile-fit concentration, before the background fix (unchanged by it)
RC_MAX = {"recon_1": [1.031, 1.284, 1.254, 1.433, 1.616, 1.476],
          "recon_2": [1.545, 1.638, 1.358, 1.445, 1.420, 1.446]}


def centroid_centres(image):
    """Sphere centres without sitekit's localisation: the six largest blobs above three times
    the body level, each located by its activity-weighted centroid (above the body level)."""
    a = sitk.GetArrayFromImage(image)
    sm = ndimage.gaussian_filter(a, 1.0)
    body = np.median(sm[sm > 0.1 * sm.max()])
    lab, n = ndimage.label(sm > 3 * body)
    sizes = ndimage.sum(np.ones_like(a), lab, range(1, n + 1))
    out = []
    for k in np.argsort(sizes)[::-1][:6] + 1:
        w = np.where(ndimage.binary_dilation(lab == k, iterations=2), a - body, 0.0).clip(0)
        idx = np.argwhere(w > 0)
        c = (idx * w[w > 0][:, None]).sum(0) / w.sum()
        out.append((sizes[k - 1], image.TransformContinuousIndexToPhysicalPoint([float(v) for v in c[::-1]])))
    return np.array([p for _, p in sorted(out)])


def eroded_body_mean(image, centres):
    """Background without sitekit's ROIs: the mean of the voxels within 20 mm of the sphere
    plane that lie more than 33.5 mm inside the body outline (half the background level) and
    more than 37 mm from the sphere ring's spheres and the lung insert."""
    a = sitk.GetArrayFromImage(image)
    sp = np.array(image.GetSpacing())
    z = np.array([image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, float(k)))[2] for k in range(a.shape[0])])
    slab = np.abs(z - centres[:, 2].mean()) <= 20.0
    level = np.median(a[slab][a[slab] > 0.2 * np.percentile(a[slab], 99)])
    vals = []
    ring = centres.mean(axis=0)
    for k in np.flatnonzero(slab):
        sm = ndimage.gaussian_filter(a[k], 1.0)
        body = ndimage.binary_fill_holes(sm > 0.5 * level)
        inside = ndimage.distance_transform_edt(body, sampling=sp[1::-1]) > 33.5
        jj, ii = np.nonzero(inside)
        xy = np.stack([image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))[:2]
                       for j, i in zip(jj, ii)])
        far = np.linalg.norm(xy - ring[:2], axis=1) > 25.5 + 37.0
        for c in centres:
            far &= np.linalg.norm(xy - c[:2], axis=1) > 37.0
        vals.append(a[k][jj[far], ii[far]])
    return float(np.mean(np.concatenate(vals)))


@pytest.mark.parametrize("recon", ["recon_1", "recon_2"])
def test_independent_centres_match_the_pinned_ones(real_data, recon):
    img = earl.read_phantom(real_data / recon)
    np.testing.assert_allclose(centroid_centres(img), PINNED, atol=0.35)


@pytest.mark.parametrize("recon", ["recon_1", "recon_2"])
def test_real_background_matches_independent_estimates(real_data, recon):
    """Regression (issue 14 item 1): the background ROIs followed a body template turned 60
    degrees against the sphere ring, several lay partly in air: 1397 Bq/mL (17 % low) and
    24 % variability between the 37 mm ROIs."""
    img = earl.read_phantom(real_data / recon)
    pm = earl.measure_phantom(img)
    b37 = pm.background.set_index("roi_mm").loc[37.0]
    assert b37["n_rois"] == 60
    assert b37["mean"] == pytest.approx(PYNEMAIQPET_BACKGROUND[recon], rel=0.03)
    assert b37["mean"] == pytest.approx(eroded_body_mean(img, PINNED), rel=0.03)
    assert b37["variability_pct"] < 10.0
    assert pm.info["background_placement"] == "image"
    np.testing.assert_allclose(pm.spheres["rc_max"], RC_MAX[recon], atol=0.005)
    # every 37 mm ROI lies inside the body, 15 mm from its edge (within 1.5 voxels: the outline
    # of one noisy plane is ragged)
    a = sitk.GetArrayFromImage(img)
    for r in pm.background_rois.itertuples():
        k = img.TransformPhysicalPointToContinuousIndex((r.x, r.y, r.z))
        plane = ndimage.gaussian_filter(a[int(round(k[2]))], 2.0)
        body = ndimage.binary_fill_holes(plane > 0.5 * b37["mean"])
        dist = ndimage.distance_transform_edt(body, sampling=img.GetSpacing()[1::-1])
        assert dist[int(round(k[1])), int(round(k[0]))] > 18.5 + 15.0 - 3.0, (recon, r)


def test_monochrome1_slices_read_as_activity(real_data):
    img = earl.read_phantom(real_data / "recon_2")
    a = sitk.GetArrayFromImage(img)
    assert img.GetSize() == (192, 192, 89)
    assert a.min() >= 0.0  # the raw reader inverts MONOCHROME1 slices; the fix undoes it
    plane = a[42]  # through the spheres: warm background, hot spheres, cold air around
    body = plane[plane > 0.02 * plane.max()]
    assert np.median(body) < 0.3 * plane.max()  # inverted data would have a hot background
    assert (plane == 0).mean() > 0.2  # air outside the phantom reads zero


def test_real_scans_through_sitekit_earl_check(tmp_path, real_data):
    out = tmp_path / "out"
    rc = main(["earl", "check", str(real_data / "recon_1"), str(real_data / "recon_2"), "--standard", "all",
               "--out", str(out)])
    # unfiltered reconstructions are too sharp for EARL1: RCmax of the 28 mm sphere is ~1.5
    # against an upper limit of 1.13 (and of 1.26 in EARL2)
    assert rc == 1
    m = pd.read_csv(out / "measurements.csv")
    assert list(m["site"].unique()) == ["recon_1", "recon_2"]
    for site, g in m.groupby("site"):
        assert list(g["sphere_mm"]) == [10.0, 13.0, 17.0, 22.0, 28.0, 37.0]
        found = g[["centre_x", "centre_y", "centre_z"]].to_numpy()
        np.testing.assert_allclose(found, PINNED, atol=1.0, err_msg=site)
        # adjacent spheres 57.2 mm apart on the ring (one sphere per 60 degrees)
        gaps = np.linalg.norm(np.diff(np.vstack([found, found[:1]]), axis=0), axis=1)
        np.testing.assert_allclose(gaps, 57.2, atol=2.5)
        assert (g["conc_source"] == "estimated").all() and (g["centre_source"] == "fit").all()
        assert g["fwhm_mm"].between(2.0, 6.0).all()  # no post-filter: sharp reconstructions
        assert g["rc_a50"].between(0.3, 1.3).all() and g["rc_max"].gt(0.8).all()
    doc = json.loads((out / "verdict.json").read_text())
    assert {s["site"] for s in doc["scans"]} == {"recon_1", "recon_2"}
    assert all(s["estimated_from"] == "37 mm sphere profile fit" for s in doc["scans"])
    # recon_1 is the noisier reconstruction (README: background COV ~35 % vs ~17 %)
    cov = {s["site"]: s["background_cov_pct"] for s in doc["scans"]}
    assert cov["recon_1"] > cov["recon_2"]
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "spheres_recon_1.png")))
    magenta = (png[..., 0] == 255) & (png[..., 1] == 0) & (png[..., 2] == 255)
    assert magenta.sum() > 500  # the twelve background ROIs of the sphere plane are drawn
    chk = pd.read_csv(out / "check.csv")
    earl1_28 = chk[(chk["standard"] == "EARL1") & (chk["metric"] == "MAX") & (chk["sphere_mm"] == 28.0)]
    assert len(earl1_28) == 2 and not earl1_28["passed"].any()
