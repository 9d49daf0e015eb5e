"""The blurred-sphere formulas against numerical integration (DOMAIN.md section 2)."""

import numpy as np
import pytest
from scipy import ndimage

from sitekit.harmonize import earl
from sitekit.harmonize.earl._physics import FWHM_TO_SIGMA


@pytest.mark.parametrize("diameter, fwhm", [(10, 8.0), (17, 6.0), (37, 10.0)])
def test_profile_matches_numerical_blur(diameter, fwhm):
    # 0.5 mm grid, sphere with linear partial-volume edges, Gaussian blur: tolerance 0.01
    h = 0.5
    n = int((diameter / 2 + 2.5 * fwhm) / h)
    ax = (np.arange(-n, n + 1)) * h
    r = np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2)
    vol = np.clip(0.5 - (r - diameter / 2) / h, 0, 1)
    blurred = ndimage.gaussian_filter(vol, fwhm * FWHM_TO_SIGMA / h, mode="constant")
    m = n + int(diameter / 2 / h) + 1  # compare inside the sphere and just beyond its edge
    line = blurred[n, n, n:m]
    expect = earl.sphere_profile(ax[n:m], diameter / 2, fwhm * FWHM_TO_SIGMA)
    np.testing.assert_allclose(line, expect, atol=0.01)
    assert earl.sphere_profile(0.0, diameter / 2, fwhm * FWHM_TO_SIGMA) == pytest.approx(
        earl.sphere_centre_recovery(diameter / 2, fwhm * FWHM_TO_SIGMA))


def test_earl1_band_in_the_continuous_model():
    """EARL1 is met for effective FWHM ~7.5-9.3 mm in the noise-free Gaussian model (10:1)."""
    from sitekit.harmonize.earl._standards import load_standard

    bands = load_standard("EARL1").bands

    def ok(f):
        return all(r.lower <= earl.analytic_recovery(r.sphere_mm, f, metric=r.metric) <= r.upper
                   for r in bands.itertuples())

    assert ok(7.6) and ok(8.3) and ok(9.2)
    assert not ok(7.0) and not ok(9.8)
    assert not ok(5.0) and not ok(11.0)
