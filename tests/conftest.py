"""Fixtures shared by every test."""

from __future__ import annotations

import locale

import pytest


@pytest.fixture(autouse=True)
def _restore_ctype_locale():
    """Put LC_CTYPE back after each test.

    GDCM (SimpleITK's DICOM I/O) sets LC_CTYPE to "C" and leaves it there; in the same
    worker process that turns Python's default text encoding into ASCII, so a later test that
    reads a subprocess's UTF-8 output would fail for a reason of its neighbour's.  sitekit's
    own DICOM writes restore it (``sitekit.io.preserve_locale``); tests that call SimpleITK
    directly are covered here.
    """
    saved = locale.setlocale(locale.LC_CTYPE)
    yield
    if locale.setlocale(locale.LC_CTYPE) != saved:
        locale.setlocale(locale.LC_CTYPE, saved)
