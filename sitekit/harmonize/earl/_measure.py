"""Recovery coefficients of the six spheres and the NEMA-style background variability."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage, signal

from sitekit._validation import check_number, check_option
from sitekit.exceptions import CorruptFileError, DataWarning, MissingFileError, ValidationError
from sitekit.harmonize.earl._background import (
    background_cov,
    measure_background,
    place_background_rois,
    roi_table,
)
from sitekit.harmonize.earl._fill import FillDescription, read_fill
from sitekit.harmonize.earl._image import VoxelGrid, read_phantom
from sitekit.harmonize.earl._localize import Localization, _make_exclude, fit_sphere, locate_spheres
from sitekit.harmonize.earl.geometry import PEAK_SPHERE_DIAMETER_MM, SPHERE_DIAMETERS_MM, body_sdf

__all__ = ["PhantomMeasurement", "measure", "measure_phantom", "resolve_concentrations",
           "read_centres", "sphere_metrics"]

_RADII = np.asarray(SPHERE_DIAMETERS_MM) / 2.0


@dataclass
class PhantomMeasurement:
    """Everything :func:`measure_phantom` found.

    Attributes
    ----------
    spheres : pandas.DataFrame
        One row per sphere (see :func:`measure`).
    background : pandas.DataFrame
        NEMA-style background ROIs, one row per ROI size: ``roi_mm, n_rois, mean, sd,
        variability_pct``.
    background_rois : pandas.DataFrame
        Physical centres of the background ROIs: ``plane_mm, roi, x, y, z, source``
        (``source`` is ``"image"`` when they were placed from the body outline in the scan).
    localization : Localization
    info : dict
        JSON-ready facts: concentrations and their source, units, background, method.
    """

    spheres: pd.DataFrame
    background: pd.DataFrame
    background_rois: pd.DataFrame
    localization: Localization
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- inputs
def resolve_concentrations(image: sitk.Image | None = None, *, sphere_conc=None, background_conc=None,
                           fill=None) -> tuple[float | None, float | None, str]:
    """True sphere and background concentrations at scan start, and where they come from.

    Returns ``(sphere_conc, background_conc, source)`` with source ``"fill"``, ``"given"`` or
    ``"estimated"`` (both None: to be estimated from the largest sphere).
    """
    if fill is not None and (sphere_conc is not None or background_conc is not None):
        raise ValidationError("Give either a fill description or the concentrations (sphere_conc, "
                              "background_conc), not both.")
    units = image.GetMetaData("0054|1001").strip().upper() if image is not None and image.HasMetaDataKey("0054|1001") else None
    if fill is not None:
        if isinstance(fill, str | Path):
            fill = read_fill(fill)
        elif isinstance(fill, dict):
            fill = FillDescription.from_dict(fill)
        elif not isinstance(fill, FillDescription):
            raise ValidationError(f"The 'fill' parameter must be a FillDescription, a dict or a JSON path. "
                                  f"Got {type(fill).__name__}.")
        if units is not None and units not in ("BQML", "BQ/ML"):
            raise ValidationError(
                f"The image's Units are '{units}' but a fill description gives Bq/mL; convert the image "
                "to Bq/mL or give sphere_conc/background_conc in the image's units.")
        s, b = fill.sphere_conc, fill.background_conc
        if fill.stated_ratio:
            ratio = s / b
            if abs(ratio / fill.stated_ratio - 1.0) > 0.10:
                warnings.warn(
                    f"The decay-corrected sphere:background ratio is {ratio:.2f}, more than 10 % away from the "
                    f"stated {fill.stated_ratio:g}:1; check the fill activities and times.", DataWarning, stacklevel=3)
        return float(s), float(b), "fill"
    if sphere_conc is not None:
        check_number(sphere_conc, name="sphere_conc", low=0, low_inclusive=False)
        if background_conc is not None:
            check_number(background_conc, name="background_conc", low=0)
            if background_conc >= sphere_conc:
                raise ValidationError(f"background_conc ({background_conc}) must be below sphere_conc ({sphere_conc}).")
        return float(sphere_conc), None if background_conc is None else float(background_conc), "given"
    if background_conc is not None:
        check_number(background_conc, name="background_conc", low=0)
        return None, float(background_conc), "estimated"
    return None, None, "estimated"


def read_centres(path) -> np.ndarray:
    """Read manual sphere centres from JSON.

    Accepted forms: ``{"centres": {"10": [x, y, z], "13": [...], ...}}`` (keys are sphere
    diameters in mm) or ``{"centres": [[x, y, z], ...]}`` / a bare list of six points in the
    order 10, 13, 17, 22, 28, 37 mm.  Physical coordinates in mm.
    """
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"Centres file '{p}' does not exist.")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"Centres file '{p}' is not valid JSON: {exc}") from exc
    if isinstance(d, dict):
        d = d.get("centres", d)
    if isinstance(d, dict):
        try:
            pts = [d[k] for k in sorted(d, key=float)]
            keys = sorted(float(k) for k in d)
        except (ValueError, TypeError) as exc:
            raise CorruptFileError(f"Centres file '{p}': keys must be sphere diameters in mm.") from exc
        if keys != list(SPHERE_DIAMETERS_MM):
            raise CorruptFileError(f"Centres file '{p}' must give the spheres "
                                   f"{', '.join(f'{v:g}' for v in SPHERE_DIAMETERS_MM)} mm; got {keys}.")
    else:
        pts = d
    try:
        arr = np.asarray(pts, float)
    except (ValueError, TypeError) as exc:
        raise CorruptFileError(f"Centres file '{p}': centres must be [x, y, z] numbers.") from exc
    if arr.shape != (6, 3) or not np.all(np.isfinite(arr)):
        raise CorruptFileError(f"Centres file '{p}' must hold 6 points of 3 coordinates; got shape {arr.shape}.")
    return arr


# ----------------------------------------------------------------------------- metrics
def _peak_kernels(spacing: np.ndarray, radius: float):
    """PV-weighted 1 mL sphere kernels for kernel centres shifted by 0 or half a voxel per axis."""
    fine = 5
    shifts = [0.0, 0.5] if np.max(spacing) > 1.5 else [0.0]
    kernels = []
    for sz in shifts:
        for sy in shifts:
            for sx in shifts:
                shift = np.array([sx, sy, sz])
                n = np.ceil(radius / spacing + 1).astype(int)
                sub = (np.arange(fine) + 0.5) / fine - 0.5
                axes = [((np.arange(-n[d], n[d] + 1)[:, None] + sub[None, :]) - shift[d]) * spacing[d]
                        for d in range(3)]
                ax, ay, az = (a.ravel() for a in axes)
                inside = (az[:, None, None] ** 2 + ay[None, :, None] ** 2 + ax[None, None, :] ** 2) <= radius**2
                shape = (2 * n[2] + 1, fine, 2 * n[1] + 1, fine, 2 * n[0] + 1, fine)
                w = inside.reshape(shape).mean(axis=(1, 3, 5))
                kernels.append((shift, w / w.sum()))
    return kernels


def sphere_metrics(arr: np.ndarray, grid: VoxelGrid, centre, diameter_mm: float, *, a50_background: float,
                   kernels=None) -> dict:
    """Max, A50 mean (background-adapted) and peak (1 mL, PV-weighted, position searched) of one sphere."""
    R = diameter_mm / 2.0
    rpk = PEAK_SPHERE_DIAMETER_MM / 2.0
    half = R + rpk + 2 * float(np.max(grid.spacing)) + 8.0
    box = grid.box(centre, half)
    vals = arr[box]
    pts = grid.coords(box)
    d = np.linalg.norm(pts - np.asarray(centre, float), axis=-1)
    voi = d <= R
    if not voi.any():
        voi = d <= d.min() + 1e-9
    vmax = float(vals[voi].max())
    # A50: connected region above B + 0.5 (max - B) containing the hottest VOI voxel
    thr = a50_background + 0.5 * (vmax - a50_background)
    region = (vals >= thr) & (d <= R + max(5.0, float(np.max(grid.spacing))))
    labels, _ = ndimage.label(region, structure=np.ones((3, 3, 3)))
    seed = np.unravel_index(np.argmax(np.where(voi, vals, -np.inf)), vals.shape)
    a50 = labels == labels[seed] if labels[seed] else np.zeros_like(region)
    if not a50.any():
        a50[seed] = True
    a50_mean = float(vals[a50].mean())
    # peak: highest mean of a 1 mL sphere whose centre lies within the sphere.  Kernel centres
    # on voxel centres are searched with one convolution; half-voxel shifted kernels are then
    # tried around the best voxel.
    if kernels is None:
        kernels = _peak_kernels(grid.spacing, rpk)
    c = np.asarray(centre, float)
    w0 = kernels[0][1]
    n = np.array(w0.shape) // 2
    valid = np.zeros(vals.shape, bool)
    valid[n[0]:vals.shape[0] - n[0], n[1]:vals.shape[1] - n[1], n[2]:vals.shape[2] - n[2]] = True
    conv = signal.fftconvolve(vals, w0[::-1, ::-1, ::-1], mode="same")
    cand = (d <= R) & valid
    if not cand.any():
        cand = valid & (d <= d[valid].min() + 1e-9) if valid.any() else d <= d.min() + 1e-9
    i0 = np.unravel_index(int(np.argmax(np.where(cand, conv, -np.inf))), vals.shape)
    peak = float(conv[i0])
    peak_pos = pts[i0]
    for shift, w in kernels[1:]:
        off = grid.matrix @ shift
        for dz in (-1, 0):
            for dy in (-1, 0):
                for dx in (-1, 0):
                    iz, iy, ix = i0[0] + dz, i0[1] + dy, i0[2] + dx
                    if not (n[0] <= iz < vals.shape[0] - n[0] and n[1] <= iy < vals.shape[1] - n[1]
                            and n[2] <= ix < vals.shape[2] - n[2]):
                        continue
                    pos = pts[iz, iy, ix] + off
                    if np.linalg.norm(pos - c) > R:
                        continue
                    v = float(np.sum(vals[iz - n[0]:iz + n[0] + 1, iy - n[1]:iy + n[1] + 1,
                                          ix - n[2]:ix + n[2] + 1] * w))
                    if v > peak:
                        peak, peak_pos = v, pos
    return {"max": vmax, "a50_mean": a50_mean, "a50_voxels": int(a50.sum()), "a50_threshold": float(thr),
            "peak": peak, "peak_x": float(peak_pos[0]), "peak_y": float(peak_pos[1]), "peak_z": float(peak_pos[2]),
            "voi_voxels": int(voi.sum())}


# ----------------------------------------------------------------------------- measure
#: the measured background may differ from the true one by calibration error; beyond this
#: factor the numbers are in different units (kBq/mL vs Bq/mL) or belong to another scan
_SCALE_LIMIT = 5.0


def _check_nan(nan: np.ndarray, grid: VoxelGrid, loc: Localization, site) -> None:
    """Refuse NaN voxels in or near the phantom; NaN outside it (e.g. outside a reconstruction
    mask) reads as air, with a warning."""
    idx = np.argwhere(nan)[:, ::-1].astype(float)  # x, y, z
    ph = loc.to_phantom(grid.to_physical(idx))
    inside = body_sdf(ph[:, 0], ph[:, 1], ph[:, 2]) < 10.0
    name = f"Scan '{site}'" if site else "The scan"
    if inside.any():
        first = grid.to_physical(idx[np.argmax(inside)])
        raise ValidationError(
            f"{name} has {int(inside.sum())} NaN voxel(s) inside the phantom (the first at x={first[0]:.1f}, "
            f"y={first[1]:.1f}, z={first[2]:.1f} mm); recovery coefficients and background would be wrong. "
            "Reconstruct or export the scan again without undefined voxels.")
    warnings.warn(f"{name} has {int(nan.sum())} NaN voxel(s), all outside the phantom; they are read as air (0).",
                  DataWarning, stacklevel=4)


def _check_scale(b_meas: float, s_conc, b_conc, source: str, units) -> None:
    """Refuse true concentrations that cannot describe this image (units, swapped values)."""
    unit = units or "image units"
    what = "the fill" if source == "fill" else "the given concentrations"
    if b_conc is not None and b_conc > 0 and np.isfinite(b_meas) and b_meas > 0:
        ratio = b_meas / b_conc
        if ratio > _SCALE_LIMIT or ratio < 1.0 / _SCALE_LIMIT:
            hint = ""
            if 200 < ratio < 5000:
                hint = (" The true values look like kBq/mL against a Bq/mL image: fill activities are in MBq "
                        "and volumes in mL; --sphere-conc/--background-conc are in the image's units.")
            elif 1 / 5000 < ratio < 1 / 200:
                hint = " The image looks like kBq/mL while the true values are Bq/mL; convert one of them."
            raise ValidationError(
                f"The measured background ({b_meas:.6g} {unit}) is {ratio:.3g} times the background "
                f"concentration of {what} ({b_conc:.6g} {'Bq/mL' if source == 'fill' else unit} at scan start).{hint} Check the units, the "
                "activities and the times.")
    if s_conc is not None and np.isfinite(b_meas) and s_conc <= b_meas:
        raise ValidationError(
            f"The sphere concentration of {what} ({s_conc:.6g}) is not above the measured background "
            f"({b_meas:.6g} {unit}); check the sphere concentration and its units.")


def measure_phantom(image: sitk.Image, *, sphere_conc=None, background_conc=None, fill=None, centres=None,
                    a50_background: str = "measured", site: str | None = None,
                    localization: Localization | None = None) -> PhantomMeasurement:
    """Locate the spheres and measure RCmax, RCmean (A50), RCpeak and the background.

    See :func:`measure` for the parameters; also returns the background ROIs and the
    localization.  ``localization`` reuses a previous search (calibration sweeps).
    """
    if isinstance(image, str | Path):
        image = read_phantom(image)
    if not isinstance(image, sitk.Image):
        raise ValidationError(f"measure needs a SimpleITK.Image or a path; got {type(image).__name__}. "
                              "Read scans with sitekit.harmonize.earl.read_phantom.")
    check_option(a50_background, ("measured", "known"), name="a50_background")
    s_conc, b_conc, source = resolve_concentrations(image, sphere_conc=sphere_conc,
                                                    background_conc=background_conc, fill=fill)
    if a50_background == "known" and b_conc is None:
        raise ValidationError("a50_background='known' needs the background concentration (fill or background_conc).")
    arr = sitk.GetArrayViewFromImage(image).astype(np.float64)
    grid = VoxelGrid(image)
    nan = np.isnan(arr)
    if nan.any():
        arr[nan] = 0.0
        clean = sitk.GetImageFromArray(arr)
        clean.CopyInformation(image)
        image = clean
    if localization is None:
        if isinstance(centres, str | Path):
            centres = read_centres(centres)
        localization = locate_spheres(image, centres=centres)
    loc = localization
    if nan.any():
        _check_nan(nan, grid, loc, site)
    placement = place_background_rois(arr, grid, loc)
    bkg = measure_background(arr, grid, loc, placement)
    b_meas = float(bkg.loc[bkg["roi_mm"] == max(SPHERE_DIAMETERS_MM), "mean"].iloc[0])
    if not np.isfinite(b_meas):
        b_meas = float(np.nanmedian(loc.spheres["fit_background"]))
    units = image.GetMetaData("0054|1001").strip() if image.HasMetaDataKey("0054|1001") else None
    _check_scale(b_meas, s_conc, b_conc, source, units)
    largest = loc.spheres.iloc[int(np.argmax(loc.spheres["sphere_mm"]))]
    if s_conc is None:
        s_conc = float(largest["fit_background"] + largest["fit_amplitude"])
        if not (np.isfinite(s_conc) and s_conc > 0):
            raise ValidationError("The sphere concentration could not be estimated from the largest sphere; "
                                  "give the fill or sphere_conc.")
    b_true = b_conc
    b_a50 = b_meas if a50_background == "measured" else float(b_conc)
    kernels = None
    rows = []
    for k, dmm in enumerate(SPHERE_DIAMETERS_MM):
        c = loc.centres[k]
        if kernels is None:
            kernels = _peak_kernels(grid.spacing, PEAK_SPHERE_DIAMETER_MM / 2.0)
        m = sphere_metrics(arr, grid, c, dmm, a50_background=b_a50, kernels=kernels)
        # per-sphere effective resolution: the profile fit with the contrast fixed
        contrast = s_conc - (b_true if b_true is not None else b_meas)
        excl = _make_exclude(loc.ring_centre, loc.axes[2], loc.centres, k)
        f = fit_sphere(arr, grid, c, dmm, exclude=excl, fix_centre=True, amplitude=contrast,
                       sigma0=float(largest["fit_fwhm_mm"]) / 2.3548 if np.isfinite(largest["fit_fwhm_mm"]) else 3.0)
        rows.append({
            "site": site if site is not None else "scan",
            "sphere_mm": dmm,
            "rc_max": m["max"] / s_conc,
            "rc_a50": m["a50_mean"] / s_conc,
            "rc_peak": m["peak"] / s_conc,
            "centre_x": c[0], "centre_y": c[1], "centre_z": c[2],
            "max": m["max"], "a50_mean": m["a50_mean"], "peak": m["peak"],
            "a50_voxels": m["a50_voxels"], "a50_threshold": m["a50_threshold"],
            "sphere_conc": s_conc,
            "background_conc": b_true if b_true is not None else np.nan,
            "background_measured": b_meas,
            "conc_source": source,
            "centre_source": loc.spheres["source"].iloc[k],
            "fwhm_mm": f["fwhm_mm"] if f is not None else np.nan,
        })
    spheres = pd.DataFrame(rows)
    info = {
        "site": site if site is not None else "scan",
        "sphere_conc": s_conc, "background_conc": b_true, "background_measured": b_meas,
        "conc_source": source, "a50_background": a50_background, "units": units,
        "estimated_from": "37 mm sphere profile fit" if source == "estimated" else None,
        "localization": loc.method, "ring_centre": [float(v) for v in loc.ring_centre],
        "tilt_deg": loc.tilt_deg, "spacing_mm": [float(v) for v in grid.spacing],
        "background_variability_pct": {f"{r.roi_mm:g}": r.variability_pct for r in bkg.itertuples()},
        "background_cov_pct": background_cov(arr, grid, loc, placement),
        "background_placement": placement.source,
        "ratio_measured": s_conc / b_meas if b_meas else None,
    }
    info.update({k: v for k, v in loc.info.items() if k in ("ring_rms_mm", "mirrored", "rotation_deg")})
    spheres.attrs["info"] = info
    return PhantomMeasurement(spheres=spheres, background=bkg, background_rois=roi_table(loc, placement),
                              localization=loc, info=info)


def measure(image: sitk.Image, *, sphere_conc=None, background_conc=None, fill=None, centres=None,
            a50_background: str = "measured", site: str | None = None) -> pd.DataFrame:
    """Measure the recovery coefficients of a NEMA/IEC phantom scan.

    Parameters
    ----------
    image : SimpleITK.Image or path
        Phantom scan in activity concentration (Bq/mL when a fill is given); a path is read
        with :func:`read_phantom`.
    sphere_conc, background_conc : float, optional
        True concentrations at scan start, in the image's units.
    fill : FillDescription, dict or path, optional
        Fill description (see :mod:`sitekit.harmonize.earl._fill`); concentrations are
        decay-corrected to scan start.  Without a fill or ``sphere_conc`` the sphere
        concentration is estimated by fitting the blurred-sphere profile of the 37 mm
        sphere (``conc_source == "estimated"``).
    centres : array-like of shape (6, 3) or path, optional
        Manual sphere centres (physical mm, order 10..37 mm) or a JSON file of them.
    a50_background : {"measured", "known"}, default="measured"
        Background B of the A50 threshold: the mean of the background ROIs, or the known
        background concentration.
    site : str, optional
        Site name put in the ``site`` column.

    Returns
    -------
    pandas.DataFrame
        One row per sphere: ``site, sphere_mm, rc_max, rc_a50, rc_peak, centre_x, centre_y,
        centre_z`` (mm, physical), ``max, a50_mean, peak`` (image units), ``a50_voxels,
        a50_threshold, sphere_conc, background_conc, background_measured, conc_source,
        centre_source, fwhm_mm`` (effective resolution from the blurred-sphere fit, a
        diagnostic).  ``attrs["info"]`` holds the background variability and the facts above.

    Raises
    ------
    SpheresNotFoundError
        The spheres could not be found (give ``centres``).

    Examples
    --------
    >>> from sitekit.datasets import make_phantom_scan
    >>> from sitekit.harmonize import earl
    >>> scan = make_phantom_scan("site_C", fov_mm=(320, 280, 80), fov_centre=(0, 0, 0), random_state=0)
    >>> df = earl.measure(scan.image, fill=scan.fill)
    >>> list(df["sphere_mm"])
    [10.0, 13.0, 17.0, 22.0, 28.0, 37.0]
    """
    return measure_phantom(image, sphere_conc=sphere_conc, background_conc=background_conc, fill=fill,
                           centres=centres, a50_background=a50_background, site=site).spheres
