"""apply_filter and read_calibration (issue 4)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError
from sitekit.harmonize import earl


def _point_image(spacing=(2.0, 2.0, 3.0), size=(41, 41, 31), pixel=sitk.sitkFloat32):
    a = np.zeros(size[::-1], np.float64)
    a[size[2] // 2, size[1] // 2, size[0] // 2] = 1000.0
    img = sitk.Cast(sitk.GetImageFromArray(a), pixel)
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 5.0, 3.0))
    img.SetMetaData("0054|1001", "BQML")
    return img


def test_filter_fwhm_matches_requested_per_axis():
    img = _point_image()
    out = earl.apply_filter(img, 8.0)
    a = sitk.GetArrayFromImage(out).astype(float)
    # second moment of the impulse response along each axis = sigma^2 (tolerance 2 %)
    zz, yy, xx = np.indices(a.shape)
    c = np.array(a.shape) // 2
    sp = img.GetSpacing()[::-1]
    for axis, grid in enumerate((zz, yy, xx)):
        var = np.sum(a * ((grid - c[axis]) * sp[axis]) ** 2) / a.sum()
        fwhm = np.sqrt(var) * 2.3548
        assert fwhm == pytest.approx(8.0, rel=0.02)
    assert a.sum() == pytest.approx(1000.0, rel=1e-4)


def test_filter_keeps_geometry_metadata_and_type():
    img = _point_image(pixel=sitk.sitkInt16)
    out = earl.apply_filter(img, 5.0)
    assert out.GetPixelID() == sitk.sitkInt16
    assert out.GetSpacing() == img.GetSpacing()
    assert out.GetOrigin() == img.GetOrigin()
    assert out.GetDirection() == img.GetDirection()
    assert out.GetMetaData("0054|1001") == "BQML"


def test_filter_zero_is_a_copy():
    img = _point_image()
    out = earl.apply_filter(img, 0)
    assert out is not img
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(img))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "x", (1.0, 2.0)])
def test_filter_rejects_bad_fwhm(bad):
    with pytest.raises(ValidationError, match="fwhm"):
        earl.apply_filter(_point_image(), bad)


def _write_cal(path, sites):
    path.write_text(json.dumps({"format": "sitekit-earl-calibration", "version": 1,
                                "standard": "EARL1", "sites": sites}))


def test_read_calibration(tmp_path):
    _write_cal(tmp_path / "calibration.json", {
        "site_A": {"smallest_fwhm_mm": 5.0, "centre_fwhm_mm": 6.6, "chosen_fwhm_mm": 6.6},
        "site_C": {"smallest_fwhm_mm": 0.0, "centre_fwhm_mm": 0.0, "chosen_fwhm_mm": 0.0},
    })
    assert earl.read_calibration(tmp_path) == {"site_A": 6.6, "site_C": 0.0}
    assert earl.read_calibration(tmp_path / "calibration.json")["site_A"] == 6.6


def test_read_calibration_unreachable_site_names_it(tmp_path):
    _write_cal(tmp_path / "calibration.json", {
        "site_A": {"smallest_fwhm_mm": None, "centre_fwhm_mm": None, "chosen_fwhm_mm": None},
    })
    with pytest.raises(ValidationError, match="site_A"):
        earl.read_calibration(tmp_path)


def test_read_calibration_bad_files(tmp_path):
    with pytest.raises(MissingFileError):
        earl.read_calibration(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(CorruptFileError):
        earl.read_calibration(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CorruptFileError, match="not a sitekit"):
        earl.read_calibration(tmp_path / "y.json")


@settings(max_examples=25, deadline=None)
@given(fwhm=st.floats(0.5, 12.0), sx=st.floats(1.0, 5.0), sz=st.floats(1.0, 5.0), scale=st.floats(0.1, 10.0))
def test_filter_is_linear_and_keeps_the_mean(fwhm, sx, sz, scale):
    """Property: a constant image stays constant, and filtering commutes with scaling."""
    rng = np.random.default_rng(0)
    a = rng.random((12, 14, 16))
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((sx, sx, sz))
    out = sitk.GetArrayFromImage(earl.apply_filter(img, fwhm))
    scaled = sitk.GetImageFromArray(a * scale)
    scaled.CopyInformation(img)
    np.testing.assert_allclose(sitk.GetArrayFromImage(earl.apply_filter(scaled, fwhm)), out * scale, rtol=1e-9)
    const = sitk.GetImageFromArray(np.full((12, 14, 16), 3.5))
    const.SetSpacing((sx, sx, sz))
    np.testing.assert_allclose(sitk.GetArrayFromImage(earl.apply_filter(const, fwhm)), 3.5, rtol=1e-12)


def test_read_centres_forms(tmp_path):
    pts = np.arange(18, dtype=float).reshape(6, 3)
    (tmp_path / "a.json").write_text(json.dumps(pts.tolist()))
    (tmp_path / "b.json").write_text(json.dumps({"centres": {f"{d:g}": p for d, p in
                                                             zip([37, 28, 22, 17, 13, 10], pts[::-1].tolist())}}))
    np.testing.assert_array_equal(earl.read_centres(tmp_path / "a.json"), pts)
    np.testing.assert_array_equal(earl.read_centres(tmp_path / "b.json"), pts)
    (tmp_path / "c.json").write_text(json.dumps({"centres": {"10": [0, 0, 0]}}))
    with pytest.raises(CorruptFileError, match="must give the spheres"):
        earl.read_centres(tmp_path / "c.json")
