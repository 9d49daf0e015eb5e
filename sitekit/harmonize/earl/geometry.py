"""Geometry of the NEMA NU 2 / IEC body phantom.

Phantom coordinates (mm): origin at the centre of the sphere ring in the sphere plane,
z along the phantom axis pointing towards the lid, x/y in the transverse plane.  Spheres go
round counter-clockwise, 10-13-17-22-28-37 mm, 60 degrees apart, the 10 mm sphere at angle
``0`` (the +x axis).

The body cross-section is the IEC shape: a half disc of radius 147 mm joined along its
diameter (the *base line*) to a half stadium (radius 77 mm around a 140 mm segment), about
294 x 224 mm inside.  Its curved (anterior) side faces the gap between the 10 mm and the
13 mm spheres (:data:`BODY_ANTERIOR_ANGLE_DEG` = 30 degrees) and the flat side the gap
between the 22 mm and the 28 mm spheres; the ring centre (the lung-insert axis) lies
:data:`BODY_BASE_OFFSET_MM` = 35 mm from the base line towards the curved side, half-way
between the curved and the flat wall.  Both facts were measured on a real scan of the
phantom (the outline at half the background level fits this shape to within 2 % of its
area).  The interior length is 180 mm with the sphere plane 70 mm below the lid's inner
face.  Sphere walls and the lung insert's wall are not modelled (cold walls of ~1 mm lower
small-sphere RCs slightly).

This module is public: :mod:`sitekit.datasets` renders synthetic phantoms from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SPHERE_DIAMETERS_MM", "SPHERE_VOLUMES_ML", "RING_RADIUS_MM", "RING_STEP_DEG",
    "SPHERE_PLANE_FROM_LID_MM", "INTERIOR_LENGTH_MM", "LUNG_INSERT_DIAMETER_MM",
    "BODY_HALF_DISC_RADIUS_MM", "BODY_BASE_OFFSET_MM", "BODY_ANTERIOR_ANGLE_DEG",
    "BODY_STADIUM_RADIUS_MM", "BODY_STADIUM_HALF_LENGTH_MM", "BACKGROUND_VOLUME_ML",
    "PEAK_SPHERE_DIAMETER_MM", "F18_HALF_LIFE_S", "PhantomGeometry", "sphere_centres_phantom",
    "body_sdf", "lung_sdf",
]

SPHERE_DIAMETERS_MM: tuple[float, ...] = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
SPHERE_VOLUMES_ML: tuple[float, ...] = (0.52, 1.15, 2.57, 5.57, 11.49, 26.52)
RING_RADIUS_MM = 57.2
RING_STEP_DEG = 60.0
SPHERE_PLANE_FROM_LID_MM = 70.0
INTERIOR_LENGTH_MM = 180.0
LUNG_INSERT_DIAMETER_MM = 51.0
BODY_HALF_DISC_RADIUS_MM = 147.0
BODY_BASE_OFFSET_MM = 35.0
BODY_ANTERIOR_ANGLE_DEG = 30.0
BODY_STADIUM_RADIUS_MM = 77.0
BODY_STADIUM_HALF_LENGTH_MM = 70.0
BACKGROUND_VOLUME_ML = 9700.0
PEAK_SPHERE_DIAMETER_MM = 12.4  # 1 mL sphere
F18_HALF_LIFE_S = 6586.2


@dataclass(frozen=True)
class PhantomGeometry:
    """Placement of the phantom in scanner (physical, mm) coordinates.

    Parameters
    ----------
    centre : tuple of float, default=(0, 0, 0)
        Physical position (x, y, z) of the sphere-ring centre in the sphere plane.
    rotation_deg : float, default=0
        In-plane rotation of the phantom about its axis.
    tilt_deg : float, default=0
        Tilt of the phantom axis about the scanner x axis.
    mirrored : bool, default=False
        Sphere order clockwise instead of counter-clockwise (a phantom scanned feet-first
        or viewed from the other side).
    """

    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_deg: float = 0.0
    tilt_deg: float = 0.0
    mirrored: bool = False

    def rotation(self) -> np.ndarray:
        """Matrix mapping phantom coordinates to scanner directions (3 x 3)."""
        a = np.deg2rad(self.rotation_deg)
        t = np.deg2rad(self.tilt_deg)
        rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
        m = np.diag([1.0, -1.0, 1.0]) if self.mirrored else np.eye(3)
        return rx @ rz @ m

    def to_physical(self, points: np.ndarray) -> np.ndarray:
        """Phantom coordinates (..., 3) -> physical coordinates (..., 3)."""
        return np.asarray(points) @ self.rotation().T + np.asarray(self.centre)

    def to_phantom(self, points: np.ndarray) -> np.ndarray:
        """Physical coordinates (..., 3) -> phantom coordinates (..., 3)."""
        return (np.asarray(points) - np.asarray(self.centre)) @ self.rotation()

    def sphere_centres(self) -> np.ndarray:
        """Physical centres of the six spheres, shape (6, 3), in SPHERE_DIAMETERS_MM order."""
        return self.to_physical(sphere_centres_phantom())


def sphere_centres_phantom() -> np.ndarray:
    """Sphere centres in phantom coordinates.

    Returns
    -------
    ndarray of shape (6, 3)
        In ``SPHERE_DIAMETERS_MM`` order.
    """
    ang = np.deg2rad(np.arange(6) * RING_STEP_DEG)
    return np.stack([RING_RADIUS_MM * np.cos(ang), RING_RADIUS_MM * np.sin(ang), np.zeros(6)], axis=1)


def body_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside) to the body compartment, in phantom coordinates.

    Exact outside and on the boundary of the cross-section; inside it is the distance to the
    nearer of the two pieces' walls, a lower bound on the true distance.

    Parameters
    ----------
    x, y, z : ndarray
        Phantom coordinates (mm), broadcastable.

    Returns
    -------
    ndarray
    """
    a = np.deg2rad(BODY_ANTERIOR_ANGLE_DEG)
    # body frame: v along the anterior direction, u across it (the shape is symmetric in u)
    u = np.abs(x * np.sin(a) - y * np.cos(a))
    v = x * np.cos(a) + y * np.sin(a) + BODY_BASE_OFFSET_MM
    upper = np.hypot(u, v) - BODY_HALF_DISC_RADIUS_MM
    du = np.clip(u - BODY_STADIUM_HALF_LENGTH_MM, 0.0, None)
    lower = np.hypot(du, v) - BODY_STADIUM_RADIUS_MM
    cross = np.where(v >= 0.0, upper, lower)
    z_top = SPHERE_PLANE_FROM_LID_MM
    z_bottom = SPHERE_PLANE_FROM_LID_MM - INTERIOR_LENGTH_MM
    axial = np.maximum(z - z_top, z_bottom - z)
    return np.maximum(cross, axial)


def lung_sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Signed distance (mm) to the cold lung insert (a cylinder along the phantom axis).

    Parameters
    ----------
    x, y, z : ndarray
        Phantom coordinates (mm), broadcastable.

    Returns
    -------
    ndarray
    """
    return np.hypot(x, y) - LUNG_INSERT_DIAMETER_MM / 2.0 + 0.0 * z
