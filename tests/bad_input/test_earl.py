"""Bad input to the EARL commands and the image readers (issue 15 items 4-7 and 12, issue 14
item 9): each case gives exit code 2 with one message naming the culprit and the fix, and
writes or changes nothing."""

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sitekit.cli import main
from sitekit.datasets import get_profile, make_phantom_scan
from sitekit.exceptions import CorruptFileError, ValidationError
from sitekit.harmonize import earl
from sitekit.io import read_image, safe_filename, write_image

REAL_DATA = Path(__file__).resolve().parents[1] / "data" / "nema-iq-dicom"


def phantom():
    """A small noise-free synthetic phantom scan (8 mm FWHM, 4 mm voxels), body in the FOV."""
    prof = get_profile("site_B").replace(fwhm_mm=(8.0,) * 3, voxel_mm=(4.0,) * 3, overshoot=0.0,
                                         calibration_bias=0.0, name="gauss8")
    return make_phantom_scan(prof, geometry=earl.PhantomGeometry(centre=(2.0, 2.0, 2.0)),
                             fov_mm=(340.0, 340.0, 48.0), fov_centre=(0.0, 0.0, 0.0), noise=False, random_state=0)


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("scan")
    scan = phantom()
    write_image(scan.image, d / "site_x.nii.gz")
    (d / "fill.json").write_text(json.dumps(scan.fill.to_dict()))
    return d, scan


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _fill(scan, edit):
    d = copy.deepcopy(scan.fill.to_dict())
    edit(d)
    return d


def _set(path, value):
    def edit(d):
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


def _shift_scan(hours):
    def edit(d):
        from datetime import datetime, timedelta
        d["scan_start"] = (datetime.fromisoformat(d["sphere"]["measured_at"]) + timedelta(hours=hours)).isoformat()
    return edit


def _swap(d):
    d["sphere"], d["background"] = d["background"], d["sphere"]


def _kbq(d):
    for k in ("sphere", "background"):
        d[k]["activity_mbq"] = d[k]["activity_mbq"] / 1000.0


def _mixed_tz(d):
    d["scan_start"] = d["scan_start"] + "+01:00"


FILL_CASES = [
    # (id, edit, words the message must hold)
    ("activity-null", _set(("sphere", "activity_mbq"), None), ["sphere.activity_mbq", "number"]),
    ("decimal-comma", _set(("background", "activity_mbq"), "2,74"), ["background.activity_mbq", "decimal point"]),
    ("half-life-zero", _set(("half_life_s",), 0), ["half_life_s", "> 0"]),
    ("half-life-wrong", _set(("half_life_s",), 6000.0), ["half_life_s", "F-18", "6586.2"]),
    ("isotope-unknown", lambda d: (d.update(isotope="Y-90"), d.pop("half_life_s", None)), ["Y-90", "half_life_s"]),
    ("scan-1h-before-measurement", _shift_scan(-1.0), ["sphere.measured_at", "after 'scan_start'"]),
    ("scan-1day-before-measurement", _shift_scan(-24.0), ["sphere.measured_at", "after 'scan_start'"]),
    ("scan-1day-after-measurement", _shift_scan(24.0), ["sphere.measured_at", "half-lives"]),
    ("time-zones-mixed", _mixed_tz, ["UTC offset", "scan_start"]),
    ("time-not-iso", _set(("scan_start",), "02/03/2026 10:00"), ["scan_start", "ISO 8601"]),
    ("sphere-below-background", _swap, ["sphere concentration", "not above", "swapped"]),
    ("kbq-against-bq-image", _kbq, ["kBq/mL", "MBq"]),
]


