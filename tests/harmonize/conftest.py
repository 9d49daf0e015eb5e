"""Fixtures of the ComBat tests (data generator in combat_data.py)."""

from __future__ import annotations

import pytest
from combat_data import make_sites_data


@pytest.fixture
def data():
    return make_sites_data()


@pytest.fixture
def data_cov():
    return make_sites_data(covariates=True, seed=1)
