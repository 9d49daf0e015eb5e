"""SUV body-weight conversion from PET DICOM headers (series written with SimpleITK)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sitekit.exceptions import ExtractionError
from sitekit.features import extract, extract_case, suv_bw_factor, to_suv_bw
from sitekit.io import preserve_locale, read_image

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

WEIGHT_KG = 72.5
DOSE_BQ = 350e6
HALF_LIFE_S = 6586.2
INJECTION = "093000.00"  # 09:30:00
SERIES = "103000.00"  # 10:30:00, one hour later


def write_pet_series(directory, activity_bqml: np.ndarray, spacing=(3.0, 3.0, 3.0), **overrides):
    """Write a (z, y, x) uint16 activity array as a PET DICOM series with SUV tags."""
    directory.mkdir(parents=True)
    tags = {
        "0008|0060": "PT", "0008|0031": SERIES, "0010|1030": str(WEIGHT_KG),
        "0018|1072": INJECTION, "0018|1074": str(DOSE_BQ), "0018|1075": str(HALF_LIFE_S),
        "0054|1001": "BQML", "0054|1102": "START", "0020|000e": "1.2.826.0.1.3680043.2.1125.1.99",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1.98", "0028|1052": "0", "0028|1053": "1",
    }
    tags.update(overrides)
    vol = sitk.GetImageFromArray(activity_bqml.astype(np.uint16))
    vol.SetSpacing(spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    with preserve_locale():
        _write_slices(writer, vol, tags, directory)
    return vol


def _write_slices(writer, vol, tags, directory):
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        sl.SetMetaData("0020|0032", "\\".join(map(str, vol.TransformIndexToPhysicalPoint((0, 0, k)))))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.99.{k + 1}")
        writer.SetFileName(str(directory / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def _expected_factor(dt_s=3600.0):
    return WEIGHT_KG * 1000 / (DOSE_BQ * 2 ** (-dt_s / HALF_LIFE_S))


def _activity(n=16, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n]
    r2 = (x - n / 2) ** 2 + (y - n / 2) ** 2 + (z - n / 2) ** 2
    return np.rint(2000 + 20000 * np.exp(-r2 / 18) + rng.integers(0, 500, (n, n, n))).astype(np.uint16)


def test_suv_factor_matches_formula(tmp_path):
    act = _activity()
    write_pet_series(tmp_path / "pet", act)
    img = read_image(tmp_path / "pet")
    assert suv_bw_factor(img) == pytest.approx(_expected_factor(), rel=1e-12)
    suv = to_suv_bw(img)
    assert suv.GetMetaData("0054|1001") == "GML"
    np.testing.assert_allclose(sitk.GetArrayFromImage(suv), act * _expected_factor(), rtol=1e-12)
    # a typical lesion: ~22000 Bq/mL at 1 h -> SUV ~ 5.4 for 72.5 kg and 350 MBq
    assert 4 < sitk.GetArrayFromImage(suv).max() < 7


def test_suv_decay_variants_and_midnight(tmp_path):
    act = _activity(8)
    write_pet_series(tmp_path / "admin", act, **{"0054|1102": "ADMIN"})
    assert suv_bw_factor(read_image(tmp_path / "admin")) == pytest.approx(WEIGHT_KG * 1000 / DOSE_BQ)
    write_pet_series(tmp_path / "night", act, **{"0018|1072": "233000", "0008|0031": "003000"})
    assert suv_bw_factor(read_image(tmp_path / "night")) == pytest.approx(_expected_factor())
    write_pet_series(tmp_path / "gml", act, **{"0054|1001": "GML"})
    assert suv_bw_factor(read_image(tmp_path / "gml")) == 1.0


def test_suv_errors_named(tmp_path):
    act = _activity(8)
    write_pet_series(tmp_path / "cnts", act, **{"0054|1001": "CNTS"})
    with pytest.raises(ExtractionError, match="CNTS") as ei:
        suv_bw_factor(read_image(tmp_path / "cnts"))
    assert ei.value.stage == "suv"
    write_pet_series(tmp_path / "noweight", act, **{"0010|1030": ""})
    with pytest.raises(ExtractionError, match=r"0010\|1030 \(PatientWeight\)"):
        suv_bw_factor(read_image(tmp_path / "noweight"))
    with pytest.raises(ExtractionError, match="0010"):
        suv_bw_factor(sitk.Image([4, 4, 4], sitk.sitkFloat32))


def test_extract_with_suv_from_dicom(tmp_path):
    act = _activity()
    write_pet_series(tmp_path / "pet", act)
    n = act.shape[0]
    z, y, x = np.mgrid[:n, :n, :n]
    mask = sitk.GetImageFromArray((((x - 8) ** 2 + (y - 8) ** 2 + (z - 8) ** 2) <= 16).astype(np.uint8))
    mask.CopyInformation(read_image(tmp_path / "pet"))
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    pd.DataFrame({"subject_id": ["P1", "P2"], "site": ["A", "A"], "image": ["pet", "pet"],
                  "mask": ["mask.nii.gz"] * 2, "suv": ["bw", ""]}).to_csv(tmp_path / "m.csv", index=False)
    params = {"setting": {"binWidth": 0.25}, "featureClass": {"firstorder": None}}
    features, errors = extract(tmp_path / "m.csv", params=params)
    assert errors.empty
    assert features["suv_conversion"].tolist() == ["bw", "none"]
    ref = extract_case(to_suv_bw(read_image(tmp_path / "pet")), mask, params=params)
    assert {k: features.loc[0, k] for k in ref} == ref
    # the row without conversion stays in Bq/mL; option suv="bw" converts every row
    assert features.loc[1, "original_firstorder_Mean"] > 1000
    all_bw, _ = extract(tmp_path / "m.csv", params=params, suv="bw")
    assert all_bw["suv_conversion"].tolist() == ["bw", "bw"]
    # a NIfTI image has no DICOM header: a per-case error at stage "suv"
    sitk.WriteImage(read_image(tmp_path / "pet"), str(tmp_path / "pet.nii.gz"))
    pd.DataFrame({"subject_id": ["N1"], "site": ["A"], "image": ["pet.nii.gz"], "mask": ["mask.nii.gz"],
                  "suv": ["bw"]}).to_csv(tmp_path / "n.csv", index=False)
    _, errors = extract(tmp_path / "n.csv", params=params)
    assert errors["stage"].tolist() == ["suv"] and "0010|1030" in errors.loc[0, "reason"]
