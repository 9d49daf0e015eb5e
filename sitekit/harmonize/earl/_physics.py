"""Analytic recovery of a uniform sphere blurred by an isotropic Gaussian (DOMAIN.md section 2)."""

from __future__ import annotations

import numpy as np
from scipy.special import erf

__all__ = ["FWHM_TO_SIGMA", "sphere_profile", "sphere_centre_recovery"]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
_SQRT2 = np.sqrt(2.0)


def sphere_centre_recovery(radius_mm, sigma_mm):
    """Centre value of a unit sphere of radius R blurred by a Gaussian of sigma s.

    ``erf(R/(sqrt2 s)) - sqrt(2/pi) (R/s) exp(-R^2/(2 s^2))``: the continuous, noise-free RCmax.
    """
    r = np.asarray(radius_mm, float)
    s = np.asarray(sigma_mm, float)
    u = r / s
    return erf(u / _SQRT2) - np.sqrt(2.0 / np.pi) * u * np.exp(-0.5 * u * u)


def sphere_profile(r, radius_mm, sigma_mm):
    """Value at distance ``r`` from the centre of a unit sphere blurred by a Gaussian.

    ``0.5 [erf((R-r)/(sqrt2 s)) + erf((R+r)/(sqrt2 s))]
    - s/(r sqrt(2 pi)) [exp(-(R-r)^2/(2s^2)) - exp(-(R+r)^2/(2s^2))]``, with the centre value
    at ``r = 0``.
    """
    r = np.abs(np.asarray(r, float))
    R = float(radius_mm)
    s = float(sigma_mm)
    small = r < 1e-6 * max(s, 1e-12)
    rr = np.where(small, 1.0, r)
    a = (R - rr) / (_SQRT2 * s)
    b = (R + rr) / (_SQRT2 * s)
    val = 0.5 * (erf(a) + erf(b)) - s / (rr * np.sqrt(2.0 * np.pi)) * (np.exp(-a * a) - np.exp(-b * b))
    if np.any(small):
        val = np.where(small, sphere_centre_recovery(R, s), val)
    return val
