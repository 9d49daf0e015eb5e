"""Tests of sitekit.robustness.perturbations (issue 6): reproducibility, replay, physics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from sitekit.exceptions import CorruptFileError, DataWarning, MissingFileError, ValidationError
from sitekit.robustness import perturbations as P

SPACING = (2.0, 2.0, 2.5)


def make_pair(size=32, radius_mm=8.0, peak=8.0, background=1.0, noise=0.05, seed=0, spacing=SPACING):
    """A PET-like image: a Gaussian lesion on a flat background, and a spherical mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size].astype(float)
    c = (size - 1) / 2.0
    sx, sy, sz = spacing
    r = np.sqrt(((x - c) * sx) ** 2 + ((y - c) * sy) ** 2 + ((z - c) * sz) ** 2)
    arr = background + peak * np.exp(-(r**2) / (2 * (radius_mm / 1.5) ** 2))
    arr = arr + noise * rng.standard_normal(arr.shape)
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin((-30.0, 12.0, 5.0))
    mask = sitk.GetImageFromArray((r <= radius_mm).astype(np.uint8))
    mask.CopyInformation(img)
    return img, mask


def arr(image):
    return sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def pair():
    return make_pair()


RANDOM_CLASSES = [
    P.RandomGaussianNoise,
    P.RandomCountNoise,
    P.RandomGaussianBlur,
    P.RandomResample,
    P.RandomIntensityScale,
    P.RandomRotate,
    P.RandomTranslate,
    P.RandomMaskVolume,
    P.RandomSupervoxelContour,
    P.RandomResegment,
]


@pytest.mark.parametrize("cls", RANDOM_CLASSES, ids=lambda c: c.__name__)
def test_random_same_seed_identical_and_replayable(pair, cls):
    img, mask = pair
    i1, m1, r1 = cls(random_state=3)(img, mask)
    i2, m2, r2 = cls(random_state=3)(img, mask)
    assert r1 == r2
    np.testing.assert_array_equal(arr(i1), arr(i2))
    np.testing.assert_array_equal(arr(m1), arr(m2))
    # records are JSON-serialisable and replay exactly after a round trip
    records = json.loads(json.dumps(r1))
    assert len(records) == 1 and records[0]["name"] == cls.__name__.removeprefix("Random")
    i3, m3 = P.replay(records, img, mask)
    np.testing.assert_array_equal(arr(i3), arr(i1))
    np.testing.assert_array_equal(arr(m3), arr(m1))
    assert i1.GetPixelID() == sitk.sitkFloat32 and m1.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(arr(m1))) <= {0, 1}


@pytest.mark.parametrize("cls", RANDOM_CLASSES, ids=lambda c: c.__name__)
def test_random_draws_differ_between_calls_and_seeds(pair, cls):
    img, mask = pair
    t = cls(random_state=0)
    first = t.draw(img, mask).get_params()
    second = t.draw(img, mask).get_params()
    other = cls(random_state=1).draw(img, mask).get_params()
    assert first != second
    assert first != other


def test_random_draws_stay_in_range(pair):
    img, mask = pair
    t = P.RandomGaussianNoise(cov=(0.05, 0.15), random_state=0)
    covs = [t.draw(img, mask).cov for _ in range(200)]
    assert 0.05 <= min(covs) and max(covs) <= 0.15
    r = P.RandomRotate(degrees=(-10, 10), axes="xz", random_state=0)
    for _ in range(50):
        ax, ay, az = r.draw(img, mask).angles_deg
        assert ay == 0 and -10 <= ax <= 10 and -10 <= az <= 10


def test_gaussian_noise_seed_in_record_and_level(pair):
    img, mask = pair
    i1, _, rec = P.GaussianNoise(cov=0.1, random_state=7)(img, mask)
    assert rec == [{"name": "GaussianNoise", "params": {"cov": 0.1, "sd": None, "random_state": 7}}]
    i2, _, _ = P.GaussianNoise(cov=0.1, random_state=7)(img, mask)
    i3, _, _ = P.GaussianNoise(cov=0.1, random_state=8)(img, mask)
    np.testing.assert_array_equal(arr(i1), arr(i2))
    assert not np.array_equal(arr(i1), arr(i3))
    mean_in_mask = arr(img)[arr(mask) > 0].astype(float).mean()
    added = arr(i1).astype(float) - arr(img)
    # SD of 32^3 normal draws: relative standard error ~ 0.4 %
    assert added.std() == pytest.approx(0.1 * mean_in_mask, rel=0.02)


