"""Fixtures of the report tests: small precomputed result folders (see report_fixtures.py)."""

import pytest
from report_fixtures import write_earl, write_extract, write_harmonize, write_stability, write_suite


@pytest.fixture
def results_dir(tmp_path):
    """A results folder as ``sitekit demo`` lays it out (small, made in ~1 s)."""
    root = tmp_path / "results"
    write_earl(root / "earl")
    write_stability(root / "stability" / "noise", perturbation="noise", seed=0)
    write_stability(root / "stability" / "resolution", perturbation="resolution", seed=1)
    write_suite(root / "suite")
    write_extract(root / "extract")
    write_harmonize(root / "harmonize")
    return root


@pytest.fixture
def small_results_dir(tmp_path):
    """EARL (site_B failing), suite and extraction only: the quick parts, with subject ids."""
    root = tmp_path / "small"
    write_earl(root / "earl")
    write_suite(root / "suite")
    write_extract(root / "extract")
    return root
