"""EARL-style accreditation of PET scanners with the NEMA NU 2 / IEC body phantom.

Measure a phantom scan (:func:`measure`), check it against EARL1/EARL2 (:func:`check`,
:func:`verdict`), find the harmonising Gaussian post-filter (:func:`calibrate`) and apply it
to patient images (:func:`apply_filter`, :func:`read_calibration`).
"""

from sitekit.harmonize.earl import geometry
from sitekit.harmonize.earl._calibrate import (
    CalibrationResult,
    calibrate,
    calibration_json,
    calibration_qc,
)
from sitekit.harmonize.earl._check import check, verdict
from sitekit.harmonize.earl._dicom import write_dicom_series
from sitekit.harmonize.earl._fill import Compartment, FillDescription, decay_correct, read_fill
from sitekit.harmonize.earl._filter import (
    MAX_FWHM_MM,
    apply_filter,
    read_calibration,
    read_calibration_file,
)
from sitekit.harmonize.earl._image import read_phantom
from sitekit.harmonize.earl._localize import Localization, locate_spheres, preview_image
from sitekit.harmonize.earl._measure import (
    PhantomMeasurement,
    measure,
    measure_phantom,
    read_centres,
)
from sitekit.harmonize.earl._physics import (
    analytic_recovery,
    sphere_centre_recovery,
    sphere_profile,
)
from sitekit.harmonize.earl._standards import Standard, list_standards, load_standard
from sitekit.harmonize.earl.geometry import (
    F18_HALF_LIFE_S,
    LUNG_INSERT_DIAMETER_MM,
    RING_RADIUS_MM,
    SPHERE_DIAMETERS_MM,
    SPHERE_PLANE_FROM_LID_MM,
    PhantomGeometry,
)

__all__ = [
    "apply_filter",
    "MAX_FWHM_MM",
    "write_dicom_series",
    "read_calibration",
    "read_calibration_file",
    "measure",
    "measure_phantom",
    "check",
    "verdict",
    "calibrate",
    "calibration_json",
    "calibration_qc",
    "CalibrationResult",
    "PhantomMeasurement",
    "Localization",
    "geometry",
    "locate_spheres",
    "preview_image",
    "read_phantom",
    "read_centres",
    "load_standard",
    "list_standards",
    "Standard",
    "analytic_recovery",
    "sphere_centre_recovery",
    "sphere_profile",
    "F18_HALF_LIFE_S",
    "LUNG_INSERT_DIAMETER_MM",
    "RING_RADIUS_MM",
    "SPHERE_DIAMETERS_MM",
    "SPHERE_PLANE_FROM_LID_MM",
    "PhantomGeometry",
    "Compartment",
    "FillDescription",
    "decay_correct",
    "read_fill",
]
