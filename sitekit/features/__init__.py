"""Radiomics feature extraction with pyradiomics over multi-site manifests.

``extract`` runs a manifest (one row per case) in-process or on a Dask cluster, records
per-case errors and can resume an interrupted run; ``extract_case`` extracts one in-memory
case; ``load_params`` validates a pyradiomics parameter file (the shipped PET default when
None).
"""

from sitekit.features._case import extract_case
from sitekit.features._params import DEFAULT_PARAMS, load_params, params_hash

__all__ = ["DEFAULT_PARAMS", "extract_case", "load_params", "params_hash"]
