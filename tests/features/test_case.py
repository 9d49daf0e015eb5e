"""extract_case and load_params: exact agreement with pyradiomics, named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from radiomics.featureextractor import RadiomicsFeatureExtractor

from sitekit.exceptions import (
    CorruptFileError,
    ExtractionError,
    MissingFileError,
    ValidationError,
)
from sitekit.features import DEFAULT_PARAMS, extract_case, load_params, params_hash

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def _raw(image, mask, params, label=1):
    out = RadiomicsFeatureExtractor(params).execute(image, mask, label=label)
    return {k: float(v) for k, v in out.items() if not k.startswith("diagnostics_")}


def test_default_params_valid_and_documented_choices():
    p = load_params()
    s = p["setting"]
    assert s["resampledPixelSpacing"] == [2.0, 2.0, 2.0]
    assert s["binWidth"] == 0.25
    assert set(p["featureClass"]) == {"firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    assert load_params(DEFAULT_PARAMS) == p
    assert params_hash(load_params(dict(p))) == params_hash(p)


def test_load_params_returns_independent_copy():
    p = load_params()
    p["setting"]["binWidth"] = 99.0
    assert load_params()["setting"]["binWidth"] == 0.25


def test_extract_case_equals_pyradiomics_exactly(case):
    image, mask = case
    ours = extract_case(image, mask)
    raw = _raw(image, mask, str(DEFAULT_PARAMS))
    assert ours == raw  # exact, same keys in the same order
    assert list(ours) == list(raw)
    assert "original_firstorder_Mean" in ours and "original_ngtdm_Coarseness" in ours
    assert not any(k.startswith("diagnostics_") for k in ours)


def test_extract_case_user_params_and_label(tmp_path, case_factory):
    image, mask = case_factory(3, label=2)
    params = {"setting": {"binWidth": 0.5, "label": 1}, "featureClass": {"firstorder": None, "glcm": ["Contrast"]}}
    f = tmp_path / "p.json"
    f.write_text(json.dumps(params))
    ours = extract_case(image, mask, params=f, label=2)
    assert ours == _raw(image, mask, params, label=2)
    assert "original_glcm_Contrast" in ours and "original_glcm_Correlation" not in ours
    assert not any(k.startswith("original_shape") for k in ours)


def test_extract_case_paths(tmp_path, case):
    image, mask = case
    sitk.WriteImage(image, str(tmp_path / "i.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "m.nii.gz"))
    assert extract_case(tmp_path / "i.nii.gz", tmp_path / "m.nii.gz") == extract_case(image, mask)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"setting": {"binWidht": 0.25}}, "binWidht"),
        ({"featureClass": {"glcmx": None}}, "glcmx"),
        ({"setting": {"binWidth": -1.0}}, "binWidth"),
        ([1, 2], "a dict or None"),
    ],
)
def test_invalid_params_named(params, match):
    with pytest.raises(ValidationError, match=match):
        load_params(params)


def test_param_file_errors(tmp_path):
    with pytest.raises(MissingFileError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting: [unclosed\n")
    with pytest.raises(CorruptFileError, match="bad.yaml"):
        load_params(bad)
    txt = tmp_path / "p.txt"
    txt.write_text("setting: {}\n")
    with pytest.raises(CorruptFileError, match="suffix"):
        load_params(txt)
    wrong = tmp_path / "w.yaml"
    wrong.write_text("setting:\n  binWidth: abc\n")
    with pytest.raises(ValidationError, match="w.yaml"):
        load_params(wrong)


def test_case_checks(case):
    image, mask = case
    small = sitk.RegionOfInterest(mask, [20, 20, 20], [0, 0, 0])
    with pytest.raises(ExtractionError, match="geometry mismatch: size") as ei:
        extract_case(image, small)
    assert ei.value.stage == "check"
    shifted = sitk.Image(mask)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ExtractionError, match="origin"):
        extract_case(image, shifted)
    spaced = sitk.Image(mask)
    spaced.SetSpacing((3.0, 3.0, 4.0))
    with pytest.raises(ExtractionError, match="spacing"):
        extract_case(image, spaced)
    empty = sitk.Image(mask) * 0
    with pytest.raises(ExtractionError, match="empty mask"):
        extract_case(image, empty)
    with pytest.raises(ExtractionError, match=r"label 3 absent .*labels present: 1"):
        extract_case(image, mask, label=3)
    with pytest.raises(ValidationError, match="label"):
        extract_case(image, mask, label=0)


def test_tiny_roi_is_extraction_error(case):
    image, mask = case
    arr = np.zeros(sitk.GetArrayFromImage(mask).shape, np.uint8)
    arr[10, 10, 10] = 1
    one = sitk.GetImageFromArray(arr)
    one.CopyInformation(mask)
    with pytest.raises(ExtractionError, match="pyradiomics failed") as ei:
        extract_case(image, one)
    assert ei.value.stage == "extract"
