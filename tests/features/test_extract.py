"""extract() over manifests: exactness, per-case errors, resume, Dask, EARL filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from radiomics.featureextractor import RadiomicsFeatureExtractor

import sitekit
import sitekit.features._extract as extract_module
from sitekit.exceptions import OutputExistsError, UnknownSiteError, ValidationError
from sitekit.features import (
    DEFAULT_PARAMS,
    ERROR_COLUMNS,
    PROVENANCE_COLUMNS,
    extract,
    extract_case,
    load_params,
    params_hash,
)
from sitekit.harmonize.earl import apply_filter
from sitekit.io import file_hash

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

# a cheaper parameter set where the test is about the machinery, not the default file
FAST = {"setting": {"binWidth": 0.5}, "featureClass": {"firstorder": None, "glcm": ["Contrast"]}}


def _feature_cols(df):
    return [c for c in df.columns if c.startswith("original_")]


def test_features_equal_pyradiomics_exactly(manifest):
    features, errors = extract(manifest)
    assert errors.empty and len(features) == 4
    raw = RadiomicsFeatureExtractor(str(DEFAULT_PARAMS))
    root = manifest.parent
    for _, row in features.iterrows():
        ref = raw.execute(str(root / row["image"]), str(root / row["mask"]), label=1)
        ref = {k: float(v) for k, v in ref.items() if not k.startswith("diagnostics_")}
        assert _feature_cols(features) == list(ref)
        assert {c: row[c] for c in ref} == ref  # exact equality, no tolerance


def test_columns_provenance_and_passthrough(manifest):
    features, _ = extract(manifest, params=FAST)
    cols = list(features.columns)
    assert cols[:6] == ["subject_id", "site", "image", "mask", "age", "outcome"]
    assert cols[6 : 6 + len(PROVENANCE_COLUMNS)] == list(PROVENANCE_COLUMNS)
    assert all(c.startswith("original_") for c in cols[6 + len(PROVENANCE_COLUMNS) :])
    row = features.iloc[1]
    assert row["subject_id"] == "S01" and row["site"] == "B" and row["age"] == 51
    assert row["sitekit_version"] == sitekit.__version__
    assert row["pyradiomics_version"].lstrip("v").startswith("3.1")
    assert row["params_hash"] == params_hash(load_params(FAST))
    assert row["image_hash"] == file_hash(manifest.parent / row["image"])
    assert row["mask_hash"] == file_hash(manifest.parent / row["mask"])
    assert row["label"] == 1 and row["suv_conversion"] == "none" and np.isnan(row["earl_fwhm_mm"])
    assert not any(c.startswith("diagnostics_") for c in cols)


def test_bad_cases_recorded_and_run_completes(tmp_path, manifest_factory, case_factory):
    m = manifest_factory(tmp_path, 6)
    img_dir = tmp_path / "images"
    (img_dir / "c1_pet.nii.gz").write_bytes(b"\x1f\x8b not really a gzip file")  # corrupt image
    img, _ = case_factory(2)
    sitk.WriteImage(sitk.RegionOfInterest(sitk.Cast(img > 99, sitk.sitkUInt8), [20, 24, 24], [0, 0, 0]),
                    str(img_dir / "c2_mask.nii.gz"))  # geometry mismatch
    _, mask = case_factory(3)
    sitk.WriteImage(mask * 0, str(img_dir / "c3_mask.nii.gz"))  # empty mask
    df = pd.read_csv(m)
    df.loc[4, "image"] = "images/missing.nii.gz"
    df["label_value"] = [1, 1, 1, 1, 1, 2]  # label 2 absent from case 5
    df.to_csv(m, index=False)
    out = tmp_path / "out" / "features.parquet"
    features, errors = extract(m, out=out, params=FAST)
    assert list(features["subject_id"]) == ["S00"]
    assert list(errors.columns) == list(ERROR_COLUMNS)
    got = dict(zip(errors["subject_id"], zip(errors["stage"], errors["reason"], strict=True), strict=True))
    assert set(got) == {"S01", "S02", "S03", "S04", "S05"}
    assert got["S01"][0] == "read" and "c1_pet.nii.gz" in got["S01"][1]
    assert got["S02"][0] == "check" and "geometry mismatch" in got["S02"][1]
    assert got["S03"][0] == "check" and "empty mask" in got["S03"][1]
    assert got["S04"][0] == "read" and "missing.nii.gz" in got["S04"][1]
    assert got["S05"][0] == "check" and "label 2 absent" in got["S05"][1]
    on_disk = pd.read_parquet(out)
    assert list(on_disk["subject_id"]) == ["S00"]
    assert pd.read_csv(tmp_path / "out" / "features.errors.csv")["subject_id"].tolist() == list(got)
    assert not (tmp_path / "out" / "features.parquet.parts").exists()


class _Spy:
    """Counts the cases really extracted (wraps the real process_case)."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        real = extract_module.process_case

        def wrapped(task, params):
            self.calls.append(task["subject_id"])
            return real(task, params)

        monkeypatch.setattr(extract_module, "process_case", wrapped)


