"""Public names of the image-model packages; torch stays optional."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

PACKAGES = ["sitekit.robustness.models", "sitekit.robustness.segmentation", "sitekit.reports.sections.segmentation"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_documented(name):
    mod = importlib.import_module(name)
    assert mod.__doc__
    for attr in mod.__all__:
        obj = getattr(mod, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"


def test_importing_the_image_tools_does_not_import_torch():
    code = ("import sys, sitekit.robustness, sitekit.robustness.models, sitekit.robustness.segmentation; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_api_of_the_issue():
    from sitekit.robustness import evaluate_segmentation, segmentation_attack, segmentation_metrics
    from sitekit.robustness.models import CallableSegmenter, OnnxSegmenter, ThresholdSegmenter

    assert "epsilon" in inspect.signature(segmentation_attack).parameters
    for fn in (evaluate_segmentation, segmentation_metrics):
        assert fn.__module__.startswith("sitekit.robustness.segmentation")
    assert {CallableSegmenter, OnnxSegmenter, ThresholdSegmenter}
