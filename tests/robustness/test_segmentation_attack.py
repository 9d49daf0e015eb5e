"""Query-only attacks against a fixed-threshold model, whose optimal L_inf attack is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from sitekit.robustness import segmentation_attack
from sitekit.robustness.models import CallableSegmenter, FixedThresholdSegmenter
from sitekit.robustness.segmentation import replay_attack

LEVEL = 2.5


def _scan(seed, n=20):
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.normal(0, 1, (n, n, n)), 1.5)
    a = a / a.std() * 0.2 + 1.0
    z, y, x = np.indices(a.shape)
    c = rng.uniform(8, 12, 3)
    a += 4.0 * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * 3.5**2))
    img = sitk.GetImageFromArray(a.astype(np.float32))
    img.SetSpacing((2.0, 2.0, 3.0))
    return img


def _optimal_dice(a, eps):
    """Flip every voxel within epsilon of the threshold: the best any L_inf attack can do."""
    clean = a >= LEVEL
    kept = (clean & (a - eps >= LEVEL)).sum()  # lesion voxels that cannot be pushed below
    added = (~clean & (a + eps >= LEVEL)).sum()  # background voxels that can be pushed above
    return 2 * kept / (kept + clean.sum() + added)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_square_attack_reaches_90_percent_of_the_optimal_drop(seed):
    img = _scan(seed)
    a = sitk.GetArrayFromImage(img).astype(np.float64)
    eps = 0.3
    best = _optimal_dice(a, eps)
    res = segmentation_attack(FixedThresholdSegmenter(LEVEL), img, target="clean", epsilon=eps,
                              max_queries=2000, method="square", random_state=seed)
    assert res.dice_clean == 1.0
    assert res.queries <= 2000
    assert res.dice_attacked >= best - 1e-12  # nothing beats the closed form
    assert (1 - res.dice_attacked) >= 0.9 * (1 - best)
    delta = sitk.GetArrayFromImage(res.perturbation)
    assert np.abs(delta).max() <= eps and res.linf <= eps
    # the attacked image really gives the reported Dice
    pred = sitk.GetArrayFromImage(img) + delta >= LEVEL
    clean = a >= LEVEL
    assert 2 * (pred & clean).sum() / (pred.sum() + clean.sum()) == pytest.approx(res.dice_attacked)
    # random +-epsilon noise at the same budget does far less
    assert (1 - res.dice_random) <= 0.6 * (1 - best)
    assert res.dice_random > res.dice_attacked + 0.05


def test_simba_reaches_the_optimum_and_replays():
    img = _scan(5)
    a = sitk.GetArrayFromImage(img).astype(np.float64)
    best = _optimal_dice(a, 0.3)
    model = FixedThresholdSegmenter(LEVEL)
    res = segmentation_attack(model, img, target="clean", epsilon=0.3, max_queries=3000, method="simba",
                              random_state=7)
    assert (1 - res.dice_attacked) >= 0.95 * (1 - best)
    again = replay_attack(model, img, None, res)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again.perturbation),
                                  sitk.GetArrayFromImage(res.perturbation))
    assert again.dice_attacked == res.dice_attacked and again.queries == res.queries


def test_square_attack_replays_from_its_seed_and_uses_only_predict():
    img = _scan(3)
    ref = sitk.Cast(sitk.GetImageFromArray((sitk.GetArrayFromImage(img) >= 3.0).astype(np.uint8)), sitk.sitkUInt8)
    ref.CopyInformation(img)
    calls = []

    def fn(arr, spacing):
        calls.append(1)
        return arr >= LEVEL

    model = CallableSegmenter(fn)  # has predict only for masks: proves query-only access
    r1 = segmentation_attack(model, img, ref, epsilon=0.2, max_queries=300, random_state=11)
    n_calls = len(calls)
    r2 = segmentation_attack(model, img, ref, epsilon=0.2, max_queries=300, random_state=r1.random_state)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(r1.perturbation), sitk.GetArrayFromImage(r2.perturbation))
    assert r1.queries == 300 and n_calls == 300 + r1.params["n_random"]
    assert r1.dice_attacked <= r1.dice_clean
    assert np.isfinite(r1.background_sd) and r1.background_sd > 0
    assert set(r1.to_dict()) >= {"dice_clean", "dice_attacked", "dice_random", "queries", "linf",
                                 "epsilon_over_background_sd"}


def test_budget_never_exceeded_for_any_epsilon():
    """Regression: epsilon=0.3 became float32 0.30000001 > 0.3; the budget now rounds down."""
    img = _scan(4)
    for eps in (0.01, 0.1, 1.0):
        res = segmentation_attack(FixedThresholdSegmenter(LEVEL), img, target="clean", epsilon=eps,
                                  max_queries=150, random_state=0)
        assert float(np.abs(sitk.GetArrayFromImage(res.perturbation)).max()) <= eps
