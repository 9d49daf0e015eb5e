"""Bad input to the image-model tools: each case a named error or a documented behaviour."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
import SimpleITK as sitk
from onnx import TensorProto, helper

from sitekit.exceptions import CorruptFileError, DataWarning, MissingFileError, ValidationError
from sitekit.robustness import evaluate_segmentation, segmentation_attack, segmentation_metrics
from sitekit.robustness.models import FixedThresholdSegmenter, OnnxSegmenter, ThresholdSegmenter
from sitekit.robustness.segmentation import shift_sweep


def _img(a, spacing=(2.0, 2.0, 2.0), dtype=np.float32):
    img = sitk.GetImageFromArray(np.asarray(a, dtype))
    img.SetSpacing(spacing)
    return img


def _lesion(shape=(16, 16, 16)):
    a = np.ones(shape, np.float32)
    a[6:10, 6:10, 6:10] = 6.0
    return a


def _rank4_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"])
    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g2d", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _write_case(tmp_path, name, image, mask):
    sitk.WriteImage(image, str(tmp_path / f"{name}_img.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / f"{name}_mask.nii.gz"))
    return {"subject_id": name, "site": "X", "image": f"{name}_img.nii.gz", "mask": f"{name}_mask.nii.gz"}


def _not_onnx(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_text("this is not a network")
    OnnxSegmenter(p)


def _missing(tmp_path):
    OnnxSegmenter(tmp_path / "nowhere.onnx")


def _wrong_rank(tmp_path):
    OnnxSegmenter(_rank4_model(tmp_path / "m2d.onnx"))


def _bad_card(tmp_path):
    p = _rank4_model(tmp_path / "m.onnx")
    (tmp_path / "m.json").write_text("{not json")
    OnnxSegmenter(p)


def _mask_other_grid(tmp_path):
    segmentation_metrics(_img(_lesion() > 2, dtype=np.uint8),
                         _img(_lesion() > 2, spacing=(2.0, 2.0, 3.0), dtype=np.uint8))


def _image_other_grid(tmp_path):
    m = _img(_lesion() > 2, dtype=np.uint8)
    segmentation_metrics(m, m, _img(_lesion((16, 16, 15))))


def _attack_zero_budget(tmp_path):
    segmentation_attack(FixedThresholdSegmenter(), _img(_lesion()), target="clean", epsilon=0.0)


def _attack_bad_method(tmp_path):
    segmentation_attack(FixedThresholdSegmenter(), _img(_lesion()), target="clean", epsilon=0.1,
                        method="sqare")


def _attack_no_reference(tmp_path):
    segmentation_attack(FixedThresholdSegmenter(), _img(_lesion()), epsilon=0.1)


def _attack_2d_image(tmp_path):
    segmentation_attack(FixedThresholdSegmenter(), sitk.GetImageFromArray(np.ones((4, 4), np.float32)),
                        target="clean", epsilon=0.1)


def _evaluate_not_a_model(tmp_path):
    evaluate_segmentation(object(), tmp_path / "m.csv")


def _evaluate_bad_sweep(tmp_path):
    evaluate_segmentation(ThresholdSegmenter(), tmp_path / "m.csv", perturbations=["blur"])


ERRORS = [
    (_not_onnx, CorruptFileError, "not a readable ONNX model"),
    (_missing, MissingFileError, "does not exist"),
    (_wrong_rank, ValidationError, "needs rank 5"),
    (_bad_card, CorruptFileError, "not valid JSON"),
    (_mask_other_grid, ValidationError, "different grids"),
    (_image_other_grid, ValidationError, "different grids"),
    (_attack_zero_budget, ValidationError, "'epsilon' parameter"),
    (_attack_bad_method, ValidationError, "Did you mean 'square'"),
    (_attack_no_reference, ValidationError, "needs a 'reference' mask"),
    (_attack_2d_image, ValidationError, "3-D scalar image"),
    (_evaluate_not_a_model, ValidationError, "predict"),
    (_evaluate_bad_sweep, ValidationError, "Sweep objects"),
]


@pytest.mark.parametrize("make, error, message", ERRORS, ids=[e[0].__name__.strip("_") for e in ERRORS])
def test_named_errors(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        make(tmp_path)


def test_mask_on_another_grid_in_a_manifest_goes_to_the_errors_table(tmp_path):
    good = _write_case(tmp_path, "good", _img(_lesion()), _img(_lesion() > 2, dtype=np.uint8))
    bad = _write_case(tmp_path, "bad", _img(_lesion()), _img(_lesion() > 2, spacing=(2, 2, 3), dtype=np.uint8))
    import pandas as pd

    with pytest.warns(DataWarning, match="could not be scored"):
        ev = evaluate_segmentation(FixedThresholdSegmenter(2.5), pd.DataFrame([good, bad]), base_dir=tmp_path,
                                   n_bootstrap=0)
    assert ev.errors[["subject_id", "stage"]].values.tolist() == [["bad", "read"]]
    assert "different grids" in ev.errors.loc[0, "reason"]
    assert set(ev.metrics["subject_id"]) == {"good"}


def test_empty_reference_is_scored_by_the_documented_convention(tmp_path):
    import pandas as pd

    case = _write_case(tmp_path, "neg", _img(_lesion()), _img(np.zeros((16, 16, 16)), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a negative case is not an error
        ev = evaluate_segmentation(FixedThresholdSegmenter(2.5), pd.DataFrame([case]), base_dir=tmp_path,
                                   n_bootstrap=0)
    v = ev.metrics.set_index("metric")["value"]
    assert v["dice"] == 0.0 and v["fpv_ml"] == pytest.approx(64 * 8 / 1000) and math.isnan(v["hd95_mm"])


def test_perturbation_leaving_the_field_of_view_is_reported(tmp_path):
    import pandas as pd

    case = _write_case(tmp_path, "c", _img(_lesion()), _img(_lesion() > 2, dtype=np.uint8))
    with pytest.warns(DataWarning):
        ev = evaluate_segmentation(FixedThresholdSegmenter(2.5), pd.DataFrame([case]), base_dir=tmp_path,
                                   perturbations=[shift_sweep((2.0, 100.0))], n_bootstrap=0)
    assert ev.errors[["perturbation", "severity", "stage"]].values.tolist() == [["shift_x", 100.0, "perturbation"]]
    assert "left the field of view" in ev.errors.loc[0, "reason"]
    assert (ev.metrics.query("perturbation == 'shift_x'")["severity"] == 2.0).all()