def test_count_noise_is_signal_dependent_and_mean_preserving():
    img = sitk.GetImageFromArray(np.full((24, 24, 24), 4.0, np.float32))
    hot = np.full((24, 24, 24), 4.0, np.float32)
    hot[:, :, 12:] = 16.0
    hot_img = sitk.GetImageFromArray(hot)
    mask = sitk.GetImageFromArray(np.ones((24, 24, 24), np.uint8))
    out, _, _ = P.CountNoise(cov=0.1, random_state=1)(img, mask)
    a = arr(out).astype(float)
    assert a.mean() == pytest.approx(4.0, rel=0.01)
    assert a.std() / a.mean() == pytest.approx(0.1, rel=0.05)
    # variance proportional to the signal: COV falls as 1/sqrt(signal)
    out, _, _ = P.CountNoise(cov=0.1, random_state=1)(hot_img, mask)
    a = arr(out).astype(float)
    cov_low, cov_high = (a[:, :, :12].std() / a[:, :, :12].mean(), a[:, :, 12:].std() / a[:, :, 12:].mean())
    assert cov_low / cov_high == pytest.approx(2.0, rel=0.1)
    # scan-time factor: half the scan time adds base_cov * sqrt(1/0.5 - 1) = base_cov
    out, _, _ = P.CountNoise(scan_time=0.5, base_cov=0.08, random_state=2)(img, mask)
    a = arr(out).astype(float)
    assert a.std() / a.mean() == pytest.approx(0.08, rel=0.05)
    out, _, _ = P.CountNoise(scan_time=1.0, random_state=2)(img, mask)
    np.testing.assert_array_equal(arr(out), arr(img))


def test_blur_lowers_small_lesion_suvmax():
    img, mask = make_pair(radius_mm=5.0, peak=10.0, noise=0.0)
    before = arr(img)[arr(mask) > 0].max()
    out, m, _ = P.GaussianBlur(fwhm_mm=6.0)(img, mask)
    after = arr(out)[arr(m) > 0].max()
    assert after < 0.9 * before
    # total activity is preserved by the normalised kernel (lesion far from the border)
    assert arr(out).astype(float).sum() == pytest.approx(arr(img).astype(float).sum(), rel=1e-3)
    np.testing.assert_array_equal(arr(m), arr(mask))
    same, _, _ = P.GaussianBlur(fwhm_mm=0.0)(img, mask)
    np.testing.assert_array_equal(arr(same), arr(img))


def test_intensity_scale_is_exact(pair):
    img, mask = pair
    out, m, _ = P.IntensityScale(error_percent=5.0)(img, mask)
    np.testing.assert_allclose(arr(out), arr(img).astype(float) * 1.05, rtol=1e-6)
    np.testing.assert_array_equal(arr(m), arr(mask))


def test_calibration_error_scales_first_order_features(pair):
    from sitekit.features import extract_case

    img, mask = pair
    params = {
        "setting": {"binWidth": 0.25, "label": 1},
        "imageType": {"Original": {}},
        "featureClass": {"firstorder": ["Mean", "Maximum", "Median", "Minimum", "RootMeanSquared"]},
    }
    base = extract_case(img, mask, params=params)
    out, m, _ = P.IntensityScale(error_percent=5.0)(img, mask)
    scaled = extract_case(out, m, params=params)
    for name in ("Mean", "Maximum", "Median", "Minimum", "RootMeanSquared"):
        key = f"original_firstorder_{name}"
        assert scaled[key] / base[key] == pytest.approx(1.05, rel=1e-6), key


def test_rotation_by_360_degrees_returns_the_image(pair):
    img, mask = pair
    out, m, _ = P.Rotate(angles_deg=(0.0, 0.0, 360.0))(img, mask)
    # cos(2 pi) = 1 and sin(2 pi) ~ -2.4e-16: the sampling points move by ~1e-14 mm
    np.testing.assert_allclose(arr(out), arr(img), atol=1e-4)
    np.testing.assert_array_equal(arr(m), arr(mask))
    out, m, _ = P.Rotate(angles_deg=(360.0, 360.0, 360.0))(img, mask)
    np.testing.assert_allclose(arr(out), arr(img), atol=1e-4)


