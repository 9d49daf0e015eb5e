"""Segmentation metrics in physical units: overlap, surfaces, autoPET volumes, lesions, PET values."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sitekit._validation import check_number
from sitekit.exceptions import ValidationError

__all__ = ["segmentation_metrics", "METRIC_NAMES", "check_same_grid", "mask_array"]

#: 18-connectivity (faces and edges, no corners): autoPET's component definition.
STRUCTURE_18 = ndimage.generate_binary_structure(3, 2)

#: Radius (mm) of a 1 mL sphere (SUVpeak).
PEAK_RADIUS_MM = (3.0 * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)

#: Keys of :func:`segmentation_metrics` (the PET-value keys only when an image is given).
METRIC_NAMES = (
    "dice", "hd95_mm", "msd_mm", "surface_dice", "fpv_ml", "fnv_ml",
    "lesions_tp", "lesions_fp", "lesions_fn", "lesion_f1", "mtv_pred_ml", "mtv_ref_ml",
)
PET_METRIC_NAMES = (
    "tlg_pred", "tlg_ref", "suvmax_pred", "suvmax_ref", "suvmean_pred", "suvmean_ref",
    "suvpeak_pred", "suvpeak_ref",
)

_GRID_TOL = 1e-4


def check_same_grid(a: sitk.Image, b: sitk.Image, *, names: tuple[str, str] = ("pred", "ref")) -> None:
    """Raise :class:`ValidationError` unless ``a`` and ``b`` share size, spacing, origin and direction."""
    for img, name in zip((a, b), names):
        if not isinstance(img, sitk.Image) or img.GetDimension() != 3:
            raise ValidationError(f"'{name}' must be a 3-D SimpleITK image. Got {type(img).__name__}.")
    problems = []
    if a.GetSize() != b.GetSize():
        problems.append(f"size {a.GetSize()} vs {b.GetSize()}")
    for what, get in (("spacing", sitk.Image.GetSpacing), ("origin", sitk.Image.GetOrigin),
                      ("direction", sitk.Image.GetDirection)):
        va, vb = np.asarray(get(a)), np.asarray(get(b))
        if not np.allclose(va, vb, atol=_GRID_TOL, rtol=0):
            problems.append(f"{what} {tuple(np.round(va, 4))} vs {tuple(np.round(vb, 4))}")
    if problems:
        raise ValidationError(
            f"'{names[0]}' and '{names[1]}' are on different grids ({'; '.join(problems)}). "
            f"Resample one onto the other first (e.g. SimpleITK.Resample(mask, image, "
            "SimpleITK.Transform(), SimpleITK.sitkNearestNeighbor))."
        )


def mask_array(mask: sitk.Image) -> np.ndarray:
    """Boolean (z, y, x) array of the non-zero voxels of a mask."""
    arr = sitk.GetArrayViewFromImage(mask)
    return np.asarray(arr != 0)


def _surface(m: np.ndarray) -> np.ndarray:
    # object voxels with a face neighbour outside the object (the image border counts as outside)
    return m & ~ndimage.binary_erosion(m, border_value=0)


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing_zyx) -> np.ndarray:
    """Distances (mm) from every surface voxel of ``a`` to the nearest surface voxel of ``b``."""
    sa, sb = _surface(a), _surface(b)
    dist = ndimage.distance_transform_edt(~sb, sampling=spacing_zyx)
    return dist[sa]


def _components_volume_missing(a: np.ndarray, b: np.ndarray, voxel_ml: float) -> tuple[float, int, int]:
    """Volume (mL) and count of 18-connected components of ``a`` touching no voxel of ``b``; and the count of all."""
    labels, n = ndimage.label(a, structure=STRUCTURE_18)
    if n == 0:
        return 0.0, 0, 0
    hit = np.zeros(n + 1, bool)
    hit[np.unique(labels[b & a])] = True
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    missing = ~hit
    missing[0] = False
    return float(sizes[missing].sum() * voxel_ml), int(missing.sum()), n


def _peak(values: np.ndarray, region: np.ndarray, spacing_zyx) -> float:
    if not region.any():
        return math.nan
    r = PEAK_RADIUS_MM
    half = [int(math.floor(r / s)) for s in spacing_zyx]
    zz, yy, xx = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_zyx)], indexing="ij")
    ball = ((zz**2 + yy**2 + xx**2) <= r * r + 1e-9).astype(np.float64)
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    total = ndimage.correlate(v, ball, mode="constant", cval=0.0)
    count = ndimage.correlate(finite.astype(np.float64), ball, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total / count
    cand = means[region & (count > 0)]
    return float(cand.max()) if cand.size else math.nan


def _region_values(values: np.ndarray, region: np.ndarray) -> dict:
    vals = values[region]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return {"max": math.nan, "mean": math.nan}
    return {"max": float(vals.max()), "mean": float(vals.mean())}


def segmentation_metrics(
    pred: sitk.Image,
    ref: sitk.Image,
    image: sitk.Image | None = None,
    *,
    tolerance_mm: float = 2.0,
) -> dict:
    """Compare a predicted mask with a reference mask, in physical units.

    Parameters
    ----------
    pred : SimpleITK.Image
        Predicted mask (non-zero = lesion), 3-D.
    ref : SimpleITK.Image
        Reference mask on the same grid as ``pred``.
    image : SimpleITK.Image, optional
        The PET image (SUV) on the same grid; adds TLG and SUV values of both regions.
    tolerance_mm : float, default=2.0
        Tolerance of the surface Dice.

    Returns
    -------
    dict
        ``dice``; ``hd95_mm`` (the larger of the two directed 95th percentiles of
        surface-to-surface distances); ``msd_mm`` (mean of the distances of both surfaces to
        the other); ``surface_dice`` (fraction of the surface voxels of both masks within
        ``tolerance_mm`` of the other surface); ``fpv_ml`` / ``fnv_ml`` (autoPET: total volume
        of the predicted components touching no reference voxel / of the reference components
        touching no predicted voxel; components are 18-connected); ``lesions_tp``,
        ``lesions_fp``, ``lesions_fn`` (reference components hit, predicted components that
        hit nothing, reference components missed) and ``lesion_f1``; ``mtv_pred_ml``,
        ``mtv_ref_ml``; with ``image``: ``tlg_pred``, ``tlg_ref`` (MTV x SUVmean),
        ``suvmax_*``, ``suvmean_*``, ``suvpeak_*`` (the highest mean over a 1 mL sphere
        centred on a voxel of the region); and ``ref_empty`` (bool).

    Raises
    ------
    ValidationError
        Masks (or the image) on different grids, or not 3-D SimpleITK images.

    Notes
    -----
    Surface voxels are the voxels of a mask with a face neighbour outside it (voxels on
    the image border count as surface). Distances are Euclidean between voxel centres
    with the voxel spacing (anisotropic voxels are handled).

    Empty masks (the convention of this function; autoPET changed its own between
    editions): with an empty reference, ``dice`` is 1.0 when the prediction is empty too
    and 0.0 otherwise, every predicted voxel counts as false-positive volume,
    ``lesion_f1`` is 1.0 when nothing is predicted and 0.0 otherwise; the surface
    metrics (``hd95_mm``, ``msd_mm``, ``surface_dice``) are NaN whenever either mask is
    empty (there is no surface to measure), and the SUV values of an empty region are
    NaN. Non-finite image voxels are left out of the SUV statistics.

    Examples
    --------
    >>> import numpy as np, SimpleITK as sitk
    >>> a = np.zeros((10, 10, 10), np.uint8); a[3:7, 3:7, 3:7] = 1
    >>> b = np.zeros_like(a); b[3:7, 3:7, 4:8] = 1
    >>> pred, ref = sitk.GetImageFromArray(a), sitk.GetImageFromArray(b)
    >>> m = segmentation_metrics(pred, ref)
    >>> round(m["dice"], 3), m["fpv_ml"], m["lesion_f1"]
    (0.75, 0.0, 1.0)
    """
    check_same_grid(pred, ref)
    check_number(tolerance_mm, name="tolerance_mm", owner="segmentation_metrics", low=0)
    p, r = mask_array(pred), mask_array(ref)
    spacing_zyx = tuple(float(s) for s in reversed(pred.GetSpacing()))
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    n_p, n_r = int(p.sum()), int(r.sum())
    n_pr = int((p & r).sum())
    out: dict = {}
    out["dice"] = 2.0 * n_pr / (n_p + n_r) if (n_p + n_r) else 1.0
    if n_p and n_r:
        d_pr = _surface_distances(p, r, spacing_zyx)
        d_rp = _surface_distances(r, p, spacing_zyx)
        out["hd95_mm"] = float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))
        out["msd_mm"] = float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))
        tol = float(tolerance_mm) + 1e-9
        out["surface_dice"] = float(((d_pr <= tol).sum() + (d_rp <= tol).sum()) / (d_pr.size + d_rp.size))
    else:
        out["hd95_mm"] = out["msd_mm"] = out["surface_dice"] = math.nan
    fpv, n_fp, n_pred_comp = _components_volume_missing(p, r, voxel_ml)
    fnv, n_fn, n_ref_comp = _components_volume_missing(r, p, voxel_ml)
    out["fpv_ml"], out["fnv_ml"] = fpv, fnv
    tp = n_ref_comp - n_fn
    out["lesions_tp"], out["lesions_fp"], out["lesions_fn"] = tp, n_fp, n_fn
    denom = 2 * tp + n_fp + n_fn
    out["lesion_f1"] = 2.0 * tp / denom if denom else 1.0
    out["mtv_pred_ml"], out["mtv_ref_ml"] = n_p * voxel_ml, n_r * voxel_ml
    if image is not None:
        check_same_grid(image, ref, names=("image", "ref"))
        values = sitk.GetArrayFromImage(image).astype(np.float64)
        for tag, region, n in (("pred", p, n_p), ("ref", r, n_r)):
            st = _region_values(values, region)
            out[f"suvmax_{tag}"] = st["max"]
            out[f"suvmean_{tag}"] = st["mean"]
            out[f"suvpeak_{tag}"] = _peak(values, region, spacing_zyx)
            out[f"tlg_{tag}"] = n * voxel_ml * st["mean"] if n else 0.0
    out["ref_empty"] = n_r == 0
    return out
