"""Fixtures of the ComBat-extension tests (generators in ext_data.py)."""

from __future__ import annotations

import pytest
from ext_data import make_covariance_sites, make_crossed_batches


@pytest.fixture
def covariance_sites():
    return make_covariance_sites()


@pytest.fixture
def crossed_batches():
    return make_crossed_batches()