def test_interrupt_and_resume(tmp_path, manifest_factory, monkeypatch):
    m = manifest_factory(tmp_path, 5)
    out = tmp_path / "f.parquet"
    parts = tmp_path / "f.parquet.parts"
    seen = []

    def interrupt_after_two(n):
        seen.append(n)
        if sum(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(m, out=out, params=FAST, progress=interrupt_after_two)
    assert not out.exists()
    done_parts = sorted(parts.glob("ok-*.parquet"))
    assert pd.concat([pd.read_parquet(p) for p in done_parts])["subject_id"].tolist() == ["S00", "S01"]
    stamps = {p.name: p.stat().st_mtime_ns for p in done_parts}

    with pytest.raises(OutputExistsError, match="--resume"):
        extract(m, out=out, params=FAST)
    with pytest.raises(ValidationError, match="other parameters"):
        extract(m, out=out, params={"setting": {"binWidth": 1.0}}, resume=True)

    spy = _Spy(monkeypatch)
    progress = []

    def check_untouched(n):
        progress.append(n)
        if len(progress) == 1:  # before anything new was written
            assert {p.name: p.stat().st_mtime_ns for p in parts.glob("ok-*.parquet")} == stamps

    features, errors = extract(m, out=out, params=FAST, resume=True, progress=check_untouched)
    assert spy.calls == ["S02", "S03", "S04"]
    assert progress == [2, 1, 1, 1]
    assert errors.empty and list(features["subject_id"]) == ["S00", "S01", "S02", "S03", "S04"]
    full, _ = extract(m, params=FAST)
    pd.testing.assert_frame_equal(pd.read_parquet(out), full)


def test_resume_extends_finished_run_and_retries_errors(tmp_path, manifest_factory, monkeypatch):
    m = manifest_factory(tmp_path, 4)
    df = pd.read_csv(m)
    good_image = df.loc[3, "image"]
    df.loc[3, "image"] = "images/late.nii.gz"
    df.iloc[:3].to_csv(tmp_path / "first.csv", index=False)
    df.to_csv(m, index=False)
    out = tmp_path / "f.parquet"
    extract(tmp_path / "first.csv", out=out, params=FAST)
    _, errors = extract(m, out=out, params=FAST, resume=True)
    assert errors["subject_id"].tolist() == ["S03"]
    (tmp_path / "images" / "late.nii.gz").write_bytes((tmp_path / good_image).read_bytes())
    spy = _Spy(monkeypatch)
    features, errors = extract(m, out=out, params=FAST, resume=True)
    assert spy.calls == ["S03"] and errors.empty
    assert pd.read_parquet(out)["subject_id"].tolist() == ["S00", "S01", "S02", "S03"]
    assert pd.read_csv(tmp_path / "f.errors.csv").empty


def test_existing_output_needs_force(tmp_path, manifest):
    out = tmp_path / "f.parquet"
    extract(manifest, out=out, params=FAST)
    with pytest.raises(OutputExistsError, match="--force"):
        extract(manifest, out=out, params=FAST)
    features, _ = extract(manifest, out=out, params=FAST, force=True)
    assert len(pd.read_parquet(out)) == len(features) == 4
    with pytest.raises(ValidationError, match="needs 'out'"):
        extract(manifest, resume=True)


def test_dask_two_workers_equal_serial(tmp_path, manifest_factory):
    manifest = manifest_factory(tmp_path, 16)
    assert extract_module.chunk_size(16, 2) == 2  # two cases per Dask task
    serial, _ = extract(manifest)
    parallel, errors = extract(manifest, workers=2)
    assert errors.empty
    pd.testing.assert_frame_equal(parallel, serial)


def test_chunk_size():
    assert extract_module.chunk_size(3, 2) == 1
    assert extract_module.chunk_size(64, 2) == 8
    assert extract_module.chunk_size(10_000, 2) == extract_module.MAX_CHUNK
    assert extract_module.chunk_size(100, 50) == 1


def test_earl_filter_per_site(tmp_path, manifest):
    calib = {"format": "sitekit-earl-calibration", "version": 1, "standard": "EARL1",
             "sites": {"A": {"chosen_fwhm_mm": 6.0}, "B": {"chosen_fwhm_mm": 0.0}}}
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "calibration.json").write_text(json.dumps(calib))
    features, errors = extract(manifest, params=FAST, earl_calibration=tmp_path / "cal")
    assert errors.empty
    assert features["earl_fwhm_mm"].tolist() == [6.0, 0.0, 6.0, 0.0]
    root = manifest.parent
    for _, row in features.iterrows():
        img = sitk.ReadImage(str(root / row["image"]))
        mask = sitk.ReadImage(str(root / row["mask"]))
        ref = extract_case(apply_filter(img, row["earl_fwhm_mm"]), mask, params=FAST)
        assert {c: row[c] for c in ref} == ref
    plain, _ = extract(manifest, params=FAST)
    assert plain.loc[0, "original_firstorder_Maximum"] > features.loc[0, "original_firstorder_Maximum"]
    assert plain.loc[1, "original_firstorder_Maximum"] == features.loc[1, "original_firstorder_Maximum"]
    calib["sites"].pop("B")
    (tmp_path / "cal" / "calibration.json").write_text(json.dumps(calib))
    with pytest.raises(UnknownSiteError, match="'B'"):
        extract(manifest, params=FAST, earl_calibration=tmp_path / "cal")


