"""OnnxSegmenter against the same computation in numpy, on ONNX models built from operators."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import SimpleITK as sitk
from onnx import TensorProto, helper, numpy_helper
from scipy import ndimage

from sitekit.robustness.models import OnnxSegmenter


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _io(spatial=("z", "y", "x")):
    x = helper.make_tensor_value_info("suv", TensorProto.FLOAT, [1, 1, *spatial])
    y = helper.make_tensor_value_info("probability", TensorProto.FLOAT, [1, 1, *spatial])
    return x, y


def threshold_model(path, level):
    """probability = float(input > level)."""
    x, y = _io()
    t = numpy_helper.from_array(np.array(level, np.float32), "level")
    nodes = [helper.make_node("Greater", ["suv", "level"], ["gt"]),
             helper.make_node("Cast", ["gt"], ["probability"], to=TensorProto.FLOAT)]
    return _save(helper.make_graph(nodes, "threshold", [x], [y], [t]), path)


def conv_model(path, weight, bias, spatial=("z", "y", "x")):
    """probability = sigmoid(conv3d(input, weight, pad 1) + bias)."""
    x, y = _io(spatial)
    w = numpy_helper.from_array(weight.astype(np.float32)[None, None], "w")
    b = numpy_helper.from_array(np.array([bias], np.float32), "b")
    nodes = [helper.make_node("Conv", ["suv", "w", "b"], ["logit"], pads=[1] * 6, kernel_shape=[3, 3, 3]),
             helper.make_node("Sigmoid", ["logit"], ["probability"])]
    return _save(helper.make_graph(nodes, "conv", [x], [y], [w, b]), path)


def _image(a, spacing=(2.0, 2.0, 2.0), origin=(-10.0, 4.0, 2.5)):
    img = sitk.GetImageFromArray(a.astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def _pet(rng, shape):
    a = ndimage.gaussian_filter(rng.normal(1.0, 0.6, shape), 1.0)
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2
    return a + 6.0 * np.exp(-(((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / 12.0))


# ------------------------------------------------------------------ numpy references
def _np_conv(a, weight, bias):
    return 1.0 / (1.0 + np.exp(-(ndimage.correlate(a.astype(np.float64), weight, mode="constant") + bias)))


def _np_windows(a, patch, overlap, fn):
    """Gaussian-blended sliding windows written independently: sigma = patch/8, weights max 1."""
    pads = [(0, max(0, p - s)) for p, s in zip(patch, a.shape)]
    big = np.pad(a, pads, mode="edge")
    g = [np.exp(-0.5 * ((np.arange(p) - (p - 1) / 2) / (p / 8)) ** 2) for p in patch]
    w = np.einsum("i,j,k->ijk", *g)
    w = np.maximum(w / w.max(), 1e-6)
    num, den = np.zeros(big.shape), np.zeros(big.shape)

    def starts(n, p):
        if n <= p:
            return [0]
        step = max(1, int(p * (1 - overlap)))
        s = list(range(0, n - p + 1, step))
        return s if s[-1] == n - p else s + [n - p]

    for z0 in starts(big.shape[0], patch[0]):
        for y0 in starts(big.shape[1], patch[1]):
            for x0 in starts(big.shape[2], patch[2]):
                sl = np.s_[z0:z0 + patch[0], y0:y0 + patch[1], x0:x0 + patch[2]]
                num[sl] += w * fn(big[sl])
                den[sl] += w
    return (num / den)[: a.shape[0], : a.shape[1], : a.shape[2]]


def _resample(img, spacing):
    old, size = np.array(img.GetSpacing()), np.array(img.GetSize())
    new = np.array(spacing, float)
    ref = sitk.Image([max(1, int(round(s))) for s in size * old / new], sitk.sitkFloat32)
    ref.SetSpacing(new.tolist())
    ref.SetOrigin((np.array(img.GetOrigin()) + (new - old) / 2).tolist())
    return ref


def _linear(img, ref):
    return sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32,
                         True)  # nearest-neighbour extrapolation at the edges


# ------------------------------------------------------------------ tests
def test_threshold_model_equals_numpy_with_card_normalisation(tmp_path):
    path = threshold_model(tmp_path / "thr.onnx", 0.25)
    (tmp_path / "thr.json").write_text(json.dumps({"normalise": {"kind": "scale", "offset": 0.0, "scale": 0.1}}))
    rng = np.random.default_rng(0)
    a = _pet(rng, (17, 20, 23))
    model = OnnxSegmenter(path)
    got = sitk.GetArrayFromImage(model.predict(_image(a)))
    np.testing.assert_array_equal(got, (a.astype(np.float32) * np.float32(0.1) > 0.25).astype(np.uint8))
    # with patches: a pointwise model gives the same mask whatever the windows
    patched = OnnxSegmenter(path, patch_size=(8, 6, 7), overlap=0.5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(patched.predict(_image(a))), got)


@pytest.mark.parametrize("patch_size, overlap", [(None, 0.25), ((8, 8, 8), 0.25), ((10, 7, 12), 0.5),
                                                 ((32, 32, 32), 0.25)])
def test_conv_model_equals_numpy(tmp_path, patch_size, overlap):
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(0, 0.3, (3, 3, 3)), -1.5
    path = conv_model(tmp_path / "conv.onnx", weight, bias)
    a = _pet(rng, (14, 19, 22))
    model = OnnxSegmenter(path, patch_size=patch_size, overlap=overlap, threshold=0.5)
    prob = sitk.GetArrayFromImage(model.predict_proba(_image(a)))
    if patch_size is None:
        want = _np_conv(a.astype(np.float32), weight, bias)
    else:
        want = _np_windows(a.astype(np.float32), tuple(reversed(patch_size)), overlap,
                           lambda p: _np_conv(p, weight, bias))
    np.testing.assert_allclose(prob, want, atol=2e-6)
    mask = sitk.GetArrayFromImage(model.predict(_image(a)))
    clear = np.abs(want - 0.5) > 1e-4
    np.testing.assert_array_equal(mask[clear], (want >= 0.5)[clear])


def test_conv_model_with_resampling_to_model_spacing(tmp_path):
    rng = np.random.default_rng(2)
    weight, bias = rng.normal(0, 0.3, (3, 3, 3)), -1.0
    path = conv_model(tmp_path / "conv.onnx", weight, bias)
    a = _pet(rng, (12, 21, 26))
    img = _image(a, spacing=(1.5, 1.5, 3.0))
    model = OnnxSegmenter(path, spacing=(2.0, 2.0, 2.0), patch_size=(8, 8, 8), overlap=0.25)
    prob = sitk.GetArrayFromImage(model.predict_proba(img))
    grid = _resample(img, (2.0, 2.0, 2.0))
    on_model = sitk.GetArrayFromImage(_linear(img, grid))
    p_model = _np_windows(on_model, (8, 8, 8), 0.25, lambda p: _np_conv(p, weight, bias))
    p_img = sitk.GetImageFromArray(p_model.astype(np.float32))
    p_img.CopyInformation(grid)
    want = sitk.GetArrayFromImage(_linear(p_img, img))
    assert prob.shape == a.shape
    np.testing.assert_allclose(prob, want, atol=2e-6)
    mask = model.predict(img)
    assert mask.GetSize() == img.GetSize() and mask.GetSpacing() == img.GetSpacing()


def test_fixed_input_size_becomes_the_patch(tmp_path):
    rng = np.random.default_rng(3)
    weight = rng.normal(0, 0.3, (3, 3, 3))
    path = conv_model(tmp_path / "fixed.onnx", weight, 0.0, spatial=(8, 8, 8))
    model = OnnxSegmenter(path)
    assert model.patch_size == (8, 8, 8)
    a = _pet(rng, (11, 9, 13))
    want = _np_windows(a.astype(np.float32), (8, 8, 8), 0.25, lambda p: _np_conv(p, weight, 0.0))
    np.testing.assert_allclose(sitk.GetArrayFromImage(model.predict_proba(_image(a))), want, atol=2e-6)


def test_logits_output_and_zscore(tmp_path):
    # a conv model read as logits: sigmoid applied twice compared with numpy
    rng = np.random.default_rng(4)
    weight = rng.normal(0, 0.3, (3, 3, 3))
    path = conv_model(tmp_path / "c.onnx", weight, 0.2)
    a = _pet(rng, (9, 10, 11)).astype(np.float32)
    model = OnnxSegmenter(path, output="logits", normalise="zscore")
    z = (a - a.mean()) / a.std()
    want = 1 / (1 + np.exp(-_np_conv(z, weight, 0.2)))
    np.testing.assert_allclose(sitk.GetArrayFromImage(model.predict_proba(_image(a))), want, atol=2e-6)
