"""Automatic sphere localization over rotations, offsets, tilts, mirroring and voxel sizes (issue 4)."""

import numpy as np
import pytest
import SimpleITK as sitk

from sitekit.exceptions import SpheresNotFoundError, ValidationError
from sitekit.harmonize import earl

from ._data import phantom

SWEEP = [
    # rotation (deg), centre offset (mm), tilt (deg), mirrored, voxel (mm), system FWHM (mm)
    (0.0, (0.0, 0.0, 0.0), 0.0, False, (4.0, 4.0, 4.0), 8.0),
    (37.0, (25.0, -30.0, 3.0), 0.0, True, (3.0, 3.0, 3.0), 6.5),
    (123.0, (-15.0, 10.0, -2.0), 4.0, False, (2.7, 2.7, 3.27), 7.0),
    (200.0, (5.0, 40.0, 0.0), -3.0, True, (5.0, 5.0, 5.0), 9.0),
    (290.0, (40.0, 20.0, 1.0), 2.0, False, (2.0, 2.0, 4.0), 6.0),
]


@pytest.mark.parametrize("rotation, offset, tilt, mirrored, voxel, fwhm", SWEEP)
def test_localization_sweep(rotation, offset, tilt, mirrored, voxel, fwhm):
    scan = phantom(fwhm, voxel, noise=True, seed=7, centre=offset, rotation=rotation, tilt=tilt,
                   mirrored=mirrored, fov_centre=offset, fov=(200.0, 200.0, 56.0))
    loc = earl.locate_spheres(scan.image)
    truth = scan.truth[["centre_x", "centre_y", "centre_z"]].to_numpy()
    err = np.linalg.norm(loc.centres - truth, axis=1)
    # every sphere within a third of the largest voxel side + 0.5 mm (noise)
    assert err.max() < max(voxel) / 3 + 0.5, err
    assert loc.tilt_deg == pytest.approx(abs(tilt), abs=1.0)
    assert list(loc.spheres["sphere_mm"]) == [10.0, 13.0, 17.0, 22.0, 28.0, 37.0]


def test_not_found_raises_with_a_preview(tmp_path):
    # a uniform cylinder: no spheres
    zz, yy, xx = np.mgrid[0:20, 0:60, 0:60]
    arr = np.where((xx - 30) ** 2 + (yy - 30) ** 2 < 25**2, 2000.0, 0.0)
    arr += np.random.default_rng(0).normal(0, 100, arr.shape)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((4.0, 4.0, 4.0))
    with pytest.raises(SpheresNotFoundError) as info:
        earl.locate_spheres(img)
    assert "--centres" in str(info.value) or "sphere" in str(info.value)
    prev = info.value.preview
    assert prev is not None and prev.GetDimension() == 2 and prev.GetNumberOfComponentsPerPixel() == 3
    sitk.WriteImage(prev, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0
    assert isinstance(info.value, ValidationError)


def test_manual_centres_validation():
    img = phantom(8.0, (4.0, 4.0, 4.0), centre=(2.0, 2.0, 2.0)).image
    with pytest.raises(ValidationError, match="6 finite"):
        earl.locate_spheres(img, centres=np.zeros((5, 3)))


def test_preview_image_marks_spheres():
    scan = phantom(8.0, (4.0, 4.0, 4.0), centre=(2.0, 2.0, 2.0))
    loc = earl.locate_spheres(scan.image)
    prev = earl.preview_image(scan.image, loc)
    a = sitk.GetArrayFromImage(prev)
    assert a.dtype == np.uint8 and a.shape[2] == 3
    green = (a[..., 1] == 255) & (a[..., 0] == 0)
    assert green.sum() > 100  # six circles drawn
