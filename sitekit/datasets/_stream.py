"""A stream of PET studies from several sites over months, with known changes.

Each study is one patient with a spherical lesion and a liver reference region, imaged
through the site's :class:`~sitekit.datasets.SiteProfile`.  The image formation is the
analytic limit of :func:`sitekit.datasets._profiles.render` (a uniform sphere blurred by
the profile's PSF, with edge overshoot for PSF reconstructions, the voxel's box blur
added to the Gaussian in quadrature), so a stream of thousands of studies takes
milliseconds while reacting to resolution, voxel size, noise and calibration the way the
rendered images do:

* ``liver_suvmean``: the patient's liver SUV (CV 10 % between patients) times the
  calibration ``1 + bias`` (plus drift);
* ``lesion_suvmax`` / ``lesion_suvmean``: the centre and the volume mean of the blurred
  sphere, with a noise bias of the maximum;
* ``mtv_ml``: the volume above 41 % of the maximum (the clinical baseline segmentation);
* texture-like features that follow noise and resolution (``glcm_contrast``,
  ``glrlm_short_run_emphasis``, ``ngtdm_coarseness``);
* ``model_score``: the output of a fixed risk model on SUVmax and MTV;
* ``seg_disagreement``: ``1 - Dice`` between a resolution-independent segmenter and the
  41 % baseline (a label-free proxy of segmentation drift).

Events: a calibration drift at one site (a step or a linear ramp to ``drift``) and a
scanner replacement at another (its profile switches to ``replacement_profile``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from sitekit._validation import check_number, check_option, check_random_state
from sitekit.datasets._profiles import FWHM_TO_SIGMA, SITE_PROFILES, SiteProfile, get_profile
from sitekit.exceptions import ValidationError

__all__ = ["make_study_stream", "STREAM_SIGNALS"]

#: The measured columns of a study stream.
STREAM_SIGNALS: tuple[str, ...] = (
    "liver_suvmean", "lesion_suvmax", "lesion_suvmean", "mtv_ml", "glcm_contrast",
    "glrlm_short_run_emphasis", "ngtdm_coarseness", "model_score", "seg_disagreement",
)

_GL_X, _GL_W = np.polynomial.legendre.leggauss(48)


def _sphere_profile(r, R, sigma):
    """Value at radius r of a unit sphere of radius R blurred by an isotropic Gaussian."""
    r = np.maximum(r, 1e-6)
    a = (R - r) / (np.sqrt(2.0) * sigma)
    b = (R + r) / (np.sqrt(2.0) * sigma)
    term = sigma / (r * np.sqrt(2.0 * np.pi)) * (np.exp(-a * a) - np.exp(-b * b))
    return 0.5 * (special.erf(a) + special.erf(b)) - term


def _psf_profile(r, R, sigma, overshoot):
    out = _sphere_profile(r, R, sigma)
    if overshoot:
        out = (1.0 + overshoot) * out - overshoot * _sphere_profile(r, R, 1.6 * sigma)
    return out


def _effective_sigma(profile: SiteProfile) -> float:
    fwhm = float(np.mean(profile.fwhm_mm))
    vox = float(np.mean(profile.voxel_mm))
    return float(np.sqrt((fwhm * FWHM_TO_SIGMA) ** 2 + vox**2 / 12.0))


def _lesion_measurements(R, sigma, overshoot, rng, noise_cov):
    n = R.size
    centre = _psf_profile(np.zeros(n), R, sigma, overshoot)
    # volume mean over the true sphere (Gauss-Legendre in r on [0, R])
    r = 0.5 * R[:, None] * (_GL_X[None, :] + 1.0)
    w = 0.5 * R[:, None] * _GL_W[None, :]
    f = _psf_profile(r, R[:, None], sigma, overshoot)
    vol_mean = (f * 4 * np.pi * r**2 * w).sum(axis=1) / (4.0 / 3.0 * np.pi * R**3)
    # 41 % radius: where the profile falls to 0.41 of its centre value
    grid = np.linspace(0.0, 1.0, 400)[None, :] * (R[:, None] + 4.0 * sigma)
    prof = _psf_profile(grid, R[:, None], sigma, overshoot)
    above = prof >= 0.41 * prof[:, :1]
    last = np.where(above.any(axis=1), above.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1), 0)
    r41 = grid[np.arange(n), last]
    # a noisy maximum is biased upwards (the largest of ~tens of correlated voxels)
    max_bias = 1.0 + noise_cov * np.abs(rng.normal(1.5, 0.5, n))
    return centre * max_bias, vol_mean, r41


def make_study_stream(
    *,
    sites=None,
    n_months: int = 24,
    studies_per_month: int = 20,
    reference_months: int = 6,
    start: str = "2025-01-01",
    drift_site: str | None = "site_C",
    drift: float = 0.05,
    drift_month: int = 12,
    drift_shape: str = "step",
    replacement_site: str | None = "site_B",
    replacement_month: int = 12,
    replacement_profile: SiteProfile | str | None = None,
    random_state=None,
    return_events: bool = False,
):
    """Studies from several PET sites over months, with a calibration drift and a scanner change.

    Parameters
    ----------
    sites : int, sequence of str or SiteProfile, default=None
        The sites: profiles or names of :data:`SITE_PROFILES` (default: the four sample
        sites), or a number of sites (the four profiles repeated with small differences in
        resolution, noise and calibration, named ``site_A``, ``site_B`` ...).
    n_months : int, default=24
        Length of the stream.
    studies_per_month : int, default=20
        Studies per site and month (their times are spread uniformly over the month).
    reference_months : int, default=6
        The first months form the reference period (``period == "reference"``).
    start : str, default="2025-01-01"
        First day of the stream.
    drift_site : str or None, default="site_C"
        Site whose calibration drifts (``None``: no drift).
    drift : float, default=0.05
        Relative calibration change (0.05 = the site reads 5 % high), multiplying every
        uptake value of the site.
    drift_month : int, default=12
        Month (0-based) in which the drift starts.
    drift_shape : {"step", "ramp"}, default="step"
        A sustained step at ``drift_month``, or a linear ramp reaching ``drift`` after
        12 months.
    replacement_site : str or None, default="site_B"
        Site whose scanner is replaced (``None``: no replacement).
    replacement_month : int, default=12
        Month (0-based) from which the new scanner is used.
    replacement_profile : SiteProfile or str, default=None
        The new scanner; default a PSF+TOF system with 2 mm voxels (``site_A``'s profile
        with a calibration of its own).
    random_state : int, Generator or None
    return_events : bool, default=False
        Also return a dict of what changed where and when.

    Returns
    -------
    stream : DataFrame
        One row per study, sorted by time: ``study_id, site, time, month, period, age,
        sex, scanner`` and the measured columns of :data:`STREAM_SIGNALS`.
    events : dict
        Only with ``return_events=True``: ``{"drift": {"site", "start", "drift", "shape"},
        "replacement": {"site", "start", "profile"}}`` (``start`` as a Timestamp).

    Examples
    --------
    >>> from sitekit.datasets import make_study_stream
    >>> df = make_study_stream(n_months=3, studies_per_month=5, reference_months=1,
    ...                        drift_month=2, replacement_month=2, random_state=0)
    >>> sorted(df["site"].unique())
    ['site_A', 'site_B', 'site_C', 'site_D']
    >>> int((df["period"] == "reference").sum())
    20
    """
    rng = check_random_state(random_state)
    check_number(n_months, name="n_months", owner="make_study_stream", low=1, integer=True)
    check_number(studies_per_month, name="studies_per_month", owner="make_study_stream", low=1,
                 integer=True)
    check_number(reference_months, name="reference_months", owner="make_study_stream", low=0,
                 high=n_months, integer=True)
    check_number(drift, name="drift", owner="make_study_stream", low=-0.5, high=0.5)
    check_option(drift_shape, ("step", "ramp"), name="drift_shape", owner="make_study_stream")
    profiles = _site_profiles(sites, rng)
    names = [p.name for p in profiles]
    for what, value in (("drift_site", drift_site), ("replacement_site", replacement_site)):
        if value is not None and value not in names:
            raise ValidationError(f"The '{what}' parameter of make_study_stream must be one of "
                                  f"the sites {names}. Got {value!r} instead.")
    new_profile = (SITE_PROFILES["site_A"].replace(calibration_bias=0.01)
                   if replacement_profile is None else get_profile(replacement_profile))
    t0 = pd.Timestamp(start)
    frames = []
    for p in profiles:
        n = n_months * studies_per_month
        month = np.repeat(np.arange(n_months), studies_per_month)
        day = rng.uniform(0.0, 1.0, n)
        time = pd.DatetimeIndex([t0 + pd.DateOffset(months=int(m)) for m in month])
        time = time + pd.to_timedelta(day * 28.0, unit="D")
        replaced = (p.name == replacement_site) & (month >= replacement_month)
        cal = np.where(replaced, 1.0 + new_profile.calibration_bias, 1.0 + p.calibration_bias)
        if p.name == drift_site:
            if drift_shape == "step":
                cal = cal * (1.0 + drift * (month >= drift_month))
            else:
                frac = np.clip((month - drift_month + day) / 12.0, 0.0, 1.0)
                cal = cal * (1.0 + drift * frac)
        sig_old, sig_new = _effective_sigma(p), _effective_sigma(new_profile)
        sigma = np.where(replaced, sig_new, sig_old)
        over = np.where(replaced, new_profile.overshoot, p.overshoot)
        noise = np.where(replaced, new_profile.noise_cov, p.noise_cov)
        vox = np.where(replaced, np.mean(new_profile.voxel_mm), np.mean(p.voxel_mm))
        age = np.clip(rng.normal(63.0, 10.0, n), 25, 90).round(1)
        sex = np.where(rng.random(n) < 0.5, "F", "M")
        liver_true = 2.0 * np.exp(rng.normal(0.0, 0.1, n) - 0.005)
        R = np.exp(rng.normal(np.log(9.0), 0.35, n))  # lesion radius, mm
        uptake = liver_true * np.exp(rng.normal(np.log(4.0), 0.35, n))  # lesion SUV
        suvmax, suvmean, r41 = np.zeros(n), np.zeros(n), np.zeros(n)
        for key in np.unique(sigma):
            rows = sigma == key
            a, b, c = _lesion_measurements(R[rows], key, float(over[rows][0]), rng,
                                           float(noise[rows][0]))
            suvmax[rows], suvmean[rows], r41[rows] = a, b, c
        contrast_bg = liver_true * 0.6  # the blur mixes the lesion with ~0.6 x liver background
        lesion_max = cal * (uptake * suvmax + contrast_bg * (1.0 - np.minimum(suvmax, 1.0)))
        lesion_mean = cal * (uptake * suvmean + contrast_bg * (1.0 - np.minimum(suvmean, 1.0)))
        mtv = 4.0 / 3.0 * np.pi * r41**3 / 1000.0
        hetero = np.exp(rng.normal(0.0, 0.25, n))
        contrast = (noise**2 * 400.0 * (2.0 / vox) + 0.5) * hetero
        sre = 1.0 - 0.12 * vox / (sigma * 2.3548) * np.exp(rng.normal(0.0, 0.05, n))
        coarse = 0.002 * (sigma * 2.3548) ** 1.5 * np.exp(rng.normal(0.0, 0.2, n))
        logit = 1.2 * np.log(lesion_max / 8.0) + 0.6 * np.log(mtv / 3.0) + rng.normal(0, 0.3, n)
        score = 1.0 / (1.0 + np.exp(-logit))
        r_model = R * np.exp(rng.normal(0.0, 0.04, n))  # a resolution-independent segmenter
        dice = 2.0 * np.minimum(r_model, r41) ** 3 / (r_model**3 + r41**3)
        frames.append(pd.DataFrame({
            "site": p.name, "time": time, "month": month,
            "period": np.where(month < reference_months, "reference", "monitoring"),
            "age": age, "sex": pd.Categorical(sex, categories=["F", "M"]),
            "scanner": np.where(replaced, new_profile.name + " (new)", p.name),
            "liver_suvmean": cal * liver_true * np.exp(rng.normal(0.0, noise / 10.0, n)),
            "lesion_suvmax": lesion_max, "lesion_suvmean": lesion_mean, "mtv_ml": mtv,
            "glcm_contrast": contrast, "glrlm_short_run_emphasis": sre,
            "ngtdm_coarseness": coarse, "model_score": score, "seg_disagreement": 1.0 - dice,
        }))
    df = pd.concat(frames, ignore_index=True).sort_values(["time", "site"], kind="stable")
    df = df.reset_index(drop=True)
    df.insert(0, "study_id", [f"ST{i:06d}" for i in range(len(df))])
    if not return_events:
        return df
    events = {
        "drift": None if drift_site is None else {
            "site": drift_site, "start": t0 + pd.DateOffset(months=drift_month),
            "drift": drift, "shape": drift_shape},
        "replacement": None if replacement_site is None else {
            "site": replacement_site, "start": t0 + pd.DateOffset(months=replacement_month),
            "profile": new_profile.to_dict()},
    }
    return df, events


def _site_profiles(sites, rng) -> list[SiteProfile]:
    base = list(SITE_PROFILES.values())
    if sites is None:
        return base
    if isinstance(sites, int | np.integer) and not isinstance(sites, bool):
        check_number(int(sites), name="sites", owner="make_study_stream", low=1, high=26,
                     integer=True)
        out = []
        for i in range(int(sites)):
            p = base[i % len(base)]
            if i >= len(base):
                f = float(rng.uniform(0.9, 1.1))
                p = p.replace(fwhm_mm=tuple(v * f for v in p.fwhm_mm),
                              noise_cov=p.noise_cov * float(rng.uniform(0.9, 1.1)),
                              calibration_bias=float(rng.uniform(-0.04, 0.04)))
            out.append(p.replace(name=f"site_{chr(ord('A') + i)}"))
        return out
    out = [get_profile(s) for s in sites]
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ValidationError(f"make_study_stream: site names must be unique. Got {names}.")
    return out
