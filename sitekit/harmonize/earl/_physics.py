"""Analytic recovery of a uniform sphere blurred by an isotropic Gaussian (DOMAIN.md section 2)."""

from __future__ import annotations

import numpy as np
from scipy.special import erf

__all__ = ["FWHM_TO_SIGMA", "analytic_recovery", "sphere_profile", "sphere_centre_recovery"]

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


def analytic_recovery(diameter_mm, fwhm_mm, *, metric: str = "MAX", ratio: float | None = 10.0,
                      peak_diameter_mm: float = 12.4) -> float:
    """RC of a sphere in the continuous, noise-free Gaussian-blur model.

    The image of a sphere of concentration 1 in a background ``1/ratio`` is
    ``f(r) = 1/ratio + (1 - 1/ratio) P(r)`` (``P`` from :func:`sphere_profile`); RC is measured
    over true sphere concentration 1, as EARL defines it.

    Parameters
    ----------
    diameter_mm, fwhm_mm : float
    metric : {"MAX", "A50", "PEAK"}, default="MAX"
        ``MAX``: ``f(0)``; ``A50``: mean of ``f`` over the ball where ``f`` exceeds
        ``B + 0.5 (f(0) - B)``; ``PEAK``: mean of ``f`` over a centred ball of
        ``peak_diameter_mm``.
    ratio : float or None, default=10
        Sphere:background ratio; None means a cold background (the bare erf formula).
    """
    R = float(diameter_mm) / 2.0
    s = float(fwhm_mm) * FWHM_TO_SIGMA
    beta = 0.0 if ratio is None else 1.0 / float(ratio)

    def f(r):
        return beta + (1.0 - beta) * sphere_profile(r, R, s)

    def ball_mean(rho):
        r = np.linspace(0.0, rho, 4001)
        return float(3.0 / rho**3 * np.trapezoid(f(r) * r * r, r))

    metric = metric.upper()
    if metric == "MAX":
        return float(f(0.0))
    if metric == "PEAK":
        return ball_mean(peak_diameter_mm / 2.0)
    if metric == "A50":
        top = float(f(0.0))
        thr = beta + 0.5 * (top - beta)
        lo, hi = 0.0, R + 10.0 * s
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if f(mid) >= thr:
                lo = mid
            else:
                hi = mid
        return ball_mean(max(lo, 1e-6))
    raise ValueError(f"metric must be MAX, A50 or PEAK; got {metric!r}")
