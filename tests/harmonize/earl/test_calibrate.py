"""calibrate(): harmonising filter, unreachable standards, calibration.json, cylinder QC (issue 4)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from sitekit.exceptions import ValidationError
from sitekit.harmonize import earl

from ._data import phantom

GRID = np.arange(5.0, 9.51, 0.5)


@pytest.fixture(scope="module")
def sharp_site():
    """A site with a 4 mm Gaussian system resolution, 2 mm voxels, noise-free."""
    return phantom(4.0, (2.0, 2.0, 2.0), centre=(0.5, 0.7, 0.3))


@pytest.fixture(scope="module")
def earl1_result(sharp_site):
    return earl.calibrate(sharp_site.image, fill=sharp_site.fill, fwhm_grid=GRID, a50_background="known",
                          site="sharp")


def test_band_centre_recovers_quadrature_filter(earl1_result):
    """EARL1 band centre ~8.3 mm effective: the filter is sqrt(8.3^2 - 4^2) = 7.27 mm (+-0.3 mm)."""
    res = earl1_result
    assert res.reachable
    assert res.centre_fwhm == pytest.approx(np.sqrt(8.3**2 - 4.0**2), abs=0.3)
    assert res.smallest_fwhm < res.centre_fwhm
    assert res.chosen_fwhm == res.centre_fwhm
    # issue 14 item 9: the note says what the "centre" filter is (not the middle of the range)
    assert "puts the RCs nearest the middle of their bands" in res.note
    # the smallest compliant filter really is compliant, a slightly smaller one is not
    c = res.curves
    assert set(c.columns) >= {"site", "standard", "fwhm_mm", "sphere_mm", "metric", "rc", "lower", "upper"}
    assert len(c) == len(GRID) * 12
    at = c[c["fwhm_mm"] == np.ceil(res.smallest_fwhm * 2) / 2]
    assert at["in_band"].all()
    below = c[c["fwhm_mm"] == np.floor(res.smallest_fwhm * 2) / 2 - 0.5]
    assert not below["in_band"].all()
    # RCs fall as the filter widens
    rc = c[(c.metric == "MAX") & (c.sphere_mm == 10.0)].sort_values("fwhm_mm")["rc"].to_numpy()
    assert np.all(np.diff(rc) < 0)


def test_earl2_unreachable_with_a_gaussian(sharp_site):
    res = earl.calibrate(sharp_site.image, standard="EARL2", fill=sharp_site.fill, fwhm_grid=[0.0, 2.0, 4.0],
                         a50_background="known")
    assert res.smallest_fwhm is None and res.centre_fwhm is None and not res.reachable
    assert res.note.startswith("Unreachable")
    assert "MAX stays below" in res.note and "PSF/ToF" in res.note
    # issue 14 item 9: the note names the standard, the sphere and the metric
    assert "meets EARL2:" in res.note and "mm sphere's RC MAX stays below its band" in res.note
    doc = earl.calibration_json([res])
    assert doc["sites"]["scan"]["chosen_fwhm_mm"] is None


def test_calibration_json_round_trip(tmp_path, sharp_site, earl1_result):
    res = earl1_result
    doc = earl.calibration_json([res])
    assert doc["format"] == "sitekit-earl-calibration" and doc["version"] == 1 and doc["standard"] == "EARL1"
    (tmp_path / "calibration.json").write_text(json.dumps(doc))
    assert earl.read_calibration(tmp_path) == {"sharp": pytest.approx(res.centre_fwhm, abs=1e-3)}
    with pytest.raises(ValidationError, match="'all'"):
        earl.calibrate(sharp_site.image, standard="all", fill=sharp_site.fill)
    with pytest.raises(ValidationError, match="fwhm_grid"):
        earl.calibrate(sharp_site.image, fill=sharp_site.fill, fwhm_grid=[3.0])


def _cylinder(conc=5000.0, seed=0):
    zz, yy, xx = np.mgrid[0:40, 0:64, 0:64]
    arr = np.where(((xx - 32) ** 2 + (yy - 32) ** 2 < 27**2) & (zz > 4) & (zz < 36), conc, 0.0)
    arr = arr + np.random.default_rng(seed).normal(0, 0.05 * conc, arr.shape) * (arr > 0)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((3.0, 3.0, 3.0))
    return img


def test_calibration_qc_cylinder():
    ok = earl.calibration_qc(_cylinder(), expected_conc=5000.0)
    assert bool(ok["passed"].iloc[0]) and ok["ratio"].iloc[0] == pytest.approx(1.0, abs=0.01)
    assert ok["cov_pct"].iloc[0] == pytest.approx(5.0, rel=0.2)
    bad = earl.calibration_qc(_cylinder(), expected_conc=5700.0)
    assert not bool(bad["passed"].iloc[0])
    fill = {"scan_start": "2026-03-02T10:00:00",
            "cylinder": {"activity_mbq": 5000.0 * 2.0 ** (3600 / 6586.2) * 6000 / 1e6, "volume_ml": 6000.0,
                         "measured_at": "2026-03-02T09:00:00"}}
    via_fill = earl.calibration_qc(_cylinder(), fill=fill)
    assert via_fill["expected"].iloc[0] == pytest.approx(5000.0, rel=1e-9)
    with pytest.raises(ValidationError, match="exactly one"):
        earl.calibration_qc(_cylinder())