def test_rotation_about_centroid_keeps_lesion_in_place(pair):
    img, mask = pair
    out, m, _ = P.Rotate(angles_deg=25.0)(img, mask)
    # the mask is a sphere about the rotation centre: volume within 5 %, overlap high
    a, b = arr(mask) > 0, arr(m) > 0
    assert b.sum() == pytest.approx(a.sum(), rel=0.05)
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9


def test_translation_by_one_voxel_shifts_content_exactly(pair):
    img, mask = pair
    out, m, rec = P.Translate(offset_voxels=(1.0, 0.0, 0.0))(img, mask)
    a, b = arr(img), arr(out)
    # content moves towards +x (last numpy axis); linear interpolation at grid points is exact
    np.testing.assert_allclose(b[:, :, 1:], a[:, :, :-1], atol=1e-5)
    np.testing.assert_array_equal(arr(m)[:, :, 1:], arr(mask)[:, :, :-1])
    same, _, _ = P.Translate(offset_mm=(SPACING[0], 0.0, 0.0))(img, mask)
    np.testing.assert_allclose(arr(same), b, atol=1e-5)


def test_subvoxel_translation_preserves_mask_volume(pair):
    img, mask = pair
    _, m, _ = P.Translate(offset_voxels=(0.3, 0.6, 0.2))(img, mask)
    assert arr(m).sum() == pytest.approx(arr(mask).sum(), rel=0.08)


@pytest.mark.parametrize("method", ["fractional", "nearest"])
def test_resample_changes_grid_and_keeps_extent(pair, method):
    img, mask = pair
    out, m, _ = P.Resample(spacing_mm=4.0, mask_method=method)(img, mask)
    assert out.GetSpacing() == (4.0, 4.0, 4.0)
    assert out.GetSize() == (16, 16, 20)
    assert m.GetSize() == out.GetSize() and m.GetOrigin() == out.GetOrigin()
    vol_before = arr(mask).sum() * np.prod(SPACING)
    vol_after = arr(m).sum() * 4.0**3
    assert vol_after == pytest.approx(vol_before, rel=0.3)
    # the physical position of the first voxel's outer edge is unchanged
    edge_before = np.array(img.GetOrigin()) - np.array(SPACING) / 2
    edge_after = np.array(out.GetOrigin()) - 2.0
    np.testing.assert_allclose(edge_after, edge_before, atol=1e-9)


def test_mask_volume_fraction_and_distance(pair):
    img, mask = pair
    n0 = int(arr(mask).sum())
    for f in (-0.2, 0.0, 0.15):
        _, m, _ = P.MaskVolume(fraction=f)(img, mask)
        assert int(arr(m).sum()) == round(n0 * (1 + f))
    _, same, _ = P.MaskVolume(fraction=0.0)(img, mask)
    np.testing.assert_array_equal(arr(same), arr(mask))
    _, grown, _ = P.MaskVolume(distance_mm=2.0)(img, mask)
    _, shrunk, _ = P.MaskVolume(distance_mm=-2.0)(img, mask)
    g, s, o = arr(grown) > 0, arr(shrunk) > 0, arr(mask) > 0
    assert (o <= g).all() and (s <= o).all()
    assert g.sum() > o.sum() > s.sum() > 0
    with pytest.warns(DataWarning, match="whole mask"):
        _, tiny, _ = P.MaskVolume(distance_mm=-100.0)(img, mask)
    assert arr(tiny).sum() == 1


def test_supervoxel_contour(pair):
    img, mask = pair
    _, m1, r1 = P.SupervoxelContour(random_state=1)(img, mask)
    _, m1b, _ = P.SupervoxelContour(random_state=1)(img, mask)
    _, m2, _ = P.SupervoxelContour(random_state=2)(img, mask)
    np.testing.assert_array_equal(arr(m1), arr(m1b))
    a, b, c = arr(mask) > 0, arr(m1) > 0, arr(m2) > 0
    assert not np.array_equal(b, c)
    for new in (b, c):
        dice = 2 * (a & new).sum() / (a.sum() + new.sum())
        assert 0.6 < dice < 1.0
    assert r1[0]["params"]["random_state"] == 1


