"""Synthetic data: determinism and physics."""

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.special import erf

from sitekit.datasets import (
    SITE_PROFILES,
    SiteProfile,
    generate_sample_data,
    make_case,
    make_cohort,
    make_feature_table,
    make_phantom_scan,
    summarize_sample_data,
)
from sitekit.exceptions import OutputExistsError, ValidationError
from sitekit.harmonize.earl import PhantomGeometry

SMALL_FOV = dict(fov_mm=(320.0, 280.0, 48.0), fov_centre=(0.0, 15.0, 0.0))


def blurred_ball(r, radius, sigma):
    """Uniform ball of radius R convolved with an isotropic Gaussian, at distance r."""
    r = np.maximum(r, 1e-3)  # the r -> 0 limit loses digits to cancellation
    a, b = (radius - r) / (np.sqrt(2) * sigma), (radius + r) / (np.sqrt(2) * sigma)
    return 0.5 * (erf(a) + erf(b)) - sigma / (r * np.sqrt(2 * np.pi)) * (np.exp(-a**2) - np.exp(-b**2))


def test_blurred_ball_centre_matches_domain_formula():
    radius, sigma = 5.0, 8.0 / 2.3548
    centre = erf(radius / (np.sqrt(2) * sigma)) - np.sqrt(2 / np.pi) * radius / sigma * np.exp(
        -(radius**2) / (2 * sigma**2))
    assert blurred_ball(1e-3, radius, sigma) == pytest.approx(centre, abs=1e-6)


@pytest.mark.parametrize("voxel", [2.0, 3.0])
def test_phantom_sphere_values_match_analytic_recovery(voxel):
    """Noise-free voxel values near each sphere centre equal the analytic blurred-sphere
    profile averaged over the voxel, within 1.5 % of the sphere-background contrast
    (partial-volume rendering on the <= 1 mm grid is the remaining error)."""
    fwhm = 8.0
    prof = SiteProfile("test", (fwhm,) * 3, (voxel,) * 3, 0.0, 0.0)
    scan = make_phantom_scan(prof, noise=False, geometry=PhantomGeometry(centre=(3.3, -2.1, 0.7)), **SMALL_FOV)
    img = scan.image
    a = sitk.GetArrayFromImage(img).astype(float)
    sigma = fwhm / 2.3548
    s, b = 20000.0, 2000.0
    offsets = (np.arange(5) + 0.5) / 5 - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3) * voxel
    for _, row in scan.truth.iterrows():
        c = np.array([row.centre_x, row.centre_y, row.centre_z])
        idx = img.TransformPhysicalPointToIndex(tuple(c))
        vc = np.array(img.TransformIndexToPhysicalPoint(idx))
        expected = np.mean(blurred_ball(np.linalg.norm(vc + sub - c, axis=1), row.sphere_mm / 2, sigma))
        measured = (a[idx[2], idx[1], idx[0]] - b) / (s - b)
        assert measured == pytest.approx(expected, abs=0.015), row.sphere_mm


def test_phantom_geometry_placement_and_truth():
    geom = PhantomGeometry(centre=(10.0, -5.0, 2.0), rotation_deg=37.0, tilt_deg=2.0, mirrored=True)
    scan = make_phantom_scan("site_C", geometry=geom, noise=False, **SMALL_FOV)
    a = sitk.GetArrayFromImage(scan.image)
    # the hottest voxel near each true 37 mm sphere centre is inside the sphere
    row = scan.truth.iloc[-1]
    idx = scan.image.TransformPhysicalPointToIndex((row.centre_x, row.centre_y, row.centre_z))
    assert a[idx[2], idx[1], idx[0]] > 0.9 * 20000 * 1.04
    # ring radius preserved, phantom centre where asked
    c = scan.truth[["centre_x", "centre_y", "centre_z"]].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(c - geom.centre, axis=1), 57.2, atol=1e-9)
    assert scan.fill.sphere_conc == pytest.approx(20000.0, rel=1e-12)
    assert scan.fill.background_conc == pytest.approx(2000.0, rel=1e-12)


