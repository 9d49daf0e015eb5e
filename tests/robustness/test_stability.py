"""Tests of sitekit.robustness.stability (issue 6): ICC vs pingouin, CCC, Koo-Li, feature_stability."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sitekit.exceptions import DataWarning, MissingFileError, OutputExistsError, ValidationError
from sitekit.robustness.perturbations import RandomIntensityScale, replay
from sitekit.robustness.stability import (
    ICC_FORMS,
    OUTPUT_FILES,
    ccc,
    feature_stability,
    icc,
    koo_li_class,
)

PINGOUIN_NAMES = {
    "ICC(1,1)": "ICC(1,1)",
    "ICC(2,1)": "ICC(A,1)",
    "ICC(3,1)": "ICC(C,1)",
    "ICC(1,k)": "ICC(1,k)",
    "ICC(2,k)": "ICC(A,k)",
    "ICC(3,k)": "ICC(C,k)",
}

# minimal pyradiomics parameters: no resampling, a few first-order and shape features
PARAMS = {
    "setting": {"binWidth": 0.25, "label": 1},
    "imageType": {"Original": {}},
    "featureClass": {"firstorder": ["Mean", "Maximum", "Entropy"], "shape": ["VoxelVolume"]},
}


def ratings(n, k, p, seed, rater_sd=0.3):
    rng = np.random.default_rng(seed)
    subject = rng.normal(size=(n, 1, p)) * rng.uniform(0.2, 2.0, p)
    rater = rng.normal(size=(1, k, p)) * rater_sd
    return subject + rater + rng.normal(size=(n, k, p)) + rng.uniform(-5, 5, p)


def pingouin_icc(y):
    pg = pytest.importorskip("pingouin")
    old = dict(pg.options)
    pg.options["round"] = None
    pg.options["round.column.CI95"] = None
    try:
        n, k = y.shape
        long = pd.DataFrame({
            "s": np.repeat(np.arange(n), k),
            "r": np.tile(np.arange(k), n),
            "v": y.ravel(),
        })
        return pg.intraclass_corr(long, targets="s", raters="r", ratings="v",
                                  nan_policy="omit").set_index("Type")
    finally:
        pg.options.update(old)


@pytest.mark.parametrize("seed,n,k", [(0, 10, 3), (1, 25, 6), (2, 7, 2)])
def test_icc_matches_pingouin_every_form(seed, n, k):
    y = ratings(n, k, 6, seed)
    ours = icc(y, form="all").set_index(["feature", "form"])
    for j in range(y.shape[2]):
        ref = pingouin_icc(y[:, :, j])
        for form, pform in PINGOUIN_NAMES.items():
            row = ours.loc[(f"feature_{j}", form)]
            lo, hi = ref.loc[pform, "CI95"]
            expected = [ref.loc[pform, c] for c in ("ICC", "F", "df1", "df2", "pval")] + [lo, hi]
            got = [row["icc"], row["F"], row["df1"], row["df2"], row["p_value"],
                   row["ci_low"], row["ci_high"]]
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=f"{form} feature {j}")


def test_icc_nan_omit_matches_pingouin():
    y = ratings(15, 4, 3, seed=5)
    y[2, 1, 0] = np.nan
    y[7, 3, 0] = np.nan
    ours = icc(y, form="all").set_index(["feature", "form"])
    ref = pingouin_icc(y[:, :, 0])
    for form, pform in PINGOUIN_NAMES.items():
        assert ours.loc[("feature_0", form), "icc"] == pytest.approx(ref.loc[pform, "ICC"], abs=1e-10)
        assert ours.loc[("feature_0", form), "n_subjects"] == 13
        assert ours.loc[("feature_1", form), "n_subjects"] == 15


def test_icc_same_missing_subject_in_every_feature():
    # regression (issue 6): one incomplete pattern shared by all features
    y = ratings(8, 3, 4, seed=2)
    y[3, 1, :] = np.nan
    res = icc(y)
    expected = icc(np.delete(y, 3, axis=0))
    np.testing.assert_allclose(res["icc"], expected["icc"], rtol=1e-12)
    assert (res["n_subjects"] == 7).all()


def test_icc_long_frame_equals_array_and_aliases():
    y = ratings(12, 4, 5, seed=3)
    n, k, p = y.shape
    long = pd.DataFrame({
        "subject": np.repeat(np.arange(n), k * p),
        "rater": np.tile(np.repeat(np.arange(k), p), n),
        "feature": np.tile([f"f{j}" for j in range(p)], n * k),
        "value": y.ravel(),
    }).sample(frac=1.0, random_state=0)
    a = icc(y, form="ICC(2,1)", feature_names=[f"f{j}" for j in range(p)])
    b = icc(long, form="ICC(A,1)").sort_values("feature").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    assert list(a.columns) == ["feature", "form", "icc", "ci_low", "ci_high", "F", "df1", "df2",
                               "p_value", "n_subjects", "n_raters"]
    assert set(ICC_FORMS.values()) == set(icc(y, form="all")["form"])


def test_pure_noise_icc_near_zero_and_unchanged_feature_one():
    rng = np.random.default_rng(0)
    n, k = 200, 5
    noise = rng.normal(size=(n, k))
    truth = rng.normal(size=(n, 1))
    unchanged = np.repeat(truth, k, axis=1)
    y = np.stack([noise, unchanged], axis=2)
    res = icc(y, form="all", feature_names=["noise", "unchanged"]).set_index(["feature", "form"])
    for form in ICC_FORMS.values():
        # ICC(1,1) of pure noise has SE ~ 0.03 here; its CI covers 0
        assert abs(res.loc[("noise", form), "icc"]) < 0.15
        assert res.loc[("noise", form), "ci_low"] < 0 < res.loc[("noise", form), "ci_high"]
        assert res.loc[("unchanged", form), "icc"] == 1.0
        assert res.loc[("unchanged", form), "ci_low"] == 1.0
        assert res.loc[("unchanged", form), "ci_high"] == 1.0


def test_icc_constant_feature_warns_and_gives_nan():
    y = ratings(10, 3, 2, seed=0)
    y[:, :, 1] = 4.2
    with pytest.warns(DataWarning, match="no variance"):
        res = icc(y)
    assert np.isnan(res.loc[1, "icc"]) and not np.isnan(res.loc[0, "icc"])


def test_icc_confidence_level_and_errors():
    y = ratings(20, 4, 3, seed=1)
    wide = icc(y, confidence=0.99)
    narrow = icc(y, confidence=0.90)
    assert ((wide["ci_high"] - wide["ci_low"]) > (narrow["ci_high"] - narrow["ci_low"])).all()
    np.testing.assert_allclose(wide["icc"], narrow["icc"])
    with pytest.raises(ValidationError, match="Did you mean"):
        icc(y, form="ICC(1,2)")
    with pytest.raises(ValidationError, match="at least 2 raters"):
        icc(y[:, :1, :])
    with pytest.raises(ValidationError, match="shape"):
        icc(np.zeros(5))
    with pytest.raises(ValidationError, match="columns"):
        icc(pd.DataFrame({"a": [1.0]}))


def test_ccc_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(-1.0 * 2 * np.var(x) / (2 * np.var(x) + 4 * np.mean(x) ** 2))
    # a shift of 1: 2*1.25 / (1.25 + 1.25 + 1) = 0.714...
    assert ccc(x, x + 1) == pytest.approx(2.5 / 3.5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    vec = ccc(a, b)
    for j in range(4):
        assert vec[j] == pytest.approx(ccc(a[:, j], b[:, j]))
        assert abs(vec[j]) <= abs(np.corrcoef(a[:, j], b[:, j])[0, 1]) + 1e-12
    # DataFrames are matched by column name, whatever the column order
    s = ccc(pd.DataFrame(a, columns=list("abcd")), pd.DataFrame(b, columns=list("abcd"))[list("dcba")])
    assert list(s.index) == list("abcd")
    np.testing.assert_allclose(s.to_numpy(), vec)
    # missing pairs are left out
    a2 = a.copy()
    a2[0, 0] = np.nan
    assert ccc(a2[:, 0], b[:, 0]) == pytest.approx(ccc(a[1:, 0], b[1:, 0]))


def test_koo_li_bands():
    got = koo_li_class([0.2, 0.5, 0.74, 0.75, 0.899, 0.9, 1.0, np.nan])
    assert got.tolist() == ["poor", "moderate", "moderate", "good", "good", "excellent",
                            "excellent", "undefined"]
    assert koo_li_class(0.95) == "excellent"
    s = koo_li_class(pd.Series([0.1, 0.8], index=["x", "y"]))
    assert s.to_dict() == {"x": "poor", "y": "good"}


# ---------------------------------------------------------------------------- feature_stability
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


def test_icc_invariances_property():
    """ICC is invariant to subject order, rater order and a positive affine change of units."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=10, deadline=None)
    @given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0), shift=st.floats(-1e3, 1e3))
    def check(seed, scale, shift):
        y = ratings(9, 4, 3, seed)
        rng = np.random.default_rng(seed)
        base = icc(y, form="all")
        moved = y[rng.permutation(9)][:, rng.permutation(4)] * scale + shift
        other = icc(moved, form="all")
        np.testing.assert_allclose(other["icc"], base["icc"], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(other["ci_low"], base["ci_low"], rtol=1e-7, atol=1e-9)

    check()


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