@pytest.mark.parametrize("case, edit, words", FILL_CASES, ids=[c[0] for c in FILL_CASES])
def test_bad_fill(tmp_path, capsys, scan_dir, case, edit, words):
    d, scan = scan_dir
    (tmp_path / "fill.json").write_text(json.dumps(_fill(scan, edit)))
    before = _snapshot(tmp_path)
    rc = main(["earl", "check", str(d / "site_x.nii.gz"), "--fill", str(tmp_path / "fill.json"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2, err
    for w in words:
        assert w in err, (case, err)
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("Error")]) == 1
    assert _snapshot(tmp_path) == before  # nothing written


def test_fill_api_errors_name_the_field(scan_dir):
    _, scan = scan_dir
    with pytest.raises(ValidationError, match="sphere.volume_ml"):
        earl.FillDescription.from_dict(_fill(scan, _set(("sphere", "volume_ml"), "100")))


@pytest.mark.parametrize("site", ["x/../../../ESCAPED", "../up", "a\\b", "..", "", "-rf", "CON"])
def test_site_names_that_would_escape_out_are_refused(tmp_path, capsys, scan_dir, site):
    d, _ = scan_dir
    work = tmp_path / "work"
    work.mkdir()
    before = _snapshot(tmp_path)
    rc = main(["earl", "check", str(d / "site_x.nii.gz"), "--fill", str(d / "fill.json"), "--site", site,
               "--out", str(work / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot become a file name" in err and "--site" in err, err
    assert _snapshot(tmp_path) == before


def test_safe_filename_accepts_ordinary_names():
    assert safe_filename("site_A-2.v1") == "site_A-2.v1"
    with pytest.raises(ValidationError, match="'/'"):
        safe_filename("a/b", what="site name")


@pytest.mark.parametrize("args, words", [
    (["--fwhm", "1e6"], ["1e+06 mm", "50 mm"]),
    (["--fwhm", "-1"], ["fwhm", ">= 0"]),
    (["--fwhm", "nan"], ["fwhm", "finite"]),
])
def test_filter_refuses_absurd_fwhm(tmp_path, capsys, scan_dir, args, words):
    """Regression (issue 15 item 12): --fwhm 1e6 ran for over ten minutes."""
    d, _ = scan_dir
    before = _snapshot(tmp_path)
    rc = main(["earl", "filter", str(d / "site_x.nii.gz"), *args, "--out", str(tmp_path / "f.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2, err
    for w in words:
        assert w in err, err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("args, words", [
    (["--max-fwhm", "1e6"], ["--max-fwhm", "50 mm"]),
    (["--step", "1e-6"], ["--step", "0.05"]),
])
def test_calibrate_refuses_unbounded_sweeps(tmp_path, capsys, scan_dir, args, words):
    d, _ = scan_dir
    before = _snapshot(tmp_path)
    rc = main(["earl", "calibrate", str(d / "site_x.nii.gz"), "--fill", str(d / "fill.json"), *args,
               "--out", str(tmp_path / "cal")])
    err = capsys.readouterr().err
    assert rc == 2 and all(w in err for w in words), err
    assert _snapshot(tmp_path) == before


def test_nan_voxels_survive_reading_and_are_refused_in_the_phantom(tmp_path, capsys, scan_dir):
    """Regression (issue 15 item 4): NaN voxels in NIfTI were read as 0."""
    _, scan = scan_dir
    a = sitk.GetArrayFromImage(scan.image)
    a[a.shape[0] // 2, 45:55, 45:55] = np.nan  # 100 NaN voxels in the sphere plane, in the body
    img = sitk.GetImageFromArray(a)
    img.CopyInformation(scan.image)
    write_image(img, tmp_path / "nan.nii.gz")
    back = sitk.GetArrayFromImage(read_image(tmp_path / "nan.nii.gz"))
    assert np.isnan(back).sum() == 100
    scan.fill.to_json(tmp_path / "fill.json")
    before = _snapshot(tmp_path)
    rc = main(["earl", "check", str(tmp_path / "nan.nii.gz"), "--fill", str(tmp_path / "fill.json"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "100 NaN voxel(s) inside the phantom" in err and "'nan'" in err, err
    assert _snapshot(tmp_path) == before


@pytest.fixture
def dicom_copy(tmp_path):
    src = REAL_DATA / "recon_2"
    dst = tmp_path / "recon_2"
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    reader = sitk.ImageSeriesReader()
    return dst, list(reader.GetGDCMSeriesFileNames(str(dst)))


def test_dicom_series_with_a_missing_slice_is_refused(dicom_copy):
    d, files = dicom_copy
    Path(files[40]).unlink()
    with pytest.raises(CorruptFileError, match=r"gap \(1 slice\(s\) missing\)") as exc:
        read_image(d)
    assert Path(files[39]).name in str(exc.value) and Path(files[41]).name in str(exc.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_dicom_series_with_an_unreadable_slice_is_refused(dicom_copy, damage):
    d, files = dicom_copy
    victim = Path(files[10])
    data = victim.read_bytes()
    victim.write_bytes(b"not dicom" * 50 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=victim.name):
        read_image(d)


def test_dicom_series_with_uneven_spacing_is_refused(dicom_copy, tmp_path):
    d, files = dicom_copy
    img = sitk.ReadImage(files[20])
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[20])
    reader.LoadPrivateTagsOn()
    reader.ReadImageInformation()
    x, y, z = (float(v) for v in reader.GetMetaData("0020|0032").split("\\"))
    img = reader.Execute()
    img.SetMetaData("0020|0032", f"{x}\\{y}\\{z + 1.0}")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(files[20])
    writer.Execute(img)
    with pytest.raises(CorruptFileError, match="apart"):
        read_image(d)


def test_existing_folder_that_is_not_a_result_set_is_never_replaced(tmp_path, capsys, scan_dir):
    d, _ = scan_dir
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    before = _snapshot(tmp_path)
    rc = main(["earl", "check", str(d / "site_x.nii.gz"), "--fill", str(d / "fill.json"), "--out", str(out),
               "--force"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a result set" in err, err
    assert _snapshot(tmp_path) == before


def test_nan_in_a_lesion_region_is_an_error_row_naming_the_case(tmp_path):
    """Regression (issue 15 item 4): NaN voxels silently changed 80 of 107 features."""
    from sitekit.features import extract

    rng = np.random.default_rng(0)
    m = np.zeros((20, 20, 20), np.uint8)
    m[5:15, 5:15, 5:15] = 1
    for case, nan in (("clean", False), ("holey", True)):
        a = rng.gamma(4.0, 0.5, (20, 20, 20)).astype(np.float32)
        if nan:
            a[8, 8, 8] = np.nan
        write_image(sitk.GetImageFromArray(a), tmp_path / f"{case}.nii.gz")
    write_image(sitk.GetImageFromArray(m), tmp_path / "mask.nii.gz")
    (tmp_path / "manifest.csv").write_text(
        "subject_id,site,image,mask\nclean,A,clean.nii.gz,mask.nii.gz\nholey,A,holey.nii.gz,mask.nii.gz\n")
    features, errors = extract(tmp_path / "manifest.csv")
    assert list(errors["subject_id"]) == ["holey"] and errors["stage"].iloc[0] == "check"
    assert "1 NaN voxel(s) in or next to the region of label 1" in errors["reason"].iloc[0]
    assert list(features["subject_id"]) == ["clean"]


def test_notes_beside_a_dicom_series_are_not_taken_for_broken_slices(dicom_copy):
    d, files = dicom_copy
    (d / "README").write_text("exported 2026-03-02")
    (d / "notes.txt").write_text("phantom QC")
    assert read_image(d).GetSize() == (192, 192, 89)
    (d / "IM0001").write_bytes(b"\x00" * 300)  # a slice-like name that GDCM cannot read
    with pytest.raises(CorruptFileError, match="IM0001"):
        read_image(d)
