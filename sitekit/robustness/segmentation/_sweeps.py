"""Physical PET perturbation sweeps: one perturbation family at increasing severities."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sitekit._validation import check_number
from sitekit.exceptions import ValidationError
from sitekit.robustness.perturbations import (
    Compose,
    CountNoise,
    GaussianBlur,
    IntensityScale,
    Perturbation,
    Resample,
    Translate,
)

__all__ = [
    "Sweep",
    "blur_sweep",
    "calibration_sweep",
    "noise_sweep",
    "resample_sweep",
    "shift_sweep",
    "site_sweep",
    "default_sweeps",
]


@dataclass(frozen=True)
class Sweep:
    """A perturbation family at a list of severities.

    Parameters
    ----------
    name : str
        Name in the ``perturbation`` column of the results.
    severities : tuple of float
        Severities in the family's unit (``unit``).
    build : callable
        ``build(severity, case) -> Perturbation or None`` where ``case`` is the manifest row
        as a dict (``site`` etc.); None = leave the image as it is.
    unit : str
        Unit of the severity, for plots.
    """

    name: str
    severities: tuple
    build: Callable[[float, Mapping], Perturbation | None]
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValidationError(f"A Sweep needs a non-empty name. Got {self.name!r}.")
        sev = tuple(float(check_number(s, name="severities", owner=f"Sweep '{self.name}'"))
                    for s in self.severities)
        if not sev:
            raise ValidationError(f"Sweep '{self.name}' needs at least one severity.")
        object.__setattr__(self, "severities", sev)


def blur_sweep(fwhm_mm: Sequence[float] = (0.0, 2.0, 4.0, 6.0, 8.0)) -> Sweep:
    """Reconstruction resolution: an extra isotropic Gaussian of these FWHMs (mm).

    0-8 mm spans the difference between EARL2-like and EARL1-like reconstructions.

    Parameters
    ----------
    fwhm_mm : sequence of float, default=(0, 2, 4, 6, 8)

    Returns
    -------
    Sweep
    """
    return Sweep("blur", tuple(fwhm_mm), lambda s, case: GaussianBlur(fwhm_mm=s) if s > 0 else None, "mm FWHM")


def calibration_sweep(percent: Sequence[float] = (-10.0, -5.0, 0.0, 5.0, 10.0)) -> Sweep:
    """SUV calibration error in percent (EARL's tolerance is +-10 %).

    Parameters
    ----------
    percent : sequence of float, default=(-10, -5, 0, 5, 10)

    Returns
    -------
    Sweep
    """
    return Sweep("calibration", tuple(percent),
                 lambda s, case: IntensityScale(error_percent=s) if s != 0 else None, "%")


def noise_sweep(cov: Sequence[float] = (0.0, 0.05, 0.10, 0.20), *, random_state: int = 0) -> Sweep:
    """Count-like (Poisson) noise adding this coefficient of variation at the lesion's mean.

    Parameters
    ----------
    cov : sequence of float, default=(0, 0.05, 0.1, 0.2)
    random_state : int, default=0
        Seed of the noise realisations (the same for every case and severity, so curves are
        smooth in the severity).

    Returns
    -------
    Sweep
    """
    check_number(random_state, name="random_state", owner="noise_sweep", integer=True, low=0)
    return Sweep("noise", tuple(cov),
                 lambda s, case: CountNoise(cov=s, random_state=int(random_state)) if s > 0 else None, "COV")


def resample_sweep(spacing_mm: Sequence[float] = (2.0, 3.0, 4.0, 5.0)) -> Sweep:
    """Resampling to other isotropic voxel sizes (mm), linear; the reference mask follows.

    Parameters
    ----------
    spacing_mm : sequence of float, default=(2, 3, 4, 5)

    Returns
    -------
    Sweep
    """
    return Sweep("resample", tuple(spacing_mm), lambda s, case: Resample(spacing_mm=s), "mm voxel")


def shift_sweep(offset_mm: Sequence[float] = (0.0, 1.0, 2.0, 4.0), *, axis: str = "x") -> Sweep:
    """Small rigid shifts (mm) of image and reference along one axis.

    Shifts that move the lesion out of the field of view leave an empty reference; such a
    case is reported in the errors table (stage ``"perturbation"``), not scored.

    Parameters
    ----------
    offset_mm : sequence of float, default=(0, 1, 2, 4)
    axis : {"x", "y", "z"}, default="x"

    Returns
    -------
    Sweep
    """
    if axis not in ("x", "y", "z"):
        raise ValidationError(f"The 'axis' parameter of shift_sweep must be 'x', 'y' or 'z'. Got {axis!r}.")
    k = "xyz".index(axis)

    def build(s, case):
        if s == 0:
            return None
        off = [0.0, 0.0, 0.0]
        off[k] = s
        return Translate(offset_mm=off)

    return Sweep(f"shift_{axis}", tuple(offset_mm), build, "mm")


def site_sweep(
    target: str,
    *,
    fwhm_mm: Mapping[str, Sequence[float] | float],
    voxel_mm: Mapping[str, Sequence[float] | float] | None = None,
) -> Sweep:
    """Make a scan look like site X: blur to site X's resolution (and resample to its voxels).

    The extra Gaussian per axis is ``sqrt(max(0, FWHM_target**2 - FWHM_source**2))`` (Gaussian
    resolutions add in quadrature), with each site's effective resolution, e.g. the EARL
    harmonising-filter result or the phantom-measured FWHM.  A scan sharper than the target is
    blurred; one already smoother is left as it is (sharpening is not attempted).  With
    ``voxel_mm`` the scan is also resampled to the target's voxel size.  The severity is the
    largest extra FWHM (mm); the perturbation is named ``"as_<target>"``.

    Parameters
    ----------
    target : str
        Site to imitate.
    fwhm_mm : mapping site -> float or (x, y, z)
        Effective resolution of every site (the cases' sites and the target).
    voxel_mm : mapping site -> float or (x, y, z), optional

    Returns
    -------
    Sweep
        One severity (the sweep is a single transformation per case); the severity column
        holds the extra FWHM of each case.
    """
    def vec(v):
        v = np.broadcast_to(np.asarray(v, float), (3,))
        return v

    if target not in fwhm_mm:
        raise ValidationError(f"site_sweep: no resolution for the target site '{target}' in 'fwhm_mm' "
                              f"(known: {', '.join(map(str, fwhm_mm))}).")
    goal = vec(fwhm_mm[target])

    def extra(case) -> np.ndarray:
        site = str(case["site"])
        if site not in fwhm_mm:
            raise ValidationError(f"site_sweep: no resolution for site '{site}' in 'fwhm_mm'; add it "
                                  "(e.g. from the site's EARL phantom measurement).")
        own = vec(fwhm_mm[site])
        return np.sqrt(np.clip(goal**2 - own**2, 0.0, None))

    def build(s, case):
        steps: list[Perturbation] = []
        add = extra(case)
        if add.max() > 0:
            steps.append(GaussianBlur(fwhm_mm=add.tolist()))
        if voxel_mm is not None and target in voxel_mm:
            steps.append(Resample(spacing_mm=vec(voxel_mm[target]).tolist()))
        if not steps:
            return None
        return steps[0] if len(steps) == 1 else Compose(steps)

    sweep = _SiteSweep(f"as_{target}", (0.0,), build, "mm FWHM added")
    object.__setattr__(sweep, "_extra", extra)
    return sweep


class _SiteSweep(Sweep):
    """A site sweep: its severity is the case's added FWHM, not a fixed list."""

    def severity_for(self, case: Mapping) -> float:
        return float(self._extra(case).max())


def default_sweeps() -> list[Sweep]:
    """The standard PET sweeps: blur, calibration, count noise, voxel size, shift.

    Returns
    -------
    list of Sweep
    """
    return [blur_sweep(), calibration_sweep(), noise_sweep(), resample_sweep(), shift_sweep()]
