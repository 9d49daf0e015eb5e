"""Fixtures of the EARL tests."""

import pytest

from ._data import REAL_DATA


@pytest.fixture
def real_data():
    """The real NEMA IQ DICOM directory shipped in tests/data (never skipped: it is in the repository)."""
    if not (REAL_DATA / "recon_1").is_dir() or not (REAL_DATA / "recon_2").is_dir():
        pytest.fail(f"The real NEMA IQ DICOM data are missing from {REAL_DATA}; they ship with the repository "
                    "(restore tests/data/nema-iq-dicom from git).")
    return REAL_DATA
