"""Tests of sitekit.robustness.stability (issue 6): the feature_stability pipeline."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sitekit.exceptions import DataWarning, MissingFileError, OutputExistsError, ValidationError
from sitekit.robustness.perturbations import RandomIntensityScale, replay
from sitekit.robustness.stability import OUTPUT_FILES, feature_stability

# minimal pyradiomics parameters: no resampling, a few first-order and shape features
PARAMS = {
    "setting": {"binWidth": 0.25, "label": 1},
    "imageType": {"Original": {}},
    "featureClass": {"firstorder": ["Mean", "Maximum", "Entropy"], "shape": ["VoxelVolume"]},
}


def write_cohort(folder, n_cases=4, size=24, seed=0):
    """Small synthetic lesions of different size and uptake; a manifest CSV."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    z, y, x = np.mgrid[:size, :size, :size].astype(float)
    c = (size - 1) / 2
    for i in range(n_cases):
        radius = 3.0 + 1.2 * i
        peak = 3.0 + 3.0 * i + rng.uniform()
        r = np.sqrt((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2)
        arr = 1.0 + peak * np.exp(-(r**2) / (2 * (radius / 1.3) ** 2)) + 0.1 * rng.normal(size=r.shape)
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing((2.0, 2.0, 2.0))
        m = sitk.GetImageFromArray((r <= radius).astype(np.uint8))
        m.CopyInformation(img)
        sitk.WriteImage(img, str(folder / f"c{i}_img.nii.gz"))
        sitk.WriteImage(m, str(folder / f"c{i}_mask.nii.gz"))
        rows.append({"subject_id": f"case{i}", "site": "A" if i % 2 else "B",
                     "image": f"c{i}_img.nii.gz", "mask": f"c{i}_mask.nii.gz"})
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"))


def test_feature_stability_reproducible_and_replayable(cohort):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        a = feature_stability(cohort, "NTV", n=3, params=PARAMS, random_state=7)
        b = feature_stability(cohort, "NTV", n=3, params=PARAMS, random_state=7)
        c = feature_stability(cohort, "NTV", n=3, params=PARAMS, random_state=8)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.records == b.records
    assert a.records != c.records
    assert list(a.table.columns[:6]) == ["feature", "icc", "ci_low", "ci_high", "koo_li", "robust"]
    assert set(a.table["feature"]) == {
        "original_firstorder_Mean", "original_firstorder_Maximum", "original_firstorder_Entropy",
        "original_shape_VoxelVolume",
    }
    assert (a.table["n_subjects"] == 4).all() and (a.table["n_raters"] == 3).all()
    assert len(a.records) == 4 * 3 and a.settings["entropy"] == 7
    # replaying one record reproduces the extracted features of that copy
    from sitekit.features import extract_case
    from sitekit.io import read_image

    rec = json.loads(json.dumps(a.records[5]))
    case = int(rec["subject_id"][-1])
    img = read_image(cohort.parent / f"c{case}_img.nii.gz")
    mask = read_image(cohort.parent / f"c{case}_mask.nii.gz")
    pimg, pmask = replay(rec["steps"], img, mask)
    feats = extract_case(pimg, pmask, params=PARAMS)
    stored = a.values[(a.values["subject_id"] == rec["subject_id"]) & (a.values["copy"] == rec["copy"])]
    for name, value in zip(stored["feature"], stored["value"], strict=True):
        assert feats[name] == value


def test_feature_stability_physics(cohort):
    # a +-5 % calibration error leaves the mask (and shape) untouched: ICC exactly 1
    res = feature_stability(cohort, RandomIntensityScale(error_percent=(-5, 5)), n=3,
                            params=PARAMS, random_state=0, form="ICC(1,1)", threshold=0.9)
    t = res.table.set_index("feature")
    assert t.loc["original_shape_VoxelVolume", "icc"] == 1.0
    assert t.loc["original_shape_VoxelVolume", "koo_li"] == "excellent"
    assert bool(t.loc["original_shape_VoxelVolume", "robust"])
    # lesion uptake differs between cases much more than 5 %: mean stays robust
    assert t.loc["original_firstorder_Mean", "icc"] > 0.9
    assert set(res.robust_features) >= {"original_shape_VoxelVolume", "original_firstorder_Mean"}
    s = res.summary()
    assert s["n_features"] == 4 and s["n_robust"] == len(res.robust_features)


@pytest.mark.slow
def test_feature_stability_workers_give_same_table(cohort):
    a = feature_stability(cohort, "I", n=2, params=PARAMS, random_state=3)
    b = feature_stability(cohort, "I", n=2, params=PARAMS, random_state=3, workers=2)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.records == b.records


def test_feature_stability_save(cohort, tmp_path):
    res = feature_stability(cohort, "I", n=2, params=PARAMS, random_state=1)
    out = tmp_path / "out"
    paths = res.save(out)
    assert sorted(p.name for p in paths.values()) == sorted(OUTPUT_FILES)
    table = pd.read_csv(out / "stability.csv")
    assert list(table["feature"]) == list(res.table["feature"])
    lines = (out / "robust_features.txt").read_text().splitlines()
    assert lines == res.robust_features
    recs = [json.loads(line) for line in (out / "perturbations.jsonl").read_text().splitlines()]
    assert recs == res.records
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 4 and summary["n"] == 2 and summary["form"] == "ICC(1,1)"
    with pytest.raises(OutputExistsError, match="--force"):
        res.save(out)
    res.save(out, force=True)


def test_feature_stability_input_errors(cohort, tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"subject_id": ["a", "b"], "image": ["x", "y"]}).to_csv(bad, index=False)
    with pytest.raises(ValidationError, match="mask"):
        feature_stability(bad, "N", n=2, params=PARAMS)
    missing = tmp_path / "missing.csv"
    pd.DataFrame({"subject_id": ["a", "b"], "image": ["x.nii.gz", "y.nii.gz"],
                  "mask": ["x.nii.gz", "y.nii.gz"]}).to_csv(missing, index=False)
    with pytest.raises(MissingFileError):
        feature_stability(missing, "N", n=2, params=PARAMS)
    with pytest.raises(ValidationError, match="'n'"):
        feature_stability(cohort, "N", n=1, params=PARAMS)
    with pytest.raises(ValidationError, match="Unknown perturbation code"):
        feature_stability(cohort, "NX", n=2, params=PARAMS)


def test_feature_stability_empty_mask_names_case_and_deterministic_warns(cohort, tmp_path):
    from sitekit.robustness.perturbations import IntensityScale

    df = pd.read_csv(cohort)
    empty = sitk.Image(sitk.ReadImage(str(cohort.parent / df.loc[0, "mask"]))) * 0
    sitk.WriteImage(empty, str(tmp_path / "empty_mask.nii.gz"))
    df["image"] = [str(cohort.parent / p) for p in df["image"]]
    df["mask"] = [str(cohort.parent / p) for p in df["mask"]]
    df.loc[0, "mask"] = str(tmp_path / "empty_mask.nii.gz")
    with pytest.raises(ValidationError, match="case0"):
        feature_stability(df, "I", n=2, params=PARAMS, random_state=0)
    with pytest.warns(DataWarning, match="deterministic"):
        res = feature_stability(cohort, IntensityScale(error_percent=5.0), n=2, params=PARAMS,
                                random_state=0)
    assert (res.table["icc"] == 1.0).all()
