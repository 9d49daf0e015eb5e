"""The 41 % baseline, the fixed SUV threshold and the callable adapter."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from sitekit.exceptions import ValidationError
from sitekit.robustness.models import (
    CallableSegmenter,
    FixedThresholdSegmenter,
    Segmenter,
    ThresholdSegmenter,
    bounding_region,
)


def _img(a):
    img = sitk.GetImageFromArray(a.astype(np.float32))
    img.SetSpacing((2.0, 2.0, 2.5))
    return img


def test_41_percent_is_the_connected_region_around_the_maximum():
    a = np.ones((20, 20, 20))
    a[4:8, 4:8, 4:8] = 10.0  # the hottest lesion
    a[5, 5, 5] = 12.0
    a[14:17, 14:17, 14:17] = 9.0  # a second lesion above 41 % but not connected
    mask = sitk.GetArrayFromImage(ThresholdSegmenter(0.41).predict(_img(a))).astype(bool)
    labels, _ = ndimage.label(a >= 0.41 * 12.0, structure=np.ones((3, 3, 3)))
    np.testing.assert_array_equal(mask, labels == labels[5, 5, 5])
    # inside a bounding region around the second lesion, that one is found
    box = np.zeros_like(a, np.uint8)
    box[12:19, 12:19, 12:19] = 1
    region = sitk.GetImageFromArray(box)
    region.CopyInformation(_img(a))
    m2 = sitk.GetArrayFromImage(ThresholdSegmenter(0.41).predict(_img(a), region=region)).astype(bool)
    assert m2.sum() == 27 and m2[15, 15, 15]


def test_nan_voxels_are_ignored():
    a = np.ones((8, 8, 8))
    a[3:5, 3:5, 3:5] = 5.0
    a[0, 0, 0] = np.nan
    assert int(sitk.GetArrayFromImage(ThresholdSegmenter().predict(_img(a))).sum()) == 8


def test_bounding_region_grows_by_the_margin():
    m = np.zeros((20, 20, 20), np.uint8)
    m[8:10, 8:10, 8:10] = 1
    img = _img(m)
    box = sitk.GetArrayFromImage(bounding_region(sitk.Cast(img, sitk.sitkUInt8), 4.0)).astype(bool)
    # 4 mm = 2 voxels in x, y (2 mm) and 2 voxels in z (2.5 mm, rounded up)
    assert box.sum() == 6 * 6 * 6 and box[6, 6, 6] and not box[5, 6, 6]


def test_fixed_threshold_and_callable_agree():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 1.0, (10, 11, 12))
    img = _img(a)
    fixed = sitk.GetArrayFromImage(FixedThresholdSegmenter(2.5).predict(img))
    call = CallableSegmenter(lambda arr, sp: (arr >= 2.5).astype(np.float32))
    np.testing.assert_array_equal(fixed, sitk.GetArrayFromImage(call.predict(img)))
    np.testing.assert_array_equal(fixed, a.astype(np.float32) >= 2.5)
    assert isinstance(FixedThresholdSegmenter(), Segmenter) and isinstance(call, Segmenter)
    prob = CallableSegmenter(lambda arr, sp: arr / arr.max()).predict_proba(img)
    assert prob.GetSize() == img.GetSize()


def test_callable_with_wrong_output_shape_is_named():
    with pytest.raises(ValidationError, match="returned shape"):
        CallableSegmenter(lambda arr, sp: arr[0]).predict(_img(np.ones((3, 4, 5))))
    with pytest.raises(ValidationError, match="must be > 0"):
        ThresholdSegmenter(0.0)
