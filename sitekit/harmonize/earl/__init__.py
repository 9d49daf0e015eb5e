"""EARL-style accreditation of PET scanners with the NEMA NU 2 / IEC body phantom."""

from sitekit.harmonize.earl._fill import FillDescription, decay_correct, read_fill
from sitekit.harmonize.earl._filter import apply_filter, read_calibration
from sitekit.harmonize.earl._geometry import (
    F18_HALF_LIFE_S,
    LUNG_INSERT_DIAMETER_MM,
    RING_RADIUS_MM,
    SPHERE_DIAMETERS_MM,
    SPHERE_PLANE_FROM_LID_MM,
    PhantomGeometry,
)

__all__ = [
    "apply_filter",
    "read_calibration",
    "F18_HALF_LIFE_S",
    "LUNG_INSERT_DIAMETER_MM",
    "RING_RADIUS_MM",
    "SPHERE_DIAMETERS_MM",
    "SPHERE_PLANE_FROM_LID_MM",
    "PhantomGeometry",
    "FillDescription",
    "decay_correct",
    "read_fill",
]
