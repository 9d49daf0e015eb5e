"""Harmonising post-filter: sweep a Gaussian FWHM on the site's own grid and noise."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from sitekit._json import to_jsonable
from sitekit._validation import check_number
from sitekit._version import __version__
from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError
from sitekit.harmonize.earl._check import resolve_standards
from sitekit.harmonize.earl._fill import FillDescription
from sitekit.harmonize.earl._filter import (
    CALIBRATION_FORMAT,
    CALIBRATION_VERSION,
    MAX_FWHM_MM,
    gaussian_filter_array,
)
from sitekit.harmonize.earl._image import VoxelGrid, read_phantom
from sitekit.harmonize.earl._measure import _peak_kernels, measure_phantom, sphere_metrics
from sitekit.harmonize.earl.geometry import (
    PEAK_SPHERE_DIAMETER_MM,
    RING_RADIUS_MM,
    SPHERE_DIAMETERS_MM,
)

__all__ = ["CalibrationResult", "calibrate", "calibration_json", "calibration_qc"]

DEFAULT_FWHM_GRID = tuple(np.round(np.arange(0.0, 14.01, 0.5), 2))


@dataclass
class CalibrationResult:
    """Result of :func:`calibrate`.

    Attributes
    ----------
    site, standard : str
    smallest_fwhm : float or None
        Smallest post-filter FWHM (mm) with every verified RC in band; None when unreachable.
    centre_fwhm : float or None
        Compliant FWHM that best centres the RCs in their bands (least squares in half-band
        units); None when unreachable.
    chosen_fwhm : float or None
        The filter to apply (``centre_fwhm``).
    best_fwhm : float
        Unconstrained least-squares minimiser, reported even when no filter complies.
    reachable : bool
    note : str
        Plain-language summary, naming what cannot be reached.
    curves : pandas.DataFrame
        ``site, standard, fwhm_mm, sphere_mm, metric, rc, lower, upper, in_band, verified``.
    """

    site: str
    standard: str
    smallest_fwhm: float | None
    centre_fwhm: float | None
    best_fwhm: float
    reachable: bool
    note: str
    curves: pd.DataFrame
    info: dict = field(default_factory=dict)

    @property
    def chosen_fwhm(self) -> float | None:
        """The filter to apply: the band-centre FWHM."""
        return self.centre_fwhm

    def to_dict(self) -> dict:
        """JSON-ready summary (the per-site entry of ``calibration.json``)."""
        def r(v):
            return None if v is None else round(float(v), 3)

        return {"smallest_fwhm_mm": r(self.smallest_fwhm), "centre_fwhm_mm": r(self.centre_fwhm),
                "chosen_fwhm_mm": r(self.chosen_fwhm), "chosen": "centre", "best_fwhm_mm": r(self.best_fwhm),
                "reachable": self.reachable, "note": self.note, "standard": self.standard, **self.info}


def calibrate(image: sitk.Image, *, standard="EARL1", sphere_conc=None, background_conc=None, fill=None,
              centres=None, fwhm_grid=None, a50_background: str = "measured", site: str | None = None,
              progress=None) -> CalibrationResult:
    """Find the Gaussian post-filter that brings a site's phantom RCs into a standard's bands.

    The spheres are located once on the unfiltered scan; the scan (around the spheres) is then
    filtered with each FWHM of ``fwhm_grid`` on its own grid, with its own noise, and RCmax,
    RCmean (A50) and RCpeak are measured.  RC curves are interpolated linearly between grid
    points (0.05 mm steps) to find the smallest compliant FWHM and the band-centre FWHM.

    Parameters
    ----------
    image : SimpleITK.Image or path
        The site's phantom scan.
    standard : {"EARL1", "EARL2"}, default="EARL1"
    sphere_conc, background_conc, fill, centres, a50_background
        As for :func:`measure`.
    fwhm_grid : sequence of float, optional
        Filter FWHMs (mm) to try; default 0 to 14 mm in 0.5 mm steps.
    site : str, optional
    progress : callable, optional
        Called with no argument after each FWHM (the CLI's progress bar).

    Returns
    -------
    CalibrationResult
        ``smallest_fwhm`` and ``centre_fwhm`` are None, and ``note`` says why, when no
        Gaussian filter meets the standard (e.g. EARL2 RCmax on a Gaussian-like reconstruction,
        or a scan that is already smoother than the standard allows).
    """
    stds = resolve_standards(standard)
    if len(stds) != 1:
        raise ValidationError("calibrate takes one standard ('EARL1' or 'EARL2'), not 'all'.")
    std = stds[0]
    grid_f = np.asarray(DEFAULT_FWHM_GRID if fwhm_grid is None else fwhm_grid, float)
    if grid_f.ndim != 1 or grid_f.size < 2 or np.any(~np.isfinite(grid_f)) or np.any(grid_f < 0) \
            or np.any(np.diff(grid_f) <= 0):
        raise ValidationError("fwhm_grid must be at least two increasing FWHM values >= 0 (mm).")
    if grid_f.max() > MAX_FWHM_MM or grid_f.size > 1000:
        raise ValidationError(
            f"fwhm_grid goes up to {grid_f.max():g} mm in {grid_f.size} steps; the sweep accepts FWHMs up to "
            f"{MAX_FWHM_MM:g} mm and at most 1000 steps (harmonising filters are 0-15 mm).")
    if not isinstance(image, sitk.Image):
        image = read_phantom(image)
    base = measure_phantom(image, sphere_conc=sphere_conc, background_conc=background_conc, fill=fill,
                           centres=centres, a50_background=a50_background, site=site)
    info = base.info
    s_conc = float(info["sphere_conc"])
    b_a50 = float(info["background_measured"]) if a50_background == "measured" else float(info["background_conc"])
    loc = base.localization
    site_name = info["site"]

    grid = VoxelGrid(image)
    arr = np.nan_to_num(sitk.GetArrayViewFromImage(image).astype(np.float64), nan=0.0)  # NaN: outside the phantom
    # crop around the ring, with room for the widest filter
    sigma_max = float(grid_f.max()) / 2.3548
    half = RING_RADIUS_MM + max(SPHERE_DIAMETERS_MM) / 2 + PEAK_SPHERE_DIAMETER_MM + 4 * sigma_max + \
        3 * float(np.max(grid.spacing)) + 12.0
    widths = np.full(3, half)
    axis = int(np.argmax(np.abs(loc.axes[2])))  # thin along the phantom axis (tilt margin included)
    widths[axis] = max(SPHERE_DIAMETERS_MM) / 2 + PEAK_SPHERE_DIAMETER_MM + 4 * sigma_max + \
        3 * float(np.max(grid.spacing)) + 8.0 + 0.15 * RING_RADIUS_MM
    box = grid.box(loc.ring_centre, widths)
    sub = np.ascontiguousarray(arr[box])
    sub_img = sitk.GetImageFromArray(sub)
    sub_img.SetSpacing(tuple(grid.spacing))
    sub_img.SetDirection(tuple(grid.direction.ravel()))
    start = np.array([box[2].start, box[1].start, box[0].start], float)
    sub_img.SetOrigin(tuple(grid.to_physical(start)))
    sub_grid = VoxelGrid(sub_img)
    kernels = _peak_kernels(grid.spacing, PEAK_SPHERE_DIAMETER_MM / 2.0)

    rows = []
    for f in grid_f:
        filt = gaussian_filter_array(sub, grid.spacing, f)
        for k, d in enumerate(SPHERE_DIAMETERS_MM):
            m = sphere_metrics(filt, sub_grid, loc.centres[k], d, a50_background=b_a50, kernels=kernels)
            vals = {"A50": m["a50_mean"] / s_conc, "MAX": m["max"] / s_conc, "PEAK": m["peak"] / s_conc}
            for metric in std.metrics:
                b = std.bands[(std.bands["metric"] == metric) & (std.bands["sphere_mm"] == d)]
                if b.empty:
                    continue
                lo, hi = float(b["lower"].iloc[0]), float(b["upper"].iloc[0])
                rows.append({"site": site_name, "standard": std.name, "fwhm_mm": float(f), "sphere_mm": d,
                             "metric": metric, "rc": vals[metric], "lower": lo, "upper": hi,
                             "in_band": bool(lo <= vals[metric] <= hi), "verified": bool(b["verified"].iloc[0])})
        if progress is not None:
            progress()
    curves = pd.DataFrame(rows)
    smallest, centre, best, note = _solve(curves, grid_f)
    eff = info.get("localization")
    result = CalibrationResult(site=site_name, standard=std.name, smallest_fwhm=smallest, centre_fwhm=centre,
                               best_fwhm=best, reachable=smallest is not None, note=note, curves=curves,
                               info={"conc_source": info["conc_source"], "sphere_conc": s_conc,
                                     "localization": eff,
                                     "fitted_fwhm_37mm": float(base.spheres["fwhm_mm"].iloc[-1]),
                                     "standard_version": std.version})
    return result


def _solve(curves: pd.DataFrame, grid_f: np.ndarray):
    fine = np.round(np.arange(grid_f[0], grid_f[-1] + 1e-9, 0.05), 3)
    ver = curves[curves["verified"]]
    all_in = np.ones(fine.size, bool)
    cost = np.zeros(fine.size)
    worst = {}
    for (d, metric), g in ver.groupby(["sphere_mm", "metric"]):
        g = g.sort_values("fwhm_mm")
        rc = np.interp(fine, g["fwhm_mm"].to_numpy(), g["rc"].to_numpy())
        lo, hi = float(g["lower"].iloc[0]), float(g["upper"].iloc[0])
        inside = (rc >= lo) & (rc <= hi)
        all_in &= inside
        cost += ((rc - 0.5 * (lo + hi)) / (0.5 * (hi - lo))) ** 2
        if not inside.any():
            side = "above" if np.all(rc > hi) else "below" if np.all(rc < lo) else "outside"
            worst[(d, metric)] = (side, float(rc.min()), float(rc.max()), lo, hi)
    best = float(fine[int(np.argmin(cost))])
    if all_in.any():
        smallest = float(fine[np.argmax(all_in)])
        centre = float(fine[all_in][int(np.argmin(cost[all_in]))])
        lo_f, hi_f = smallest, float(fine[all_in].max())
        note = (f"Compliant for Gaussian post-filters of {lo_f:.2f}-{hi_f:.2f} mm FWHM on this grid; "
                f"{centre:.2f} mm puts the RCs nearest the middle of their bands (least squares in half-band "
                "units; this is the filter chosen).")
        if not all_in[np.argmax(all_in):np.flatnonzero(all_in)[-1] + 1].all():
            note += " (The compliant range has gaps; check the curves.)"
        return smallest, centre, best, note
    if worst:
        parts = [f"the {d:g} mm sphere's RC {m} stays {side} its band [{lo:.2f}, {hi:.2f}] "
                 f"(RC {a:.2f}-{b:.2f} over the sweep)"
                 for (d, m), (side, a, b, lo, hi) in sorted(worst.items())]
        reason = "; ".join(parts)
    else:
        reason = "no single filter puts every RC in its band at once"
    hint = ""
    if any(side == "below" and m == "MAX" for (_, m), (side, *_rest) in worst.items()):
        hint = (" A Gaussian filter only lowers RCs: limits such as EARL2's RCmax >= 1 assume PSF/ToF "
                "reconstructions with edge overshoot; change the reconstruction instead.")
    elif any(side == "below" for (side, *_rest) in worst.values()):
        hint = " The scan is already smoother than the standard allows; a post-filter cannot sharpen it."
    return None, None, best, (f"Unreachable: no Gaussian post-filter of {grid_f[0]:g}-{grid_f[-1]:g} mm "
                              f"meets {curves['standard'].iloc[0]}: {reason}.{hint}")


def calibration_json(results: list[CalibrationResult]) -> dict:
    """The ``calibration.json`` document for one or more sites (see :func:`read_calibration`)."""
    if not results:
        raise ValidationError("No calibration results to write.")
    stds = {r.standard for r in results}
    if len(stds) != 1:
        raise ValidationError(f"All calibrations in one file must use one standard; got {sorted(stds)}.")
    names = [r.site for r in results]
    if len(set(names)) != len(names):
        raise ValidationError(f"Site names must be unique in one calibration; got {names}.")
    return {"format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION, "standard": results[0].standard,
            "standard_version": results[0].info.get("standard_version"), "sitekit_version": __version__,
            "sites": {r.site: to_jsonable(r.to_dict()) for r in results}}




# ----------------------------------------------------------------------------- calibration QC
def _cylinder_conc(fill) -> float:
    if isinstance(fill, str | Path):
        p = Path(fill)
        if not p.exists():
            raise MissingFileError(f"Fill file '{p}' does not exist.")
        try:
            fill = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"Fill file '{p}' is not valid JSON: {exc}") from exc
    if not isinstance(fill, dict) or "cylinder" not in fill:
        raise ValidationError("A cylinder fill needs a 'cylinder' section: {\"scan_start\": ..., \"cylinder\": "
                              "{\"activity_mbq\": ..., \"volume_ml\": ..., \"measured_at\": ...}}.")
    # reuse the compartment parser: the cylinder plays the role of the background
    d = {"scan_start": fill.get("scan_start"), "isotope": fill.get("isotope", "F-18"),
         "half_life_s": fill.get("half_life_s"), "stated_ratio": None, "sphere": fill["cylinder"],
         "background": fill["cylinder"]}
    return FillDescription.from_dict(d, source="cylinder fill", check_ratio=False).background_conc


def calibration_qc(image: sitk.Image, *, expected_conc: float | None = None, fill=None,
                   tolerance: float = 0.10, edge_mm: float = 15.0) -> pd.DataFrame:
    """Check a uniform cylinder scan against its expected activity concentration.

    Parameters
    ----------
    image : SimpleITK.Image
        Scan of a uniform cylinder (Bq/mL).
    expected_conc : float, optional
        True concentration at scan start (image units).
    fill : dict or path, optional
        ``{"scan_start": ISO time, "cylinder": {"activity_mbq", "volume_ml", "measured_at",
        "residual_mbq"?}}``: the expected concentration decay-corrected to scan start.
    tolerance : float, default=0.10
        Allowed relative deviation (EARL: +-10 %).
    edge_mm : float, default=15
        Distance kept from the cylinder's walls and ends.

    Returns
    -------
    pandas.DataFrame
        One row: ``measured, expected, ratio, deviation_pct, passed, cov_pct,
        axial_max_deviation_pct, n_voxels, tolerance_pct``.
    """
    if (expected_conc is None) == (fill is None):
        raise ValidationError("calibration_qc needs exactly one of expected_conc or fill.")
    expected = float(check_number(expected_conc, name="expected_conc", low=0, low_inclusive=False)) \
        if expected_conc is not None else _cylinder_conc(fill)
    check_number(tolerance, name="tolerance", low=0, low_inclusive=False, high=1)
    arr = sitk.GetArrayViewFromImage(image).astype(np.float64)
    grid = VoxelGrid(image)
    sm = ndimage.gaussian_filter(arr, 1.0)
    hi = np.percentile(sm, 99)
    level = np.median(sm[sm > 0.1 * hi]) if np.any(sm > 0.1 * hi) else np.nan
    if not np.isfinite(level) or level <= 0:
        raise ValidationError("No uniform cylinder found in the image (no positive activity).")
    mask = sm > 0.5 * level
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    dist = ndimage.distance_transform_edt(mask, sampling=grid.spacing[::-1])
    roi = dist >= edge_mm
    if roi.sum() < 10:
        raise ValidationError(f"The cylinder is too small for a {edge_mm:g} mm margin; lower edge_mm.")
    v = arr[roi]
    measured = float(v.mean())
    slices = [arr[k][roi[k]].mean() for k in range(arr.shape[0]) if roi[k].any()]
    ratio = measured / expected
    return pd.DataFrame([{
        "measured": measured, "expected": expected, "ratio": ratio, "deviation_pct": 100 * (ratio - 1),
        "passed": bool(abs(ratio - 1) <= tolerance), "cov_pct": float(100 * v.std(ddof=1) / measured),
        "axial_max_deviation_pct": float(100 * np.max(np.abs(np.asarray(slices) / measured - 1))),
        "n_voxels": int(roi.sum()), "tolerance_pct": 100 * tolerance,
    }])
