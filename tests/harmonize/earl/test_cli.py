"""`sitekit earl ...` end to end: outputs, exit codes, DICOM round trip (issue 4)."""

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sitekit.cli import main
from sitekit.harmonize import earl
from sitekit.harmonize.earl._dicom import write_dicom_series
from sitekit.io import read_image, write_image

from ._data import phantom


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """An EARL1-compliant scan (8 mm FWHM, 4 mm voxels) as NIfTI + fill JSON."""
    d = tmp_path_factory.mktemp("good")
    scan = phantom(8.0, (4.0, 4.0, 4.0), centre=(2.0, 2.0, 2.0))
    write_image(scan.image, d / "site_x.nii.gz")
    scan.fill.to_json(d / "fill.json")
    return d, scan


def test_check_writes_outputs_and_passes(tmp_path, good):
    d, _ = good
    out = tmp_path / "out"
    rc = main(["earl", "check", str(d / "site_x.nii.gz"), "--fill", str(d / "fill.json"), "--out", str(out)])
    assert rc == 0
    for name in ("measurements.csv", "background.csv", "check.csv", "verdict.csv", "verdict.json",
                 "spheres_site_x.png"):
        assert (out / name).exists(), name
    chk = pd.read_csv(out / "check.csv")
    assert list(chk.columns[:9]) == ["site", "standard", "sphere_mm", "metric", "rc", "lower", "upper",
                                     "passed", "margin"]
    assert (chk["site"] == "site_x").all() and chk["passed"].all()
    doc = json.loads((out / "verdict.json").read_text())
    assert doc["passed"] is True and doc["scans"][0]["conc_source"] == "fill"
    # an existing output needs --force
    again = ["earl", "check", str(d / "site_x.nii.gz"), "--fill", str(d / "fill.json"), "--out", str(out)]
    assert main(again) == 2
    assert main(again + ["--force"]) == 0


def test_check_fails_with_exit_1_after_writing(tmp_path):
    scan = phantom(11.0, (4.0, 4.0, 4.0), centre=(2.0, 2.0, 2.0))
    write_image(scan.image, tmp_path / "smooth.nii.gz")
    out = tmp_path / "out"
    rc = main(["earl", "check", str(tmp_path / "smooth.nii.gz"), "--sphere-conc", "20000",
               "--background-conc", "2000", "--standard", "all", "--out", str(out)])
    assert rc == 1
    ver = pd.read_csv(out / "verdict.csv")
    assert set(ver["standard"]) == {"EARL1", "EARL2"} and not ver["passed"].any()


def test_dicom_round_trip_through_the_cli(tmp_path, good):
    d, scan = good
    dcm = write_dicom_series(scan.image, tmp_path / "dicom")
    assert len(list(dcm.iterdir())) == scan.image.GetSize()[2]
    back = earl.read_phantom(dcm)
    assert back.GetMetaData("0054|1001") == "BQML"
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(scan.image),
                               atol=float(np.abs(sitk.GetArrayFromImage(scan.image)).max()) / 32000)
    np.testing.assert_allclose(back.GetOrigin(), scan.image.GetOrigin(), atol=1e-4)
    out = tmp_path / "out"
    assert main(["earl", "check", str(dcm), "--fill", str(d / "fill.json"), "--site", "dcm",
                 "--out", str(out)]) == 0
    m = pd.read_csv(out / "measurements.csv")
    ref = earl.measure(scan.image, fill=scan.fill)
    np.testing.assert_allclose(m["rc_max"], ref["rc_max"], rtol=1e-3)
    np.testing.assert_allclose(m["rc_a50"], ref["rc_a50"], rtol=1e-3)


