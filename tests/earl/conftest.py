"""Fixtures of the EARL tests."""

import pytest

from ._data import REAL_DATA


@pytest.fixture
def real_data():
    """The real NEMA IQ DICOM directory; skip with a reason when shared/ is not beside the clone."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real NEMA IQ DICOM data not found at {REAL_DATA} (shared/ is not beside the clone)")
    return REAL_DATA
