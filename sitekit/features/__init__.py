"""Radiomics feature extraction with pyradiomics over multi-site manifests.

:func:`extract` runs a manifest (one row per case) in-process or on a Dask cluster, records
per-case errors and can resume an interrupted run; :func:`extract_case` extracts one
in-memory case; :func:`load_params` validates a pyradiomics parameter file (the shipped PET
default, :data:`DEFAULT_PARAMS`, when None).
"""

from sitekit.features._case import extract_case
from sitekit.features._extract import ERROR_COLUMNS, extract, output_paths
from sitekit.features._manifest import PROVENANCE_COLUMNS, REQUIRED_COLUMNS, read_manifest
from sitekit.features._params import DEFAULT_PARAMS, load_params, params_hash
from sitekit.features._suv import suv_bw_factor, to_suv_bw

__all__ = [
    "DEFAULT_PARAMS",
    "ERROR_COLUMNS",
    "PROVENANCE_COLUMNS",
    "REQUIRED_COLUMNS",
    "extract",
    "extract_case",
    "load_params",
    "output_paths",
    "params_hash",
    "read_manifest",
    "suv_bw_factor",
    "to_suv_bw",
]
