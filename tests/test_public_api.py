"""Every public name is importable, documented, and listed in __all__."""

import importlib
import inspect

import pytest

PACKAGES = [
    "sitekit",
    "sitekit.io",
    "sitekit.exceptions",
    "sitekit.datasets",
    "sitekit.harmonize",
    "sitekit.harmonize.earl",
    "sitekit.features",
    "sitekit.robustness",
    "sitekit.reports",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_documented(name):
    mod = importlib.import_module(name)
    assert mod.__doc__, f"{name} has no module docstring"
    for attr in getattr(mod, "__all__", []):
        obj = getattr(mod, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"
