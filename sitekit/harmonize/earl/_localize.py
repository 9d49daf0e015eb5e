"""Automatic localization of the six spheres of a NEMA/IEC body phantom.

1. The scan is resampled onto an axis-aligned isotropic search grid (2.5-4 mm) cropped to the
   phantom; cold structures are clipped to the background level so that only hot objects
   respond.
2. Each sphere size has a matched filter: the zero-mean, unit-norm blurred-sphere profile.
3. Ring template search: for the strongest candidates of the 37 mm sphere, every in-plane
   rotation (2 degree steps) and both handednesses, the six predicted positions (ring radius
   57.2 mm, 60 degrees apart, 10-13-17-22-28-37 in order) are scored by the sum of their
   filter responses; the best hypothesis is then refined continuously (centre, rotation, tilt).
4. Each sphere is refined on the native grid by fitting the blurred-sphere profile
   ``b + A P(|x - c|; R, s)`` (centre, amplitude, local background, blur); spheres too weak to
   fit keep the position of the ring fitted to the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage, optimize, signal

from sitekit.exceptions import SpheresNotFoundError, ValidationError
from sitekit.harmonize.earl._image import VoxelGrid
from sitekit.harmonize.earl._physics import FWHM_TO_SIGMA, sphere_profile
from sitekit.harmonize.earl.geometry import (
    LUNG_INSERT_DIAMETER_MM,
    RING_RADIUS_MM,
    RING_STEP_DEG,
    SPHERE_DIAMETERS_MM,
)

__all__ = ["Localization", "locate_spheres", "fit_sphere", "preview_image", "ring_points"]

_RADII = np.asarray(SPHERE_DIAMETERS_MM) / 2.0
_PHI = np.deg2rad(np.arange(6) * RING_STEP_DEG)


@dataclass
class Localization:
    """Where the spheres are.

    Attributes
    ----------
    centres : ndarray of shape (6, 3)
        Physical centres (mm) in ``SPHERE_DIAMETERS_MM`` order.
    ring_centre : ndarray of shape (3,)
    axes : ndarray of shape (3, 3)
        Rows: phantom x (towards the 10 mm sphere), phantom y (the spheres go round
        counter-clockwise from x to y), and the ring normal.
    spheres : pandas.DataFrame
        Per sphere: ``sphere_mm, centre_x, centre_y, centre_z, source`` ("fit", "ring" or
        "manual"), ``fit_amplitude, fit_background, fit_fwhm_mm, snr``.
    method : str
        ``"automatic"`` or ``"manual"``.
    background_estimate : float
        Background level seen by the search.
    """

    centres: np.ndarray
    ring_centre: np.ndarray
    axes: np.ndarray
    spheres: pd.DataFrame
    method: str = "automatic"
    background_estimate: float = float("nan")
    info: dict = field(default_factory=dict)

    @property
    def tilt_deg(self) -> float:
        """Angle between the ring normal and the scanner z axis."""
        return float(np.degrees(np.arccos(min(1.0, abs(self.axes[2, 2])))))

    def to_phantom(self, points) -> np.ndarray:
        """Physical (..., 3) -> phantom coordinates (..., 3) (origin at the ring centre)."""
        return (np.asarray(points, float) - self.ring_centre) @ self.axes.T


def ring_points(centre, rotation_rad: float, mirrored: bool, normal=(0.0, 0.0, 1.0)) -> np.ndarray:
    """The six sphere centres of a ring, shape (6, 3), in ``SPHERE_DIAMETERS_MM`` order."""
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    ref = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = ref - n * (ref @ n)
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    sign = -1.0 if mirrored else 1.0
    ang = rotation_rad + sign * _PHI
    return np.asarray(centre, float) + RING_RADIUS_MM * (np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v)


def _normal_from_tilt(tx: float, ty: float) -> np.ndarray:
    n = np.array([np.tan(ty), -np.tan(tx), 1.0])
    return n / np.linalg.norm(n)


# ----------------------------------------------------------------------------- search grid
def _search_grid(image: sitk.Image, arr: np.ndarray):
    """Resample the phantom region onto an axis-aligned isotropic grid; return (array, origin, g)."""
    grid = VoxelGrid(image)
    g = float(np.clip(np.max(grid.spacing), 2.5, 4.0))
    # crop to where there is activity (robust to empty FOV margins)
    step = tuple(max(1, int(round(g / s))) for s in grid.spacing[::-1])
    coarse = arr[:: step[0], :: step[1], :: step[2]]
    hi = np.percentile(coarse, 99.5)
    if not np.isfinite(hi) or hi <= 0:
        raise SpheresNotFoundError("The image holds no positive activity; is this a phantom scan?")
    occupied = np.argwhere(coarse > 0.05 * hi) * np.asarray(step)
    lo_idx = np.maximum(occupied.min(axis=0) - 2 * np.asarray(step), 0)[::-1]  # x, y, z
    hi_idx = np.minimum(occupied.max(axis=0) + 2 * np.asarray(step), np.asarray(arr.shape) - 1)[::-1]
    corners = np.array([[a, b, c] for a in (lo_idx[0], hi_idx[0]) for b in (lo_idx[1], hi_idx[1])
                        for c in (lo_idx[2], hi_idx[2])], float)
    phys = grid.to_physical(corners)
    pmin, pmax = phys.min(axis=0), phys.max(axis=0)
    size = np.maximum(1, np.ceil((pmax - pmin) / g).astype(int) + 1)
    ref = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    ref.SetSpacing((g, g, g))
    ref.SetOrigin(tuple(float(v) for v in pmin))
    src = sitk.GetImageFromArray(arr.astype(np.float32))
    src.CopyInformation(image)
    res = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(res).astype(np.float64), pmin, g


def _background_level(a: np.ndarray) -> float:
    vals = a[a > 0.05 * np.percentile(a, 99.9)]
    if vals.size == 0:
        return float("nan")
    b0 = np.median(vals)
    body = vals[(vals > 0.5 * b0) & (vals < 2.0 * b0)]
    return float(np.median(body)) if body.size else float(b0)


def _template(radius: float, g: float, sigma: float) -> np.ndarray:
    support = radius + 3.0 * sigma + 6.0
    n = int(np.ceil(support / g))
    ax = np.arange(-n, n + 1) * g
    r = np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2)
    t = sphere_profile(r, radius, sigma)
    inside = r <= support
    t = np.where(inside, t, 0.0)
    t[inside] -= t[inside].mean()
    return t / np.sqrt(np.sum(t * t))


def _interp(vol: np.ndarray, origin: np.ndarray, g: float, points: np.ndarray) -> np.ndarray:
    idx = ((np.asarray(points) - origin) / g)[..., ::-1]  # z, y, x
    flat = idx.reshape(-1, 3).T
    out = ndimage.map_coordinates(vol, flat, order=1, mode="constant", cval=0.0)
    return out.reshape(idx.shape[:-1])


# ----------------------------------------------------------------------------- refinement fit
def fit_sphere(image_arr, grid: VoxelGrid, centre, diameter_mm, *, exclude=None, amplitude=None,
               fix_centre=False, max_shift_mm=8.0, sigma0=3.0, background=None):
    """Fit ``b + A P(|x - c|; R, s)`` to the voxels around one sphere.

    Parameters
    ----------
    image_arr : ndarray (z, y, x)
    grid : VoxelGrid
    centre : sequence of 3 float
        Starting centre (physical mm).
    diameter_mm : float
        Known inner diameter of the sphere.
    exclude : callable, optional
        ``exclude(points) -> bool mask`` of voxels to leave out (lung insert, other spheres).
    amplitude : float, optional
        Fix the sphere contrast ``A`` (known sphere - background concentration).
    fix_centre : bool, default=False
    max_shift_mm : float, default=8
    sigma0 : float, default=3
        Starting Gaussian sigma (mm).
    background : float, optional
        Fix the background ``b``.

    Returns
    -------
    dict
        ``centre, amplitude, background, sigma, fwhm_mm, snr, cost, n``.
    """
    R = diameter_mm / 2.0
    half = R + 16.0
    box = grid.box(centre, half)
    vals = image_arr[box].astype(float)
    pts = grid.coords(box)
    d0 = np.linalg.norm(pts - np.asarray(centre), axis=-1)
    keep = d0 <= half
    if exclude is not None:
        keep &= ~exclude(pts)
    y = vals[keep]
    p = pts[keep]
    if y.size > 4000:  # a regular subset keeps the fit fast on fine grids
        step = int(np.ceil(y.size / 4000))
        y, p = y[::step], p[::step]
        d0 = d0[keep][::step]
        keep = np.ones(y.size, bool)
    c0 = np.asarray(centre, float)
    if y.size < 10:
        return None
    b_init = float(np.median(y[d0[keep] > R + 8.0])) if np.any(d0[keep] > R + 8.0) else float(np.median(y))
    core = y[d0[keep] <= max(R, 0.6 * np.max(grid.spacing))]
    a_init = float(np.mean(core) - b_init) if core.size else float(np.max(y) - b_init)

    names = []
    x0 = []
    lo = []
    hi = []
    if not fix_centre:
        names += ["cx", "cy", "cz"]
        x0 += list(c0)
        lo += list(c0 - max_shift_mm)
        hi += list(c0 + max_shift_mm)
    if amplitude is None:
        names.append("A")
        span = max(abs(a_init), np.ptp(y), 1e-9)
        x0.append(max(a_init, 1e-3 * span))
        lo.append(-10 * span)
        hi.append(10 * span)
    if background is None:
        names.append("b")
        x0.append(b_init)
        span = max(np.ptp(y), 1e-9)
        lo.append(b_init - 10 * span)
        hi.append(b_init + 10 * span)
    names.append("s")
    x0.append(np.clip(sigma0, 0.6, 11.0))
    lo.append(0.5)
    hi.append(12.0)
    x0 = np.clip(np.asarray(x0, float), np.asarray(lo) + 1e-9, np.asarray(hi) - 1e-9)

    def unpack(x):
        d = dict(zip(names, x))
        c = np.array([d["cx"], d["cy"], d["cz"]]) if not fix_centre else c0
        A = d.get("A", amplitude)
        b = d.get("b", background)
        return c, A, b, d["s"]

    scale = max(np.std(y), 1e-12)

    def resid(x):
        c, A, b, s = unpack(x)
        r = np.linalg.norm(p - c, axis=1)
        return (b + A * sphere_profile(r, R, s) - y) / scale

    sol = optimize.least_squares(resid, x0, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=200,
                                 tr_solver="lsmr")
    c, A, b, s = unpack(sol.x)
    dof = max(y.size - len(names), 1)
    sigma_res = np.sqrt(2 * sol.cost / dof) * scale
    snr = float("nan")
    if "A" in names:
        try:
            J = sol.jac * scale
            cov = np.linalg.pinv(J.T @ J) * sigma_res**2
            se = np.sqrt(max(cov[names.index("A"), names.index("A")], 1e-300))
            snr = float(A / se)
        except np.linalg.LinAlgError:
            snr = float("nan")
    else:
        r = np.linalg.norm(p - c, axis=1)
        w = sphere_profile(r, R, s)
        snr = float(A * np.sqrt(np.sum(w * w)) / max(sigma_res, 1e-12))
    return {"centre": c, "amplitude": float(A), "background": float(b), "sigma": float(s),
            "fwhm_mm": float(s / FWHM_TO_SIGMA), "snr": snr, "cost": float(sol.cost),
            "noise_sd": float(sigma_res), "n": int(y.size)}


def _make_exclude(ring_centre, normal, centres, skip: int):
    ring_centre = np.asarray(ring_centre, float)
    n = np.asarray(normal, float)
    lung_r = LUNG_INSERT_DIAMETER_MM / 2.0 + 6.0
    others = [(np.asarray(centres[j]), _RADII[j] + 7.0) for j in range(6) if j != skip]

    def exclude(pts):
        d = pts - ring_centre
        radial = np.linalg.norm(d - (d @ n)[..., None] * n, axis=-1)
        mask = radial < lung_r
        for c, r in others:
            mask |= np.linalg.norm(pts - c, axis=-1) < r
        return mask

    return exclude


def _fit_ring(points, weights, init_centre, init_rot, mirrored, init_normal):
    """Least-squares rigid ring (centre, rotation, tilt) through weighted sphere centres."""
    n0 = np.asarray(init_normal, float)
    tx0 = -np.arctan2(n0[1], n0[2])
    ty0 = np.arctan2(n0[0], n0[2])

    def resid(x):
        pred = ring_points(x[:3], x[3], mirrored, _normal_from_tilt(x[4], x[5]))
        return ((pred - points) * np.sqrt(weights)[:, None]).ravel()

    x0 = np.r_[init_centre, init_rot, tx0, ty0]
    sol = optimize.least_squares(resid, x0, method="lm" if np.count_nonzero(weights) >= 3 else "trf")
    return sol.x, float(np.sqrt(np.mean(sol.fun ** 2 * 3)))


# ----------------------------------------------------------------------------- the search
def locate_spheres(image: sitk.Image, *, centres=None, system_fwhm_mm: float = 7.0) -> Localization:
    """Find the six spheres of a NEMA/IEC phantom scan.

    Parameters
    ----------
    image : SimpleITK.Image
        The phantom scan (activity concentration; any voxel size and orientation).
    centres : array-like of shape (6, 3), optional
        Manual physical centres (mm) in ``SPHERE_DIAMETERS_MM`` order; skips the search.
    system_fwhm_mm : float, default=7
        Resolution assumed by the matched filters (only the search depends on it).

    Returns
    -------
    Localization

    Raises
    ------
    SpheresNotFoundError
        No ring of six spheres fits the image; ``preview`` shows what was found.
    """
    arr = sitk.GetArrayViewFromImage(image).astype(np.float64)
    grid = VoxelGrid(image)
    sigma0 = system_fwhm_mm * FWHM_TO_SIGMA
    if centres is not None:
        return _manual(arr, grid, np.asarray(centres, float), sigma0)

    vol, origin, g = _search_grid(image, arr)
    sm = ndimage.gaussian_filter(vol, 0.6)
    bkg = _background_level(sm)
    if not np.isfinite(bkg) or bkg <= 0:
        raise SpheresNotFoundError("No uniform background found in the image; is this a NEMA/IEC phantom scan?",
                                   preview=_preview_from_search(vol, origin, g, None), found=None)
    hot = np.maximum(sm, bkg) - bkg
    s_search = np.sqrt(sigma0**2 + g**2 / 12.0)
    # the 37 mm response over the whole volume finds the sphere plane; the other responses are
    # only needed in a slab around it
    r37_full = signal.fftconvolve(hot, _template(_RADII[5], g, s_search), mode="same")
    kz = int(np.unravel_index(int(np.argmax(r37_full)), r37_full.shape)[0])
    dz = int(np.ceil(45.0 / g))
    z0, z1 = max(0, kz - dz), min(hot.shape[0], kz + dz + 1)
    hot = hot[z0:z1]
    origin = origin + np.array([0.0, 0.0, z0 * g])
    vol = vol[z0:z1]
    responses = [signal.fftconvolve(hot, _template(r, g, s_search), mode="same") for r in _RADII[:5]]
    responses.append(r37_full[z0:z1])

    # candidates for the 37 mm sphere: the strongest local maxima of its response
    r37 = responses[5]
    foot = max(3, int(round(15.0 / g)))
    peaks = (r37 == ndimage.maximum_filter(r37, size=foot)) & (r37 > 0)
    idx = np.argwhere(peaks)
    order = np.argsort(r37[peaks])[::-1][:8]
    if idx.size == 0:
        raise SpheresNotFoundError("No hot sphere-like object found in the image.",
                                   preview=_preview_from_search(vol, origin, g, None))
    cand = origin + idx[order][:, ::-1] * g  # physical x, y, z

    angles = np.deg2rad(np.arange(0.0, 360.0, 2.0))
    best = (-np.inf, None)
    for p in cand:
        for mirrored in (False, True):
            sign = -1.0 if mirrored else 1.0
            # position of sphere k for ring rotation a: c + R e(a + sign*phi_k), with sphere 5 at p
            rot = angles[:, None] + sign * _PHI[None, :]  # (na, 6)
            e = np.stack([np.cos(rot), np.sin(rot), np.zeros_like(rot)], axis=-1)
            c = p[None, :] - RING_RADIUS_MM * e[:, 5, :]
            pts = c[:, None, :] + RING_RADIUS_MM * e  # (na, 6, 3)
            score = sum(_interp(responses[k], origin, g, pts[:, k, :]) for k in range(6))
            i = int(np.argmax(score))
            if score[i] > best[0]:
                best = (float(score[i]), (c[i], angles[i], mirrored))
    _, (c_best, a_best, mirrored) = best

    stack = np.stack(responses)
    kidx = np.arange(6, dtype=float)

    def neg_score(x):
        pts = ring_points(x[:3], x[3], mirrored, _normal_from_tilt(x[4], x[5]))
        idx = ((pts - origin) / g)[:, ::-1]
        coords = np.vstack([kidx, idx.T])
        return -float(ndimage.map_coordinates(stack, coords, order=1, mode="constant", cval=0.0).sum())

    x0 = np.r_[c_best, a_best, 0.0, 0.0]
    simplex = np.vstack([x0] + [x0 + d for d in np.diag([3.0, 3.0, 3.0, np.deg2rad(3.0), 0.04, 0.04])])
    sol = optimize.minimize(neg_score, x0, method="Nelder-Mead",
                            options={"initial_simplex": simplex, "xatol": 0.05,
                                     "fatol": 1e-5 * abs(best[0]) + 1e-12, "maxiter": 1500})
    x = sol.x
    normal = _normal_from_tilt(x[4], x[5])
    pred = ring_points(x[:3], x[3], mirrored, normal)
    search_scores = [float(_interp(responses[k], origin, g, pred[k][None, :])[0]) for k in range(6)]

    # per-sphere refinement on the native grid, largest first
    fits: list[dict | None] = [None] * 6
    centres_now = pred.copy()
    for k in range(5, -1, -1):
        excl = _make_exclude(x[:3], normal, centres_now, k)
        f = fit_sphere(arr, grid, centres_now[k], SPHERE_DIAMETERS_MM[k], exclude=excl, sigma0=sigma0,
                       max_shift_mm=6.0 + 2.0 * (k >= 3))
        fits[k] = f
        if f is not None and f["amplitude"] > 0 and f["snr"] > 5:
            centres_now[k] = f["centre"]
    ok = np.array([f is not None and f["amplitude"] > 0 and f["snr"] > 5
                   and np.linalg.norm(f["centre"] - pred[k]) < 7.0 for k, f in enumerate(fits)])
    preview_found = pd.DataFrame({"sphere_mm": SPHERE_DIAMETERS_MM, "centre_x": pred[:, 0],
                                  "centre_y": pred[:, 1], "centre_z": pred[:, 2],
                                  "search_score": search_scores, "fitted": ok})
    if not ok[3:].all():
        missing = [f"{SPHERE_DIAMETERS_MM[k]:g} mm" for k in range(3, 6) if not ok[k]]
        raise SpheresNotFoundError(
            f"The ring of six spheres was not found: the {', '.join(missing)} sphere(s) do not stand out "
            "at the positions the ring template predicts. Check that this is a NEMA/IEC body phantom "
            "scan with hot spheres, or give the sphere centres by hand (--centres CENTRES.json).",
            preview=_preview_from_search(vol, origin, g, preview_found), found=preview_found)

    # rigid ring through the well-fitted spheres; weak ones take its prediction
    w = np.where(ok, 1.0, 0.0)
    xr, rms = _fit_ring(np.array([fits[k]["centre"] if ok[k] else pred[k] for k in range(6)]), w,
                        x[:3], x[3], mirrored, normal)
    normal = _normal_from_tilt(xr[4], xr[5])
    ring = ring_points(xr[:3], xr[3], mirrored, normal)
    final = np.array([fits[k]["centre"] if ok[k] else ring[k] for k in range(6)])
    # refit the weak ones at the ring position with the centre fixed (for the diagnostics)
    for k in np.flatnonzero(~ok):
        excl = _make_exclude(xr[:3], normal, final, k)
        fits[k] = fit_sphere(arr, grid, final[k], SPHERE_DIAMETERS_MM[k], exclude=excl, fix_centre=True,
                             sigma0=sigma0)
    if rms > 6.0:
        raise SpheresNotFoundError(
            f"The fitted sphere centres do not lie on a 57.2 mm ring (rms deviation {rms:.1f} mm); "
            "give the centres by hand (--centres CENTRES.json).",
            preview=_preview_from_search(vol, origin, g, preview_found), found=preview_found)
    loc = _finish(final, xr[:3], normal, fits, ["fit" if o else "ring" for o in ok], "automatic", bkg)
    loc.info.update({"search_grid_mm": g, "ring_rms_mm": rms, "mirrored": bool(mirrored),
                     "rotation_deg": float(np.degrees(xr[3]) % 360.0)})
    return loc


def _finish(centres, ring_centre, normal, fits, sources, method, bkg) -> Localization:
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    if n[2] < 0:
        n = -n
    # phantom axes: x towards the 10 mm sphere, y such that the spheres go round counter-clockwise
    ex = centres[0] - ring_centre
    ex -= n * (ex @ n)
    ex /= np.linalg.norm(ex)
    ey = centres[1] - ring_centre - (centres[1] - ring_centre) @ ex * ex
    ey -= n * (ey @ n)
    ey /= np.linalg.norm(ey)
    ez = np.cross(ex, ey)
    rows = []
    for k in range(6):
        f = fits[k] or {}
        rows.append({"sphere_mm": SPHERE_DIAMETERS_MM[k], "centre_x": centres[k, 0], "centre_y": centres[k, 1],
                     "centre_z": centres[k, 2], "source": sources[k],
                     "fit_amplitude": f.get("amplitude", np.nan), "fit_background": f.get("background", np.nan),
                     "fit_fwhm_mm": f.get("fwhm_mm", np.nan), "snr": f.get("snr", np.nan)})
    return Localization(centres=np.asarray(centres, float), ring_centre=np.asarray(ring_centre, float),
                        axes=np.vstack([ex, ey, ez]), spheres=pd.DataFrame(rows), method=method,
                        background_estimate=float(bkg))


def _manual(arr, grid, centres, sigma0) -> Localization:
    if centres.shape != (6, 3) or not np.all(np.isfinite(centres)):
        raise ValidationError(
            f"Manual sphere centres must be 6 finite (x, y, z) points in mm, in the order "
            f"{', '.join(f'{d:g}' for d in SPHERE_DIAMETERS_MM)} mm. Got shape {centres.shape}."
        )
    # ring centre: circumcentre of the points in their best-fit plane
    c_mean = centres.mean(axis=0)
    _, _, vt = np.linalg.svd(centres - c_mean)
    n = vt[2]
    mirrored = False
    fits = []
    for k in range(6):
        excl = _make_exclude(c_mean, n, centres, k)
        fits.append(fit_sphere(arr, grid, centres[k], SPHERE_DIAMETERS_MM[k], exclude=excl, fix_centre=True,
                               sigma0=sigma0))
    bkg = np.nanmedian([f["background"] for f in fits if f is not None]) if any(fits) else np.nan
    loc = _finish(centres, c_mean, n, fits, ["manual"] * 6, "manual", bkg)
    loc.info.update({"mirrored": mirrored})
    return loc


# ----------------------------------------------------------------------------- preview picture
def _draw(rgb: np.ndarray, cy: float, cx: float, radius_px: float, colour) -> None:
    h, w, _ = rgb.shape
    t = np.linspace(0, 2 * np.pi, 180)
    for rr in (radius_px, radius_px + 0.5):
        ys = np.round(cy + rr * np.sin(t)).astype(int)
        xs = np.round(cx + rr * np.cos(t)).astype(int)
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        rgb[ys[ok], xs[ok]] = colour
    for d in range(-3, 4):
        for yy, xx in ((int(round(cy)) + d, int(round(cx))), (int(round(cy)), int(round(cx)) + d)):
            if 0 <= yy < h and 0 <= xx < w:
                rgb[yy, xx] = colour


def _rgb_image(plane: np.ndarray, marks, spacing: float, scale: int) -> sitk.Image:
    lo, hi = np.percentile(plane, 1), np.percentile(plane, 99.8)
    grey = np.clip((plane - lo) / max(hi - lo, 1e-12), 0, 1)
    grey = np.kron(grey, np.ones((scale, scale)))
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    for (py, px, radius_mm, colour) in marks:
        _draw(rgb, (py + 0.5) * scale - 0.5, (px + 0.5) * scale - 0.5, radius_mm / spacing * scale, colour)
    img = sitk.GetImageFromArray(rgb[::-1] if False else rgb, isVector=True)
    return img


def _preview_from_search(vol, origin, g, found: pd.DataFrame | None) -> sitk.Image:
    if found is not None and len(found):
        zc = float(np.mean(found["centre_z"]))
        k = int(np.clip(round((zc - origin[2]) / g), 0, vol.shape[0] - 1))
    else:
        k = int(np.argmax(vol.reshape(vol.shape[0], -1).max(axis=1)))
    marks = []
    if found is not None:
        for _, row in found.iterrows():
            colour = (0, 255, 0) if bool(row.get("fitted", True)) else (255, 0, 0)
            marks.append(((row["centre_y"] - origin[1]) / g, (row["centre_x"] - origin[0]) / g,
                          row["sphere_mm"] / 2.0, colour))
    return _rgb_image(vol[k], marks, g, scale=3)


def preview_image(image: sitk.Image, localization: Localization | None = None, *,
                  background_rois: pd.DataFrame | None = None) -> sitk.Image:
    """A 2D RGB picture (uint8) of the sphere plane with the found spheres circled.

    Green: fitted sphere; yellow: placed by the ring; cyan: manual; magenta: the 37 mm
    background ROIs of the sphere plane.  Write it with
    ``SimpleITK.WriteImage(preview, "spheres.png")``.

    Parameters
    ----------
    image : SimpleITK.Image
        The phantom scan.
    localization : Localization, optional
        Where the spheres are; without it the picture shows the plane of the hottest voxel.
    background_rois : pandas.DataFrame, optional
        ``PhantomMeasurement.background_rois`` (``plane_mm, x, y, z``); the ROIs of the
        sphere plane are drawn.

    Returns
    -------
    SimpleITK.Image
        A 2D RGB image.
    """
    arr = np.nan_to_num(sitk.GetArrayViewFromImage(image).astype(np.float64), nan=0.0)
    vol, origin, g = _search_grid(image, arr)
    if localization is None:
        return _preview_from_search(vol, origin, g, None)
    df = localization.spheres.copy()
    df["fitted"] = df["source"] != "ring"
    colours = {"fit": (0, 255, 0), "ring": (255, 255, 0), "manual": (0, 255, 255)}
    zc = float(localization.ring_centre[2])
    k = int(np.clip(round((zc - origin[2]) / g), 0, vol.shape[0] - 1))
    marks = [((r.centre_y - origin[1]) / g, (r.centre_x - origin[0]) / g, r.sphere_mm / 2.0, colours[r.source])
             for r in df.itertuples()]
    if background_rois is not None and len(background_rois):
        plane = background_rois[background_rois["plane_mm"] == 0.0]
        marks += [((r.y - origin[1]) / g, (r.x - origin[0]) / g, max(SPHERE_DIAMETERS_MM) / 2.0, (255, 0, 255))
                  for r in plane.itertuples()]
    return _rgb_image(vol[k], marks, g, scale=3)
