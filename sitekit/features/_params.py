"""pyradiomics parameter files: the shipped PET default, loading, schema validation, hashing."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

from sitekit._typing import PathLike
from sitekit.exceptions import CorruptFileError, MissingFileError, ValidationError

__all__ = ["DEFAULT_PARAMS", "load_params", "params_hash"]

#: The shipped default parameter file for PET SUV images (2 mm isotropic, bin width 0.25 SUV).
DEFAULT_PARAMS = Path(__file__).parent / "params" / "pet_default.yaml"

_PARAM_SUFFIXES = (".yaml", ".yml", ".json")


# Parsed parameter files by (resolved path, size, mtime): a YAML parse costs ~25 ms.
_PARSED: dict[tuple, object] = {}


def _read_param_file(path: Path) -> object:
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _PARSED:
        return copy.deepcopy(_PARSED[key])
    data = _parse_param_file(path)
    if key is not None:
        _PARSED[key] = copy.deepcopy(data)
    return data


def _parse_param_file(path: Path) -> object:
    if not path.exists():
        raise MissingFileError(
            f"Parameter file '{path}' does not exist; check the path or omit --params to use the "
            "shipped PET default."
        )
    suffix = path.suffix.lower()
    if suffix not in _PARAM_SUFFIXES:
        raise CorruptFileError(
            f"Parameter file '{path}' has suffix '{suffix}'; use a pyradiomics YAML (.yaml, .yml) "
            "or JSON (.json) parameter file."
        )
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            return json.loads(text)
        from ruamel.yaml import YAML  # dependency of pykwalify, hence of pyradiomics

        return YAML(typ="safe").load(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
        raise CorruptFileError(
            f"Parameter file '{path}' could not be parsed as {suffix[1:].upper()}: {exc}"
        ) from exc


def _to_plain(obj: object) -> object:
    """Turn ruamel/other mappings and sequences into plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _validate(data: object, where: str) -> dict:
    import pykwalify.core
    from pykwalify.errors import PyKwalifyException
    from radiomics import getParameterValidationFiles

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError(
            f"{where} must be a mapping with the keys 'setting', 'imageType', 'featureClass' "
            f"and/or 'voxelSetting'. Got {type(data).__name__} instead."
        )
    schema_file, schema_funcs = getParameterValidationFiles()
    log = logging.getLogger("pykwalify")
    old_level, old_propagate = log.level, log.propagate
    log.setLevel(logging.CRITICAL + 1)  # pykwalify logs every schema error; we raise instead
    log.propagate = False
    try:
        with warnings.catch_warnings():
            # pykwalify loads pyradiomics' schema functions with the deprecated load_module()
            warnings.simplefilter("ignore", DeprecationWarning)
            core = pykwalify.core.Core(
                source_data=copy.deepcopy(data), schema_files=[schema_file], extensions=[schema_funcs]
            )
            core.validate(raise_exception=True)
    except PyKwalifyException as exc:
        msg = " ".join(str(getattr(exc, "msg", None) or exc).split()).rstrip(".")
        raise ValidationError(
            f"{where} is not a valid pyradiomics parameter set: {msg}. See "
            "https://pyradiomics.readthedocs.io/en/latest/customization.html for the allowed keys."
        ) from exc
    except (TypeError, ValueError) as exc:  # raised by pyradiomics' schema functions
        raise ValidationError(f"{where} is not a valid pyradiomics parameter set: {exc}") from exc
    finally:
        log.setLevel(old_level)
        log.propagate = old_propagate
    return copy.deepcopy(data)


# Validated parameter sets by their canonical JSON: pykwalify takes ~25 ms per validation,
# which :func:`extract_case` would otherwise pay on every call.
_VALIDATED: dict[str, dict] = {}


def _cached_validate(data: object, where: str) -> dict:
    try:
        key = canonical_json(data) if isinstance(data, dict) else None
    except (TypeError, ValueError):
        key = None
    if key is not None and key in _VALIDATED:
        return _VALIDATED[key]
    out = _validate(data, where)
    if key is not None:
        _VALIDATED[key] = out
    return out


def load_params(params: PathLike | Mapping | None = None) -> dict:
    """Load and validate a pyradiomics parameter set.

    Parameters
    ----------
    params : str, path-like, dict or None, default=None
        A pyradiomics parameter file (YAML or JSON), a parameter dict with the keys
        ``setting``, ``imageType``, ``featureClass`` (and optionally ``voxelSetting``), or
        None for the shipped PET default (:data:`DEFAULT_PARAMS`).

    Returns
    -------
    dict
        The validated parameter dict (a plain, independent copy), ready for
        ``radiomics.featureextractor.RadiomicsFeatureExtractor(params)``.

    Raises
    ------
    MissingFileError
        The file does not exist.
    CorruptFileError
        The file cannot be parsed.
    ValidationError
        The parameters do not pass pyradiomics' schema (``radiomics/schemas/paramSchema.yaml``).

    Examples
    --------
    >>> from sitekit.features import load_params
    >>> p = load_params()
    >>> p["setting"]["binWidth"], p["setting"]["resampledPixelSpacing"]
    (0.25, [2.0, 2.0, 2.0])
    """
    if params is None:
        params = DEFAULT_PARAMS
    if isinstance(params, Mapping):
        data = _to_plain(params)
        return copy.deepcopy(_cached_validate(data, "The parameter dict"))
    if isinstance(params, str | Path) or hasattr(params, "__fspath__"):
        path = Path(params)
        data = _to_plain(_read_param_file(path))
        return copy.deepcopy(_cached_validate(data, f"Parameter file '{path}'"))
    raise ValidationError(
        "The 'params' parameter must be a path to a pyradiomics parameter file, a dict or None. "
        f"Got {type(params).__name__} instead."
    )


def canonical_json(params: Mapping) -> str:
    """Canonical JSON text of a validated parameter dict (sorted keys, no spaces)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def params_hash(params: Mapping) -> str:
    """SHA-256 of the canonical JSON of a validated parameter dict.

    Hashing the validated content (not the file bytes) gives the same hash for the same
    parameters whether they came from a file or a dict, and ignores comments and layout.
    """
    return hashlib.sha256(canonical_json(params).encode()).hexdigest()
