"""Image helpers of the EARL module: reading phantom scans, voxel <-> physical coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sitekit._typing import PathLike
from sitekit.exceptions import ValidationError
from sitekit.io import read_image

__all__ = ["read_phantom", "VoxelGrid"]


def read_phantom(path: PathLike) -> sitk.Image:
    """Read a phantom scan (NIfTI, NRRD, MetaImage or DICOM series directory) as float64.

    Uses :func:`sitekit.io.read_image` (which also gives MONOCHROME1 DICOM slices their
    stored activity values back).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    SimpleITK.Image
    """
    p = Path(path)
    image = read_image(p)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValidationError(f"Phantom scan '{p}' must be a 3D scalar image.")
    if image.GetPixelID() != sitk.sitkFloat64:
        meta = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
        image = sitk.Cast(image, sitk.sitkFloat64)
        for k, v in meta.items():
            image.SetMetaData(k, v)
    return image


class VoxelGrid:
    """Voxel <-> physical mapping of a SimpleITK image, vectorised (arrays are z, y, x)."""

    def __init__(self, image: sitk.Image) -> None:
        self.spacing = np.asarray(image.GetSpacing(), float)
        self.origin = np.asarray(image.GetOrigin(), float)
        self.direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
        self.size = np.asarray(image.GetSize(), int)  # x, y, z
        self.matrix = self.direction * self.spacing[None, :]  # physical = origin + M @ ijk
        self.inverse = np.linalg.inv(self.matrix)

    def to_physical(self, ijk) -> np.ndarray:
        """Continuous index (..., 3) in x, y, z order -> physical (..., 3)."""
        return np.asarray(ijk, float) @ self.matrix.T + self.origin

    def to_index(self, points) -> np.ndarray:
        """Physical (..., 3) -> continuous index (..., 3) in x, y, z order."""
        return (np.asarray(points, float) - self.origin) @ self.inverse.T

    def box(self, centre, half_width_mm) -> tuple[slice, slice, slice]:
        """Array slices (z, y, x) of the voxels within ``half_width_mm`` of a physical point.

        ``half_width_mm`` may be one number or three (physical x, y, z).
        """
        c = np.asarray(centre, float)
        offsets = np.array([[dx, dy, dz] for dx in (-1, 1) for dy in (-1, 1) for dz in (-1, 1)], float)
        corners = self.to_index(c + offsets * np.broadcast_to(np.asarray(half_width_mm, float), (3,)))
        lo = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, self.size - 1)
        hi = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 1, 1, self.size)
        return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])

    def coords(self, slices) -> np.ndarray:
        """Physical coordinates of the voxels of a (z, y, x) box, shape (nz, ny, nx, 3)."""
        sz, sy, sx = slices
        k, j, i = np.meshgrid(np.arange(sz.start, sz.stop), np.arange(sy.start, sy.stop),
                              np.arange(sx.start, sx.stop), indexing="ij")
        ijk = np.stack([i, j, k], axis=-1).astype(float)
        return self.to_physical(ijk)

    @property
    def voxel_volume_ml(self) -> float:
        """Voxel volume in mL."""
        return float(np.prod(self.spacing)) / 1000.0
