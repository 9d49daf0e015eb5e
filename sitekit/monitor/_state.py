"""Saving and loading monitor state: arrays (npz, no pickle) + JSON metadata + SHA-256.

The two private functions :func:`_write` and :func:`_read` are the only place that knows
the file format, so that the project's common persistence layer can take over their
bodies.  The file is written to a temporary name next to the target, flushed to disk and
renamed over the old state in one step (:func:`sitekit.io.atomic_output`): a crash or a
kill at any moment leaves either the old state or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from sitekit._json import to_jsonable
from sitekit._version import __version__
from sitekit.exceptions import MissingFileError, ModelFileError
from sitekit.io import atomic_output

KIND = "site_monitor"
SCHEMA_VERSION = 1
_META = "__metadata__"
_DIGEST = "__sha256__"


def _digest(arrays: dict[str, np.ndarray], meta_bytes: bytes) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    h.update(meta_bytes)
    return h.hexdigest()


def _write(path, arrays: dict[str, np.ndarray], metadata: dict, force: bool) -> Path:
    """Write ``arrays`` and ``metadata`` to the file ``path`` atomically; return the path."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for name, a in arrays.items():
        if a.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; convert it before saving")
    meta = {"kind": KIND, "schema_version": SCHEMA_VERSION, "sitekit_version": __version__,
            **metadata}
    meta_bytes = json.dumps(to_jsonable(meta), sort_keys=True).encode("utf-8")
    digest = _digest(arrays, meta_bytes)
    target = Path(path)
    with atomic_output(target, force=force) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays, **{_META: np.frombuffer(meta_bytes, dtype=np.uint8),
                                      _DIGEST: np.frombuffer(digest.encode(), dtype=np.uint8)})
            fh.flush()
            os.fsync(fh.fileno())
    return target


def _read(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a state file written by :func:`_write`; check its kind, version and checksum."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Monitor state '{p}' does not exist; create it with "
                               "'sitekit monitor init' (SiteMonitor.save).")
    try:
        with np.load(p, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a corrupt file
        raise ModelFileError(f"Monitor state '{p}' cannot be read ({type(exc).__name__}: {exc}); "
                             "restore it from a backup or re-run 'sitekit monitor init'.") from None
    if _META not in data or _DIGEST not in data:
        raise ModelFileError(f"'{p}' is not a sitekit monitor state (no metadata entry).")
    meta_bytes = data.pop(_META).tobytes()
    digest = data.pop(_DIGEST).tobytes().decode("ascii", "replace")
    if _digest(data, meta_bytes) != digest:
        raise ModelFileError(f"Monitor state '{p}' fails its SHA-256 check (truncated or edited); "
                             "restore it from a backup.")
    meta = json.loads(meta_bytes.decode("utf-8"))
    if meta.get("kind") != KIND:
        raise ModelFileError(f"'{p}' holds a {meta.get('kind')!r}, not a monitor state.")
    if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ModelFileError(
            f"Monitor state '{p}' has schema version {meta.get('schema_version')}, newer than this "
            f"sitekit ({__version__}) reads; upgrade sitekit."
        )
    return data, meta
