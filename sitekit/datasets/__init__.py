"""Physics-based synthetic multi-site data, and loaders for the shipped ``sample_data/``."""

from sitekit.datasets._phantom import PhantomScan, make_fill, make_phantom_scan
from sitekit.datasets._profiles import SITE_PROFILES, SiteProfile, get_profile

__all__ = [
    "SITE_PROFILES",
    "SiteProfile",
    "get_profile",
    "PhantomScan",
    "make_fill",
    "make_phantom_scan",
]
