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


# the scale-out tests (Dask engine, federated ComBat): their cohort fixture
from scale_data import cohort  # noqa: E402,F401
