"""The optional torch adapter and white-box PGD.

torch is an optional extra (``sitekit[torch]``), never needed by ``make test``: without it this
test checks the clear ImportError; with it (``pip install sitekit[torch]``) it checks the
adapter against numpy and PGD against the closed-form optimal attack of a threshold model.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from sitekit.robustness.models import TorchSegmenter
from sitekit.robustness.segmentation import pgd_attack

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _scan():
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.normal(0, 1, (20, 20, 20)), 1.5)
    a = a / a.std() * 0.2 + 1.0
    z, y, x = np.indices(a.shape)
    a += 4 * np.exp(-((z - 10) ** 2 + (y - 9) ** 2 + (x - 10) ** 2) / (2 * 3.5**2))
    return a


def test_torch_adapter_or_its_install_hint():
    if not HAS_TORCH:
        with pytest.raises(ImportError, match=r"sitekit\[torch\]"):
            TorchSegmenter(object())
        return
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1)
    model = TorchSegmenter(torch.nn.Sequential(conv, torch.nn.Sigmoid()))
    a = np.random.default_rng(1).normal(2, 1, (8, 9, 10)).astype(np.float32)
    p = sitk.GetArrayFromImage(model.predict_proba(sitk.GetImageFromArray(a)))
    w, b = conv.weight.detach().numpy()[0, 0].astype(float), float(conv.bias.detach()[0])
    want = 1 / (1 + np.exp(-(ndimage.correlate(a.astype(float), w, mode="constant") + b)))
    np.testing.assert_allclose(p, want, atol=1e-5)


def test_pgd_reaches_the_optimal_attack_of_a_steep_threshold():
    if not HAS_TORCH:
        with pytest.raises(ImportError, match=r"sitekit\[torch\]"):
            pgd_attack(None, sitk.GetImageFromArray(_scan().astype(np.float32)), epsilon=0.3, target="clean")
        return
    import torch

    class Steep(torch.nn.Module):
        def forward(self, x):
            return torch.sigmoid(20 * (x - 2.5))

    a = _scan()
    res = pgd_attack(TorchSegmenter(Steep()), sitk.GetImageFromArray(a.astype(np.float32)), target="clean",
                     epsilon=0.3, n_steps=20, random_state=0)
    clean = a >= 2.5
    kept, added = (clean & (a - 0.3 >= 2.5)).sum(), (~clean & (a + 0.3 >= 2.5)).sum()
    assert res.dice_attacked == pytest.approx(2 * kept / (kept + clean.sum() + added), abs=0.01)
    assert res.linf <= 0.3 and res.dice_random > res.dice_attacked
