"""Site profiles: how a scanner turns an activity distribution into an image.

The imaging model (the same for phantoms and patients):

1. the true activity is rendered on a fine grid (spacing ``voxel / k`` <= 1 mm per axis,
   partial volume from signed distances);
2. it is blurred with the point-spread function: a Gaussian of the profile's FWHM per axis,
   optionally with edge overshoot as in PSF-modelling reconstructions,
   ``PSF = (1 + k) G(sigma) - k G(1.6 sigma)`` (integral 1, ringing at edges);
3. the fine grid is averaged into the profile's voxels;
4. the calibration bias multiplies the image (``1 + bias``);
5. count-like noise is added: a spatially correlated Gaussian field (white noise smoothed
   with a Gaussian of ``noise_fwhm_mm``) with standard deviation ``noise_cov * sqrt(ref * value)``,
   so that a uniform region of value ``ref`` has the coefficient of variation ``noise_cov``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sitekit._validation import check_random_state
from sitekit.exceptions import ValidationError

__all__ = ["SiteProfile", "SITE_PROFILES", "get_profile", "render"]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class SiteProfile:
    """A site's scanner and reconstruction, as far as image formation is concerned.

    Parameters
    ----------
    name : str
        Site name.
    fwhm_mm : tuple of 3 float
        System resolution (Gaussian PSF FWHM) along x, y, z.
    voxel_mm : tuple of 3 float
        Voxel size along x, y, z.
    noise_cov : float
        Coefficient of variation of a uniform region at the reference level.
    calibration_bias : float
        Relative calibration error (0.03 = the scanner reads 3 % high).
    overshoot : float, default=0
        Edge overshoot of PSF reconstructions (0 = pure Gaussian).
    noise_fwhm_mm : float, default=6
        Correlation length of the noise.
    description : str, default=""
    """

    name: str
    fwhm_mm: tuple[float, float, float]
    voxel_mm: tuple[float, float, float]
    noise_cov: float
    calibration_bias: float
    overshoot: float = 0.0
    noise_fwhm_mm: float = 6.0
    description: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)

    def replace(self, **changes) -> SiteProfile:
        """A copy with some fields changed."""
        d = self.to_dict()
        d.update(changes)
        return SiteProfile(**d)


#: The four sample sites.  They differ the way scanners do: resolution (and PSF
#: overshoot), voxel size (isotropic and anisotropic), noise and calibration.
SITE_PROFILES: dict[str, SiteProfile] = {
    p.name: p
    for p in (
        SiteProfile("site_A", (5.0, 5.0, 5.0), (2.0, 2.0, 2.0), 0.12, 0.02, overshoot=0.15,
                    description="PSF+TOF reconstruction, 2 mm voxels, sharp with edge overshoot"),
        SiteProfile("site_B", (6.5, 6.5, 6.5), (3.0, 3.0, 3.0), 0.10, -0.03,
                    description="OSEM with TOF, 3 mm voxels"),
        SiteProfile("site_C", (8.5, 8.5, 8.5), (4.0, 4.0, 4.0), 0.08, 0.04,
                    description="older OSEM, 4 mm voxels, smooth"),
        SiteProfile("site_D", (6.0, 6.0, 7.5), (2.7, 2.7, 3.27), 0.15, -0.01, overshoot=0.05,
                    description="anisotropic voxels and resolution, noisy (short scan)"),
    )
}


def get_profile(profile: str | SiteProfile) -> SiteProfile:
    """Return a :class:`SiteProfile` by name (or pass one through)."""
    if isinstance(profile, SiteProfile):
        return profile
    try:
        return SITE_PROFILES[profile]
    except KeyError:
        raise ValidationError(
            f"Unknown site profile {profile!r}; known profiles: {', '.join(SITE_PROFILES)}."
        ) from None


def _fine_factor(voxel_mm) -> np.ndarray:
    return np.maximum(1, np.ceil(np.asarray(voxel_mm, float) / 1.0 - 1e-9)).astype(int)


def render(
    density: Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray],
    profile: SiteProfile,
    *,
    origin_mm,
    size,
    noise_ref: float,
    random_state=None,
    noise: bool = True,
    occupancy: Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray] | None = None,
) -> tuple[sitk.Image, sitk.Image | None]:
    """Image a density through a site profile.

    Parameters
    ----------
    density : callable
        ``density(x, y, z, h)`` -> values on the fine grid; ``x, y, z`` are physical
        coordinates (mm) of fine-voxel centres broadcastable as (nz, 1, 1), (1, ny, 1),
        (1, 1, nx); ``h`` is the mean fine spacing (for partial-volume edges).
    profile : SiteProfile
    origin_mm : sequence of 3 float
        Physical position of the centre of the first voxel.
    size : sequence of 3 int
        Number of voxels along x, y, z.
    noise_ref : float
        Value of a uniform region whose COV is ``profile.noise_cov``.
    random_state : int, Generator or None
    noise : bool, default=True
        Add noise (False gives the noise-free expectation).
    occupancy : callable, optional
        Like ``density``; its voxel average >= 0.5 gives a mask (the second return value).

    Returns
    -------
    image : SimpleITK.Image (float32)
    mask : SimpleITK.Image (uint8) or None
    """
    rng = check_random_state(random_state)
    vox = np.asarray(profile.voxel_mm, float)
    k = _fine_factor(vox)
    fine = vox / k
    size = np.asarray(size, int)
    origin = np.asarray(origin_mm, float)
    nfine = size * k
    # fine-voxel centres: voxel i covers [origin + (i-0.5) vox, origin + (i+0.5) vox]
    axes = [origin[d] - vox[d] / 2 + (np.arange(nfine[d]) + 0.5) * fine[d] for d in range(3)]
    x = axes[0][None, None, :]
    y = axes[1][None, :, None]
    z = axes[2][:, None, None]
    h = float(np.mean(fine))
    act = np.asarray(density(x, y, z, h), dtype=np.float32)
    act = np.broadcast_to(act, (nfine[2], nfine[1], nfine[0])).astype(np.float32, copy=True)
    sigma_fine = (np.asarray(profile.fwhm_mm, float) * FWHM_TO_SIGMA / fine)[::-1]  # z, y, x
    blurred = ndimage.gaussian_filter(act, sigma_fine, mode="nearest", truncate=4.0)
    if profile.overshoot:
        wide = ndimage.gaussian_filter(act, 1.6 * sigma_fine, mode="nearest", truncate=4.0)
        blurred = (1.0 + profile.overshoot) * blurred - profile.overshoot * wide
    del act
    img = _block_mean(blurred, k[::-1])
    img *= 1.0 + profile.calibration_bias
    if noise and profile.noise_cov > 0:
        field = rng.standard_normal(img.shape).astype(np.float32)
        s = (profile.noise_fwhm_mm * FWHM_TO_SIGMA / vox)[::-1]
        field = ndimage.gaussian_filter(field, s, mode="wrap")
        field /= field.std()
        img += profile.noise_cov * np.sqrt(noise_ref * np.clip(img, 0.0, None)) * field
    image = sitk.GetImageFromArray(img.astype(np.float32))
    image.SetSpacing(tuple(float(v) for v in vox))
    image.SetOrigin(tuple(float(v) for v in origin))
    mask = None
    if occupancy is not None:
        occ = np.broadcast_to(np.asarray(occupancy(x, y, z, h), np.float32), blurred.shape)
        m = (_block_mean(np.ascontiguousarray(occ), k[::-1]) >= 0.5).astype(np.uint8)
        mask = sitk.GetImageFromArray(m)
        mask.CopyInformation(image)
    return image, mask


def _block_mean(a: np.ndarray, k) -> np.ndarray:
    kz, ky, kx = (int(v) for v in k)
    nz, ny, nx = a.shape[0] // kz, a.shape[1] // ky, a.shape[2] // kx
    return a.reshape(nz, kz, ny, ky, nx, kx).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def occupancy_from_sdf(sdf: np.ndarray, h: float) -> np.ndarray:
    """Partial-volume fraction of a fine voxel of size ``h`` from a signed distance."""
    return np.clip(0.5 - sdf / h, 0.0, 1.0)