def test_manifest_dataframe_with_base_dir(manifest):
    df = pd.read_csv(manifest)
    features, _ = extract(df, base_dir=manifest.parent, params=FAST)
    ref, _ = extract(manifest, params=FAST)
    pd.testing.assert_frame_equal(features, ref)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.drop(columns=["mask"]), "'mask'"),
        (lambda d: d.assign(subject_id=["S00", "S01", "S00", "S03"]), "duplicate subject_id values: S00"),
        (lambda d: d.assign(label_value=[1, 0, 1, 1]), "label_value"),
        (lambda d: d.assign(suv=["bw", "xx", "", "none"]), "'suv'"),
        (lambda d: d.assign(params_hash=1), "params_hash"),
        (lambda d: d.assign(site=["A", None, "B", "A"]), "empty 'site'"),
    ],
)
def test_manifest_errors_named(manifest, change, match):
    bad = manifest.with_name("bad.csv")
    change(pd.read_csv(manifest)).to_csv(bad, index=False)
    with pytest.raises(ValidationError, match=match):
        extract(bad, params=FAST)


def test_option_errors(manifest, monkeypatch):
    with pytest.raises(ValidationError, match="workers"):
        extract(manifest, workers=0)
    with pytest.raises(ValidationError, match="either"):
        extract(manifest, workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValidationError, match="Did you mean 'bw'"):
        extract(manifest, suv="bwx")
    monkeypatch.setattr(extract_module, "SCHEDULER_TIMEOUT", "1s")  # nothing listens there
    with pytest.raises(ValidationError, match="Dask scheduler"):
        extract(manifest, scheduler="tcp://127.0.0.1:1", params=FAST)


