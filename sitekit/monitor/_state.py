"""Saving and loading monitor state through sitekit's one persistence layer.

The state is a model file of kind ``"site_monitor"``
(:func:`sitekit.harmonize._persistence.write_model_file`): arrays in an ``.npz`` read without
pickle, JSON metadata, one SHA-256 over both (and an optional HMAC), written to a temporary
name next to the target and renamed over the old state in one step, so a crash or a kill at
any moment leaves either the old state or the new one, never a mix.  The monitor's own
format version is kept in the metadata (``monitor_schema_version``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sitekit._version import __version__
from sitekit.exceptions import MissingFileError, ModelFileError
from sitekit.harmonize._persistence import read_model_file, write_model_file

KIND = "site_monitor"
SCHEMA_VERSION = 1


def _write(path, arrays: dict[str, np.ndarray], metadata: dict, force: bool) -> Path:
    """Write ``arrays`` and ``metadata`` to the file ``path`` atomically; return the path."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for name, a in arrays.items():
        if a.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; convert it before saving")
    meta = {"monitor_schema_version": SCHEMA_VERSION, **metadata}
    return Path(write_model_file(path, kind=KIND, arrays=arrays, metadata=meta, force=force))


def _read(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a state file written by :func:`_write`; its kind, checksum and version are checked."""
    if not Path(path).is_file():
        raise MissingFileError(f"Monitor state '{path}' does not exist; create it with "
                               "'sitekit monitor init' (SiteMonitor.save).")
    mf = read_model_file(path, kind=KIND)
    meta = dict(mf.metadata)
    if int(meta.get("monitor_schema_version", 0)) > SCHEMA_VERSION:
        raise ModelFileError(
            f"Monitor state '{path}' has monitor schema version {meta.get('monitor_schema_version')}, "
            f"newer than this sitekit ({__version__}) reads; upgrade sitekit."
        )
    meta.update(kind=mf.kind, schema_version=meta.get("monitor_schema_version"),
                sitekit_version=mf.sitekit_version)
    return {k: np.asarray(v) for k, v in mf.arrays.items()}, meta
