"""segmentation_metrics against independent computations: SimpleITK's overlap, contour,
Maurer distance-map and Hausdorff filters, and a hand-written 18-connected component labelling.

Spacings are dyadic (0.75, 1.25, 2.5 mm) and anisotropic: then SimpleITK's float32 squared
distances are exact, so the surface metrics can be compared to 1e-9.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from sitekit.robustness.segmentation import segmentation_metrics

SPACING = (0.75, 1.25, 2.5)  # x, y, z


def _blobs(rng, shape, n):
    z, y, x = np.indices(shape)
    m = np.zeros(shape, bool)
    for _ in range(n):
        c = [rng.uniform(4, s - 5) for s in shape]
        r = rng.uniform(1.5, 4.0, 3)
        m |= ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1
    m &= rng.random(shape) > 0.05  # ragged edges, holes
    m[:2], m[-2:], m[:, :2], m[:, -2:], m[:, :, :2], m[:, :, -2:] = False, False, False, False, False, False
    return m


def _image(a, dtype=np.uint8):
    img = sitk.GetImageFromArray(a.astype(dtype))
    img.SetSpacing(SPACING)
    img.SetOrigin((-3.0, 7.0, 1.5))
    return img


def _pair(seed):
    rng = np.random.default_rng(seed)
    shape = (18, 26, 30)
    ref = _blobs(rng, shape, 4)
    pred = ndimage.shift(ref.astype(float), rng.integers(-2, 3, 3), order=0) > 0.5
    pred = (pred | _blobs(rng, shape, 2)) & (rng.random(shape) > 0.03)
    pred[:2], pred[-2:], pred[:, :2], pred[:, -2:], pred[:, :, :2], pred[:, :, -2:] = (False,) * 6
    return pred, ref


# ------------------------------------------------------------------ independent references
def _neighbours18():
    return [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if 0 < abs(dz) + abs(dy) + abs(dx) <= 2]


def _components(mask):
    """Hand-written breadth-first labelling with 18-connectivity."""
    seen = np.zeros(mask.shape, bool)
    comps = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        queue, comp = deque([start]), []
        while queue:
            v = queue.popleft()
            comp.append(v)
            for d in _neighbours18():
                w = (v[0] + d[0], v[1] + d[1], v[2] + d[2])
                if all(0 <= w[i] < mask.shape[i] for i in range(3)) and mask[w] and not seen[w]:
                    seen[w] = True
                    queue.append(w)
        comps.append(comp)
    return comps


def _sitk_surface_distances(a, b):
    """Distances from the contour voxels of a to the contour of b with SimpleITK only."""
    ca = sitk.BinaryContour(_image(a), fullyConnected=False, backgroundValue=0, foregroundValue=1)
    cb = sitk.BinaryContour(_image(b), fullyConnected=False, backgroundValue=0, foregroundValue=1)
    sq = sitk.SignedMaurerDistanceMap(cb, insideIsPositive=False, squaredDistance=True, useImageSpacing=True)
    d2 = np.abs(sitk.GetArrayFromImage(sq).astype(np.float64))
    return np.sqrt(d2[sitk.GetArrayFromImage(ca) > 0]), ca, cb


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_independent_computations(seed):
    pred, ref = _pair(seed)
    rng = np.random.default_rng(100 + seed)
    suv = rng.gamma(2.0, 1.0, pred.shape) + 3.0 * ref
    m = segmentation_metrics(_image(pred), _image(ref), _image(suv, np.float64), tolerance_mm=2.0)

    ov = sitk.LabelOverlapMeasuresImageFilter()
    ov.Execute(_image(ref), _image(pred))
    assert m["dice"] == pytest.approx(ov.GetDiceCoefficient(), abs=1e-9)

    d_pr, cp, cr = _sitk_surface_distances(pred, ref)
    d_rp, _, _ = _sitk_surface_distances(ref, pred)
    assert m["hd95_mm"] == pytest.approx(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)), abs=1e-9)
    assert m["msd_mm"] == pytest.approx(np.concatenate([d_pr, d_rp]).mean(), abs=1e-9)
    sd = ((d_pr <= 2.0).sum() + (d_rp <= 2.0).sum()) / (d_pr.size + d_rp.size)
    assert m["surface_dice"] == pytest.approx(sd, abs=1e-9)
    hd = sitk.HausdorffDistanceImageFilter()  # float32 distance maps inside: 1e-5
    hd.Execute(cp, cr)
    assert max(d_pr.max(), d_rp.max()) == pytest.approx(hd.GetHausdorffDistance(), abs=1e-5)

    voxel_ml = np.prod(SPACING) / 1000.0
    pc, rc = _components(pred), _components(ref)
    fp = [c for c in pc if not any(ref[v] for v in c)]
    fn = [c for c in rc if not any(pred[v] for v in c)]
    assert m["fpv_ml"] == pytest.approx(sum(len(c) for c in fp) * voxel_ml, abs=1e-9)
    assert m["fnv_ml"] == pytest.approx(sum(len(c) for c in fn) * voxel_ml, abs=1e-9)
    tp = len(rc) - len(fn)
    assert (m["lesions_tp"], m["lesions_fp"], m["lesions_fn"]) == (tp, len(fp), len(fn))
    assert m["lesion_f1"] == pytest.approx(2 * tp / (2 * tp + len(fp) + len(fn)), abs=1e-12)

    shape_stats = sitk.LabelShapeStatisticsImageFilter()
    stats = sitk.LabelStatisticsImageFilter()
    for tag, mask in (("pred", pred), ("ref", ref)):
        shape_stats.Execute(_image(mask))
        assert m[f"mtv_{tag}_ml"] == pytest.approx(shape_stats.GetPhysicalSize(1) / 1000.0, abs=1e-9)
        stats.Execute(_image(suv, np.float64), _image(mask))
        assert m[f"suvmax_{tag}"] == pytest.approx(stats.GetMaximum(1), abs=1e-9)
        assert m[f"suvmean_{tag}"] == pytest.approx(stats.GetMean(1), abs=1e-9)
        assert m[f"tlg_{tag}"] == pytest.approx(stats.GetMean(1) * stats.GetCount(1) * voxel_ml, abs=1e-9)


def test_suvpeak_is_the_best_1ml_sphere_mean():
    # brute force over every candidate centre, with the sphere radius of 1 mL
    rng = np.random.default_rng(3)
    pred, ref = _pair(3)
    suv = rng.gamma(2.0, 1.0, ref.shape)
    m = segmentation_metrics(_image(pred), _image(ref), _image(suv, np.float64))
    r = (3000.0 / (4 * math.pi)) ** (1 / 3)
    z, y, x = np.indices(ref.shape)
    pz, py, px = z * SPACING[2], y * SPACING[1], x * SPACING[0]
    best = -np.inf
    for c in zip(*np.nonzero(ref)):
        inside = (pz - c[0] * SPACING[2]) ** 2 + (py - c[1] * SPACING[1]) ** 2 + (px - c[2] * SPACING[0]) ** 2 <= r * r
        best = max(best, suv[inside].mean())
    assert m["suvpeak_ref"] == pytest.approx(best, abs=1e-9)


def test_empty_reference_convention():
    empty = np.zeros((10, 10, 10), bool)
    blob = empty.copy()
    blob[3:6, 3:6, 3:6] = True
    m = segmentation_metrics(_image(blob), _image(empty))
    assert m["ref_empty"] and m["dice"] == 0.0 and m["lesion_f1"] == 0.0
    assert m["fpv_ml"] == pytest.approx(27 * np.prod(SPACING) / 1000) and m["fnv_ml"] == 0.0
    assert math.isnan(m["hd95_mm"]) and math.isnan(m["surface_dice"])
    both = segmentation_metrics(_image(empty), _image(empty))
    assert both["dice"] == 1.0 and both["lesion_f1"] == 1.0 and both["fpv_ml"] == 0.0


def test_identical_masks_are_perfect():
    pred, ref = _pair(1)
    m = segmentation_metrics(_image(ref), _image(ref))
    assert (m["dice"], m["hd95_mm"], m["msd_mm"], m["surface_dice"], m["fpv_ml"], m["fnv_ml"]) == (
        1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