def test_phantom_noise_level_and_calibration():
    prof = SITE_PROFILES["site_B"]
    scan = make_phantom_scan(prof, random_state=3, **SMALL_FOV)
    a = sitk.GetArrayFromImage(scan.image)
    # a background box away from spheres and lung: 60 mm above the ring centre
    idx = scan.image.TransformPhysicalPointToIndex((0.0, 90.0, 0.0))
    box = a[max(idx[2] - 3, 0): idx[2] + 4, idx[1] - 5: idx[1] + 6, idx[0] - 10: idx[0] + 11]
    assert box.mean() == pytest.approx(2000 * (1 + prof.calibration_bias), rel=0.03)
    assert box.std() / box.mean() == pytest.approx(prof.noise_cov, rel=0.35)


def test_phantom_is_deterministic():
    a = make_phantom_scan("site_C", random_state=7, **SMALL_FOV).image
    b = make_phantom_scan("site_C", random_state=7, **SMALL_FOV).image
    c = make_phantom_scan("site_C", random_state=8, **SMALL_FOV).image
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert not np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(c))


def test_unknown_profile_is_named():
    with pytest.raises(ValidationError, match="site_Z.*site_A"):
        make_phantom_scan("site_Z")


def test_cohort_is_deterministic_and_physical():
    c1 = make_cohort(n_per_site=1, random_state=5, crop_mm=48)
    c2 = make_cohort(n_per_site=1, random_state=5, crop_mm=48)
    pd.testing.assert_frame_equal(c1.table, c2.table)
    for a, b in zip(c1.cases, c2.cases):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a.image), sitk.GetArrayFromImage(b.image))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a.mask), sitk.GetArrayFromImage(b.mask))
    assert list(c1.table["site"]) == list(SITE_PROFILES)
    for case in c1.cases:
        assert case.image.GetSpacing() == pytest.approx(SITE_PROFILES[case.site].voxel_mm)
        m = sitk.GetArrayFromImage(case.mask).astype(bool)
        a = sitk.GetArrayFromImage(case.image)
        assert m.any()
        assert a[m].mean() > 1.5 * a[~m].mean()  # the lesion is hot


def test_resolution_lowers_lesion_suvmax():
    """The same lesion imaged by a sharper scanner has a higher SUVmax (partial volume)."""
    sharp = SiteProfile("sharp", (4.0,) * 3, (2.0,) * 3, 0.0, 0.0)
    blurry = sharp.replace(name="blurry", fwhm_mm=(10.0,) * 3)
    rng_bio = np.random.default_rng(0)
    from sitekit.datasets._cohort import _lesion_biology

    bio = _lesion_biology(rng_bio)
    bio["radius_mm"] = 6.0
    a = make_case(sharp, biology=bio, noise=False, random_state=1)
    b = make_case(blurry, biology=bio, noise=False, random_state=1)
    assert sitk.GetArrayFromImage(a.image).max() > 1.2 * sitk.GetArrayFromImage(b.image).max()


def test_feature_table_truth_and_determinism():
    df, truth = make_feature_table(n_per_site=(200, 300), n_features=4, random_state=1, return_truth=True)
    df2 = make_feature_table(n_per_site=(200, 300), n_features=4, random_state=1)
    pd.testing.assert_frame_equal(df, df2)
    assert list(df.columns[:5]) == ["subject_id", "site", "age", "sex", "outcome"]
    assert df["subject_id"].is_unique
    f = df.columns[5]
    # site means differ by the true location effect (in feature units), up to sampling error
    means = df.groupby("site")[f].mean()
    diff = (truth["gamma"].loc["site_B", f] - truth["gamma"].loc["site_A", f]) * truth["sigma"][f]
    se = truth["sigma"][f] * 3 * np.sqrt(1 / 200 + 1 / 300) * 2
    assert means["site_B"] - means["site_A"] == pytest.approx(diff, abs=se + abs(truth["w"][f]) * 0.3)
    with pytest.raises(ValidationError, match="n_per_site"):
        make_feature_table(n_per_site=(0, 3))


def test_generate_sample_data(tmp_path):
    out = tmp_path / "sd"
    generate_sample_data(out, n_per_site=1, phantoms=False)
    man = pd.read_csv(out / "cohort" / "manifest.csv")
    assert list(man.columns) == ["subject_id", "site", "image", "mask", "age", "sex", "grade", "outcome"]
    assert all((out / "cohort" / p).exists() for p in man["image"])
    summary = summarize_sample_data(out)
    assert list(summary["cohort_cases"]) == [1, 1, 1, 1]
    with pytest.raises(OutputExistsError, match="--force"):
        generate_sample_data(out, n_per_site=1, phantoms=False)