def test_resegment_percent_and_threshold(pair):
    img, mask = pair
    a = arr(img)
    roi_max = a[arr(mask) > 0].max()
    _, m, _ = P.Resegment(percent=50.0)(img, mask)
    new = arr(m) > 0
    assert new.any() and (a[new] >= 0.5 * roi_max).all()
    assert new[np.unravel_index(np.argmax(np.where(arr(mask) > 0, a, -np.inf)), a.shape)]
    # a lower threshold gives a larger region
    _, m40, _ = P.Resegment(percent=40.0)(img, mask)
    assert arr(m40).sum() > new.sum()
    _, m_abs, _ = P.Resegment(threshold=0.5 * float(roi_max))(img, mask)
    np.testing.assert_array_equal(arr(m_abs), arr(m))
    with pytest.warns(DataWarning, match="original mask is kept"):
        _, kept, _ = P.Resegment(threshold=1e6)(img, mask)
    np.testing.assert_array_equal(arr(kept), arr(mask))


def test_compose_seeds_children_and_replays(pair):
    img, mask = pair
    c1 = P.Compose([P.RandomGaussianNoise(random_state=1), P.RandomTranslate()], random_state=0)
    c2 = P.Compose([P.RandomGaussianNoise(random_state=99), P.RandomTranslate()], random_state=0)
    i1, m1, r1 = c1(img, mask)
    i2, m2, r2 = c2(img, mask)
    assert r1 == r2 and [r["name"] for r in r1] == ["GaussianNoise", "Translate"]
    np.testing.assert_array_equal(arr(i1), arr(i2))
    # second call draws new parameters
    _, _, r1b = c1(img, mask)
    assert r1b != r1
    i3, m3 = P.replay(json.loads(json.dumps(r1)), img, mask)
    np.testing.assert_array_equal(arr(i3), arr(i1))
    np.testing.assert_array_equal(arr(m3), arr(m1))


def test_get_chain_ntcv_reproducible(pair):
    img, mask = pair
    chain = P.get_chain("NTCV", random_state=5)
    assert [type(t).__name__ for t in chain.transforms] == [
        "RandomTranslate", "RandomGaussianNoise", "RandomSupervoxelContour", "RandomMaskVolume"
    ]
    i1, m1, r1 = chain(img, mask)
    i2, m2, r2 = P.get_chain("vcnt", random_state=5)(img, mask)
    assert r1 == r2
    np.testing.assert_array_equal(arr(i1), arr(i2))
    np.testing.assert_array_equal(arr(m1), arr(m2))
    assert [r["name"] for r in r1] == ["Translate", "GaussianNoise", "SupervoxelContour", "MaskVolume"]


def test_get_chain_errors():
    with pytest.raises(ValidationError, match="Unknown perturbation code"):
        P.get_chain("NTQ")
    with pytest.raises(ValidationError, match="repeats"):
        P.get_chain("NN")
    with pytest.raises(ValidationError):
        P.get_chain("")


def test_config_round_trip_and_errors(pair, tmp_path):
    img, mask = pair
    chain = P.get_chain("RNV", random_state=2)
    rebuilt = P.perturbation_from_config(json.loads(json.dumps(chain.to_config())))
    _, _, r1 = chain(img, mask)
    _, _, r2 = rebuilt(img, mask)
    assert r1 == r2
    flat = P.perturbation_from_config(
        {"perturbation": [{"name": "RandomGaussianNoise", "cov": [0.1, 0.2]}]}, random_state=0
    )
    assert isinstance(flat, P.Compose) and flat.transforms[0].cov == [0.1, 0.2]
    with pytest.raises(ValidationError, match="Did you mean 'RandomGaussianNoise'"):
        P.perturbation_from_config({"name": "RandomGausianNoise"})
    with pytest.raises(ValidationError, match="has no parameter"):
        P.perturbation_from_config({"name": "RandomGaussianNoise", "sigma": 1})
    with pytest.raises(ValidationError, match="deterministic"):
        P.replay([{"name": "RandomGaussianNoise", "params": {}}], img, mask)
    toml = tmp_path / "chain.toml"
    toml.write_text('[[perturbation]]\nname = "RandomIntensityScale"\nerror_percent = [-5, 5]\n')
    loaded = P.load_perturbations(toml, random_state=1)
    assert isinstance(loaded, P.Compose) and loaded(img, mask)[2][0]["name"] == "IntensityScale"
    (tmp_path / "bad.toml").write_text("chain = [")
    with pytest.raises(CorruptFileError):
        P.load_perturbations(tmp_path / "bad.toml")
    with pytest.raises(MissingFileError):
        P.load_perturbations(tmp_path / "missing.toml")