def test_parts_flushed_during_run(tmp_path, manifest_factory, monkeypatch):
    """A hard kill loses at most the unflushed batch: parts appear while the run goes on."""
    m = manifest_factory(tmp_path, 4)
    monkeypatch.setattr(extract_module, "FLUSH_CASES", 2)
    parts = tmp_path / "f.parquet.parts"
    rows_on_disk = []

    def look(n):
        files = sorted(parts.glob("ok-*.parquet"))
        rows_on_disk.append(sum(len(pd.read_parquet(f)) for f in files))

    extract(m, out=tmp_path / "f.parquet", params=FAST, progress=look)
    assert rows_on_disk == [0, 2, 2, 4]
    assert not parts.exists()


SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "cohort" / "manifest.csv"


@pytest.mark.skipif(not SAMPLE.exists(), reason="sample_data/cohort not generated")
def test_sample_manifest_with_three_bad_cases(tmp_path):
    """Must show: corrupt image, geometry mismatch and empty mask on the sample cohort."""
    df = pd.read_csv(SAMPLE, dtype={"subject_id": str})
    df = df.groupby("site").head(2).reset_index(drop=True)  # 8 cases, 4 sites
    for col in ("image", "mask"):
        df[col] = [str(SAMPLE.parent / p) for p in df[col]]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.nii.gz").write_bytes(Path(df.loc[0, "image"]).read_bytes()[:200])  # truncated
    df.loc[0, "image"] = str(bad / "corrupt.nii.gz")
    moved = sitk.ReadImage(df.loc[1, "mask"])  # the right mask, shifted by 1.5 voxels
    moved.SetOrigin(tuple(o + 1.5 * s for o, s in zip(moved.GetOrigin(), moved.GetSpacing(), strict=True)))
    sitk.WriteImage(moved, str(bad / "moved.nii.gz"))
    df.loc[1, "mask"] = str(bad / "moved.nii.gz")
    empty = sitk.ReadImage(df.loc[3, "mask"]) * 0
    sitk.WriteImage(empty, str(bad / "empty.nii.gz"))
    df.loc[3, "mask"] = str(bad / "empty.nii.gz")
    df.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "features.parquet"
    features, errors = extract(tmp_path / "manifest.csv", out=out)
    assert len(features) == 5 and len(pd.read_parquet(out)) == 5
    assert errors["subject_id"].tolist() == df["subject_id"].iloc[[0, 1, 3]].tolist()
    assert errors["stage"].tolist() == ["read", "check", "check"]
    assert "geometry mismatch" in errors.loc[1, "reason"] and "empty mask" in errors.loc[2, "reason"]
    assert pd.read_csv(tmp_path / "features.errors.csv")["reason"].tolist() == errors["reason"].tolist()
    assert features[[c for c in features.columns if c.startswith("original_")]].notna().all().all()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_image_is_an_error_not_zeros(tmp_path, case_factory, suffix):
    """ITK zero-fills truncated NIfTI files; extract must report them instead."""
    img, mask = case_factory(1)
    sitk.WriteImage(img, str(tmp_path / f"full{suffix}"))
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) * 2 // 3])
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    pd.DataFrame({"subject_id": ["ok", "cut"], "site": ["A", "A"],
                  "image": [f"full{suffix}", f"cut{suffix}"], "mask": ["mask.nii.gz"] * 2}
                 ).to_csv(tmp_path / "m.csv", index=False)
    features, errors = extract(tmp_path / "m.csv", params=FAST)
    assert features["subject_id"].tolist() == ["ok"]
    assert errors["stage"].tolist() == ["read"] and "truncated" in errors.loc[0, "reason"]
    assert features.loc[0, "image_hash"] == file_hash(tmp_path / f"full{suffix}")