def test_filter_nifti_and_dicom(tmp_path, good):
    d, scan = good
    assert main(["earl", "filter", str(d / "site_x.nii.gz"), "--fwhm", "6", "--out",
                 str(tmp_path / "f.nii.gz")]) == 0
    f = read_image(tmp_path / "f.nii.gz")
    expect = earl.apply_filter(scan.image, 6.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(f), sitk.GetArrayFromImage(expect), rtol=1e-5, atol=1e-3)
    dcm = write_dicom_series(scan.image, tmp_path / "in_dcm")
    assert main(["earl", "filter", str(dcm), "--fwhm", "6", "--out", str(tmp_path / "out_dcm")]) == 0
    out = earl.read_phantom(tmp_path / "out_dcm")
    assert out.GetSize() == scan.image.GetSize()
    assert out.GetMetaData("0054|1001") == "BQML"
    assert out.GetMetaData("0020|000e") != earl.read_phantom(dcm).GetMetaData("0020|000e")
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(expect),
                               atol=float(sitk.GetArrayFromImage(expect).max()) / 16000)
    # the output may not replace the input
    assert main(["earl", "filter", str(dcm), "--fwhm", "6", "--out", str(dcm), "--force"]) == 2
    assert main(["earl", "filter", str(dcm), "--out", str(tmp_path / "x")]) == 2  # no --fwhm


def test_calibrate_cli_and_filter_from_calibration(tmp_path, good):
    d, _ = good
    out = tmp_path / "cal"
    assert main(["earl", "calibrate", str(d / "site_x.nii.gz"), "--fill", str(d / "fill.json"),
                 "--max-fwhm", "4", "--step", "1", "--out", str(out)]) == 0
    for name in ("calibration.json", "curves.csv", "calibration.csv"):
        assert (out / name).exists()
    table = earl.read_calibration(out / "calibration.json")
    assert set(table) == {"site_x"} and 0.0 <= table["site_x"] <= 4.0
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["fwhm_mm"]) == {0.0, 1.0, 2.0, 3.0, 4.0}
    assert main(["earl", "filter", str(d / "site_x.nii.gz"), "--calibration", str(out), "--site", "site_x",
                 "--out", str(tmp_path / "h.nii.gz")]) == 0
    assert main(["earl", "filter", str(d / "site_x.nii.gz"), "--calibration", str(out), "--site", "nope",
                 "--out", str(tmp_path / "h2.nii.gz")]) == 2


def test_spheres_not_found_exit_2_with_picture(tmp_path):
    arr = np.random.default_rng(0).normal(1000.0, 50.0, (16, 50, 50))
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((4.0, 4.0, 4.0))
    write_image(img, tmp_path / "blank.nii.gz")
    out = tmp_path / "out"
    assert main(["earl", "check", str(tmp_path / "blank.nii.gz"), "--sphere-conc", "10000",
                 "--out", str(out)]) == 2
    # the result set is not written; the picture of what the search saw goes beside it
    assert not out.exists()
    assert (tmp_path / "out.spheres_not_found_blank.png").exists()


def test_calibration_qc_cli(tmp_path):
    zz, yy, xx = np.mgrid[0:30, 0:50, 0:50]
    arr = np.where(((xx - 25) ** 2 + (yy - 25) ** 2 < 20**2) & (zz > 3) & (zz < 27), 5000.0, 0.0)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((3.0, 3.0, 3.0))
    write_image(img, tmp_path / "cyl.nii.gz")
    assert main(["earl", "calibration-qc", str(tmp_path / "cyl.nii.gz"), "--expected-conc", "5100",
                 "--out", str(tmp_path / "qc")]) == 0
    assert (tmp_path / "qc" / "qc.csv").exists()
    assert main(["earl", "calibration-qc", str(tmp_path / "cyl.nii.gz"), "--expected-conc", "6000"]) == 1


def test_check_with_manual_centres(tmp_path, good):
    d, scan = good
    centres = tmp_path / "centres.json"
    centres.write_text(json.dumps({"centres": scan.truth[["centre_x", "centre_y", "centre_z"]].to_numpy().tolist()}))
    out = tmp_path / "out"
    assert main(["earl", "check", str(d / "site_x.nii.gz"), "--fill", str(d / "fill.json"), "--centres",
                 str(centres), "--out", str(out)]) == 0
    m = pd.read_csv(out / "measurements.csv")
    assert (m["centre_source"] == "manual").all()
    # measure also takes a path
    direct = earl.measure(d / "site_x.nii.gz", fill=d / "fill.json", centres=centres)
    np.testing.assert_allclose(direct["rc_max"], m["rc_max"], rtol=1e-9)