def test_invalid_inputs(pair):
    img, mask = pair
    other = sitk.Image(16, 16, 16, sitk.sitkUInt8)
    with pytest.raises(ValidationError, match="grid"):
        P.GaussianNoise(cov=0.1)(img, other)
    shifted = sitk.Image(mask)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ValidationError, match="origin"):
        P.GaussianNoise(cov=0.1)(img, shifted)
    with pytest.raises(ValidationError, match="SimpleITK"):
        P.GaussianNoise(cov=0.1)(arr(img), mask)
    with pytest.raises(ValidationError, match="exactly one"):
        P.GaussianNoise(cov=0.1, sd=1.0)(img, mask)
    with pytest.raises(ValidationError, match="exactly one"):
        P.MaskVolume()(img, mask)
    with pytest.raises(ValidationError, match="low <= high"):
        P.RandomGaussianNoise(cov=(0.2, 0.1), random_state=0)(img, mask)
    with pytest.raises(ValidationError, match="interpolator"):
        P.Rotate(angles_deg=5.0, interpolator="cubic")(img, mask)
    empty = sitk.Image(mask) * 0
    with pytest.raises(ValidationError, match="non-empty"):
        P.Rotate(angles_deg=5.0)(img, empty)


@pytest.mark.parametrize("transform", [
    P.RandomResample(spacing_mm=(3.0, 5.0), isotropic=False, interpolator="bspline",
                     mask_method="nearest", random_state=0),
    P.RandomCountNoise(scan_time=(0.3, 0.9), random_state=0),
    P.RandomMaskVolume(distance_mm=(-2.0, 2.0), random_state=0),
    P.RandomResegment(threshold=(2.0, 3.0), random_state=0),
    P.RandomRotate(axes="xyz", mask_method="nearest", random_state=0),
    P.RandomGaussianBlur(fwhm_mm=4.0, random_state=0),
], ids=lambda t: type(t).__name__)
def test_variants_replay_exactly(pair, transform):
    img, mask = pair
    out, m, records = transform(img, mask)
    assert json.loads(json.dumps(records)) == records
    rimg, rmask = P.replay(records, img, mask)
    np.testing.assert_array_equal(arr(rimg), arr(out))
    np.testing.assert_array_equal(arr(rmask), arr(m))
    assert out.GetSize() == m.GetSize() and out.GetSpacing() == m.GetSpacing()


def test_records_of_sitekit_0_1_with_seed_still_replay(pair):
    """Regression (issue 13): 'seed' became 'random_state'; old records must replay exactly."""
    img, mask = pair
    new_img, _, rec = P.GaussianNoise(cov=0.1, random_state=11)(img, mask)
    old = [{"name": "GaussianNoise", "params": {"cov": 0.1, "sd": None, "seed": 11}},
           {"name": "SupervoxelContour", "params": {"seed": 3, "supervoxel_mm": None,
                                                     "compactness": 10.0}}]
    a, am = P.replay(old, img, mask)
    b, bm = P.replay([rec[0], {"name": "SupervoxelContour",
                               "params": {"random_state": 3, "supervoxel_mm": None,
                                          "compactness": 10.0}}], img, mask)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(am), sitk.GetArrayFromImage(bm))
    with pytest.raises(TypeError, match="seed"):
        P.GaussianNoise(cov=0.1, seed=1)


def test_families_live_in_their_modules_and_are_reexported():
    from sitekit.robustness.perturbations import compose, intensity, mask, spatial

    for module in (intensity, spatial, mask, compose):
        for name in module.__all__:
            assert getattr(P, name) is getattr(module, name)
    assert sorted(P.__all__) == sorted(
        [*intensity.__all__, *spatial.__all__, *mask.__all__, *compose.__all__,
         "Perturbation", "RandomPerturbation"])
