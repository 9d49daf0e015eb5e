"""One file format, one writer, one reader for every fitted sitekit object.

A model file is a NumPy ``.npz`` archive (read with ``allow_pickle=False``; nothing in it is
ever unpickled) holding

* the object's arrays, under their own names, and
* one entry ``__sitekit__``: a UTF-8 JSON header with the ``kind`` of object (``"ComBat"``,
  ``"CovBat"``, ``"NestedComBat"``, ``"federated-summary"``, ``"federated-message"`` ...),
  the file ``schema_version``, the sitekit version that wrote it, the object's JSON
  ``metadata`` (parameters, site and feature names, covariate encoding ...), a SHA-256
  checksum and, optionally, an HMAC-SHA256 signature.

The checksum is computed over the canonical JSON of kind, schema version, sitekit version and
metadata **and** over every array's name, dtype, shape and bytes together, so editing the
metadata (reordering ``feature_names``, swapping site names or categorical levels) or the
arrays is refused with :class:`~sitekit.exceptions.TamperedModelError`.  It protects against
accidents (a truncated copy, a bad disk, a file edited by hand or by a script that did not
recompute it); it is **not** a signature: anyone who can run this module can write a file
with a valid checksum.  The optional keyed signature (``key=``, HMAC-SHA256 over the same
content) adds authenticity between parties that share a secret key: a file changed by anyone
without the key is refused, as is a signed file read without the key, and an unsigned file
read with a key (the reader asked for authenticity).

Files written by sitekit 0.1 (schema version 1: ComBat/CovBat/NestedComBat files with a
``metadata`` entry and an array-only checksum, federated files with a ``__meta__`` entry and
no checksum) are still read; their metadata is not covered by a checksum, so they cannot be
read with a key.  Re-save them to get the protection of the current format.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sitekit._json import to_jsonable
from sitekit._typing import PathLike
from sitekit._version import __version__
from sitekit.exceptions import (
    CorruptModelError,
    InvalidModelError,
    MissingFileError,
    ModelFileError,
    ModelSignatureError,
    TamperedModelError,
    ValidationError,
    WrongModelKindError,
)
from sitekit.io import atomic_output

__all__ = [
    "SCHEMA_VERSION",
    "ModelFile",
    "write_model_file",
    "read_model_file",
    "register_kind",
    "load",
    "user_metadata",
    "PersistenceMixin",
]

#: Schema version of the files this sitekit writes (1: sitekit 0.1 files).
SCHEMA_VERSION = 2
_HEADER = "__sitekit__"
_FORMAT = "sitekit-model-file"
_LEGACY_META = "metadata"  # sitekit 0.1 ComBat/CovBat/NestedComBat files
_LEGACY_FED_META = "__meta__"  # sitekit 0.1 federated files
_LEGACY_FED_KINDS = {
    "sitekit-federated-summary": "federated-summary",
    "sitekit-federated-message": "federated-message",
}
_ARRAY_KINDS = "biufcU"  # bool, integers, floats, complex, fixed-width text: nothing that needs pickle

_LOADERS: dict[str, Callable[[ModelFile], object]] = {}


@dataclass(frozen=True)
class ModelFile:
    """The checked content of a model file.

    Attributes
    ----------
    kind : str
        What the file holds (``"ComBat"``, ``"CovBat"``, ``"NestedComBat"``,
        ``"federated-summary"``, ``"federated-message"`` or a kind registered with
        :func:`register_kind`).
    schema_version : int
        File schema version (1 for files written by sitekit 0.1).
    sitekit_version : str
        The sitekit version that wrote the file.
    arrays : dict of str to ndarray
        The arrays, by name.
    metadata : dict
        The JSON metadata of the object.
    source : pathlib.Path or None
        The file read (for messages).
    signed : bool
        Whether the file carried a keyed signature (verified when read with the key).
    """

    kind: str
    schema_version: int
    sitekit_version: str
    arrays: dict[str, np.ndarray]
    metadata: dict
    source: Path | None = field(default=None, compare=False)
    signed: bool = False

    def info(self) -> dict:
        """Kind, schema version, writing sitekit version and the metadata, in one dict."""
        return {"kind": self.kind, "schema_version": self.schema_version,
                "sitekit_version": self.sitekit_version, **self.metadata}

    def _where(self) -> str:
        return f"Model file '{self.source}'" if self.source is not None else f"The {self.kind} model"

    def invalid(self, problem: str) -> InvalidModelError:
        """An :class:`~sitekit.exceptions.InvalidModelError` naming this file and the fix."""
        return InvalidModelError(
            f"{self._where()} is inconsistent: {problem}. The file was damaged or edited; use "
            "the original file or fit the model again."
        )

    def array(self, name: str, *, shape: tuple | None = None, kind: str = "f",
              finite: bool | np.ndarray = False, positive: bool | np.ndarray = False) -> np.ndarray:
        """A checked array of the file.

        Parameters
        ----------
        name : str
            Array name.
        shape : tuple, optional
            Required shape.
        kind : str, default="f"
            Allowed dtype kinds (numpy ``dtype.kind`` letters): ``"f"`` float, ``"b"`` bool,
            ``"iu"`` integers.
        finite : bool or ndarray of bool, default=False
            Require finite values (everywhere, or where the mask is true).
        positive : bool or ndarray of bool, default=False
            Require values > 0 (everywhere, or where the mask is true).

        Returns
        -------
        ndarray

        Raises
        ------
        InvalidModelError
            The array is absent, or of another shape or dtype, or breaks a requirement.
        """
        if name not in self.arrays:
            raise self.invalid(f"array '{name}' is missing")
        arr = self.arrays[name]
        if arr.dtype.kind not in kind:
            raise self.invalid(f"array '{name}' has dtype {arr.dtype}, expected kind {kind!r}")
        if shape is not None and arr.shape != tuple(shape):
            raise self.invalid(f"array '{name}' has shape {arr.shape}, expected {tuple(shape)}")
        for flag, test, what in ((finite, np.isfinite, "NaN or infinite"),
                                 (positive, lambda a: a > 0, "zero or negative")):
            if flag is False:
                continue
            mask = np.ones(arr.shape, dtype=bool) if flag is True else np.asarray(flag, dtype=bool)
            with np.errstate(invalid="ignore"):
                bad = mask & ~test(arr)
            if bad.any():
                raise self.invalid(f"array '{name}' holds {int(bad.sum())} {what} value(s) where the "
                                   "model needs valid parameters")
        return arr


# --------------------------------------------------------------------------- checksum
def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _content(kind: str, schema_version: int, sitekit_version: str, metadata: dict,
             arrays: Mapping[str, np.ndarray]) -> Iterator[bytes]:
    """The byte stream that the checksum and the signature cover."""
    names = sorted(arrays)
    manifest = [[n, arrays[n].dtype.str, list(arrays[n].shape)] for n in names]
    head = _canonical({"kind": kind, "schema_version": schema_version,
                       "sitekit_version": sitekit_version, "metadata": metadata,
                       "arrays": manifest})
    yield len(head).to_bytes(8, "little")
    yield head
    for n in names:
        data = np.ascontiguousarray(arrays[n]).tobytes()
        yield len(data).to_bytes(8, "little")
        yield data


def _sha256(parts: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def _hmac(key: bytes, parts: Iterator[bytes]) -> str:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p)
    return h.hexdigest()


def _key_bytes(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes | bytearray):
        raise ValidationError(f"The 'key' must be bytes or str. Got {type(key).__name__} instead.")
    if not key:
        raise ValidationError("The 'key' is empty; give the shared secret (or no key at all).")
    return bytes(key)


# --------------------------------------------------------------------------- writer
def user_metadata(metadata: Mapping | None, owner: str) -> dict:
    """The caller's extra ``metadata=`` of a ``save`` method as JSON data (``{}`` for None)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError(f"{owner}: 'metadata' must be a dict. Got {type(metadata).__name__}.")
    return to_jsonable(dict(metadata))


def write_model_file(path: PathLike, *, kind: str, arrays: Mapping[str, np.ndarray],
                     metadata: Mapping, force: bool = False,
                     key: bytes | str | None = None) -> Path:
    """Write a model file: arrays + JSON metadata, checksummed, optionally signed.

    Parameters
    ----------
    path : str or path-like
        Output file (conventionally ``*.npz``), written atomically (a temporary file in
        the same folder, renamed into place) with the usual umask mode.
    kind : str
        What the file holds; :func:`load` dispatches on it.
    arrays : mapping of str to array-like
        Numeric or boolean arrays (no object arrays); names must not start with ``__``.
    metadata : mapping
        JSON-serialisable metadata (numpy scalars, tuples and paths are converted; NaN
        becomes null).
    force : bool, default=False
        Replace an existing file.
    key : bytes or str, optional
        Shared secret: adds an HMAC-SHA256 signature that :func:`read_model_file` checks.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``force`` is false.
    ValidationError
        An array of an unsupported dtype, a reserved array name, an empty key.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
    >>> _ = write_model_file(path, kind="demo", arrays={"w": np.arange(3.0)}, metadata={"a": 1})
    >>> read_model_file(path, kind="demo").metadata
    {'a': 1}
    """
    if not isinstance(kind, str) or not kind:
        raise ValidationError(f"The 'kind' of a model file must be a non-empty str. Got {kind!r}.")
    key_b = _key_bytes(key)
    payload: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or name.startswith("__"):
            raise ValidationError(f"Array name {name!r} is reserved or not a str; rename it.")
        arr = np.asarray(value)
        if arr.dtype.kind not in _ARRAY_KINDS:
            raise ValidationError(
                f"Array '{name}' has dtype {arr.dtype}; model files hold numeric, boolean or "
                "fixed-width text arrays only (no object arrays: they would need pickle)."
            )
        payload[name] = np.ascontiguousarray(arr)
    meta = to_jsonable(dict(metadata))
    parts = (kind, SCHEMA_VERSION, __version__, meta, payload)
    header = {
        "format": _FORMAT,
        "kind": kind,
        "schema_version": SCHEMA_VERSION,
        "sitekit_version": __version__,
        "metadata": meta,
        "sha256": _sha256(_content(*parts)),
        "hmac_sha256": None if key_b is None else _hmac(key_b, _content(*parts)),
    }
    text = json.dumps(header, allow_nan=False, ensure_ascii=True)
    payload[_HEADER] = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    with atomic_output(path, force=force) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)
    return Path(path)


# --------------------------------------------------------------------------- reader
def _read_archive(p: Path) -> dict[str, np.ndarray]:
    if not p.exists():
        raise MissingFileError(f"Model file '{p}' does not exist; check the path.")
    if not p.is_file():
        raise CorruptModelError(f"Model file '{p}' is a directory, not a model file; give the .npz file.")
    try:
        with np.load(p, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single array, not an archive")
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, RuntimeError) as exc:
        raise CorruptModelError(
            f"Model file '{p}' could not be read ({type(exc).__name__}: {exc}); it is truncated, "
            "corrupt or not a sitekit model file. Copy it again or fit and save the model again."
        ) from exc


def _json_entry(p: Path, raw: np.ndarray, name: str) -> dict:
    try:
        if raw.dtype.kind in "US":
            text = str(raw)
        else:
            text = raw.tobytes().decode("utf-8")
        value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CorruptModelError(f"Model file '{p}' has a corrupt '{name}' entry ({exc}).") from exc
    if not isinstance(value, dict):
        raise CorruptModelError(f"Model file '{p}' has a corrupt '{name}' entry (not a JSON object).")
    return value


def _legacy_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """The array-only checksum of sitekit 0.1 ComBat/CovBat/NestedComBat files."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read_legacy(p: Path, data: dict[str, np.ndarray], key: bytes | None) -> ModelFile:
    if key is not None:
        raise ModelSignatureError(
            f"Model file '{p}' was written by sitekit 0.1 and carries no signature, but a key was "
            "given (the reader asked for authenticity). Load it without a key, then re-save it "
            "with the key."
        )
    if _LEGACY_FED_META in data:
        meta = _json_entry(p, data.pop(_LEGACY_FED_META), _LEGACY_FED_META)
        kind = _LEGACY_FED_KINDS.get(meta.get("format"))
        if kind is None:
            raise WrongModelKindError(f"Model file '{p}' is not a sitekit file (format {meta.get('format')!r}).")
        return ModelFile(kind, 1, str(meta.get("sitekit_version", "0.1")), data, meta, p)
    meta = _json_entry(p, data.pop(_LEGACY_META), _LEGACY_META)
    fmt = meta.get("format")
    if not isinstance(fmt, str) or not fmt.startswith("sitekit.harmonize."):
        raise WrongModelKindError(f"Model file '{p}' is not a sitekit model (format {fmt!r}).")
    version = meta.get("format_version")
    if version != 1:
        raise ModelFileError(
            f"Model file '{p}' has format version {version!r}, which this sitekit ({__version__}) "
            "does not read; upgrade sitekit."
        )
    if _legacy_digest(data) != meta.get("arrays_sha256"):
        raise TamperedModelError(
            f"Model file '{p}' failed its checksum: its arrays were modified after saving. Use "
            "the original file or fit again."
        )
    kind = fmt.rsplit(".", 1)[1]
    meta = {k: v for k, v in meta.items()
            if k not in ("format", "format_version", "sitekit_version", "arrays_sha256")}
    return ModelFile(kind, 1, "0.1", data, meta, p)


def read_model_file(path: PathLike, *, kind: str | None = None,
                    key: bytes | str | None = None) -> ModelFile:
    """Read and check a model file written by :func:`write_model_file` (or by sitekit 0.1).

    Parameters
    ----------
    path : str or path-like
        The file.
    kind : str, optional
        The kind expected; another kind raises
        :class:`~sitekit.exceptions.WrongModelKindError`.
    key : bytes or str, optional
        The shared secret the file was signed with.  With a key, an unsigned file (or a
        sitekit 0.1 file) is refused; without one, a signed file is refused.

    Returns
    -------
    ModelFile

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    CorruptModelError
        Truncated, not a ``.npz`` archive, or a corrupt header.
    TamperedModelError
        The metadata or arrays do not match the checksum.
    ModelSignatureError
        Signature missing, unexpected, or not matching ``key``.
    WrongModelKindError
        Not a sitekit model file, or not of ``kind``.
    ModelFileError
        Written by a newer schema version.
    """
    p = Path(path)
    key_b = _key_bytes(key)
    data = _read_archive(p)
    if _HEADER in data:
        header = _json_entry(p, data.pop(_HEADER), _HEADER)
        mf = _check_header(p, header, data, key_b)
    elif _LEGACY_META in data or _LEGACY_FED_META in data:
        mf = _read_legacy(p, data, key_b)
    else:
        raise WrongModelKindError(
            f"'{p}' is a NumPy archive but not a sitekit model file (no '{_HEADER}' entry); give a "
            "file written by sitekit's save()."
        )
    if kind is not None and mf.kind != kind:
        raise WrongModelKindError(
            f"Model file '{p}' holds a {mf.kind} model; it is not a sitekit {kind} model. Load "
            f"it with sitekit.harmonize.load (or the {mf.kind} class)."
        )
    return mf


def _check_header(p: Path, header: dict, data: dict, key: bytes | None) -> ModelFile:
    if header.get("format") != _FORMAT:
        raise CorruptModelError(f"Model file '{p}' has an unknown header format {header.get('format')!r}.")
    kind = header.get("kind")
    version = header.get("schema_version")
    written_by = header.get("sitekit_version")
    meta = header.get("metadata")
    if not isinstance(kind, str) or not isinstance(version, int) or not isinstance(meta, dict) \
            or not isinstance(written_by, str):
        raise CorruptModelError(f"Model file '{p}' has an incomplete header (kind, schema_version, "
                                "sitekit_version, metadata).")
    if version > SCHEMA_VERSION:
        raise ModelFileError(
            f"Model file '{p}' has schema version {version}, newer than this sitekit "
            f"({__version__}) reads (version {SCHEMA_VERSION}); it was written by sitekit "
            f"{written_by}. Upgrade sitekit."
        )
    bad = [n for n, a in data.items() if a.dtype.kind not in _ARRAY_KINDS]
    if bad:
        raise TamperedModelError(f"Model file '{p}' holds arrays {bad} of an unsupported dtype.")
    parts = (kind, version, written_by, meta, data)
    try:
        digest = _sha256(_content(*parts))
    except ValueError as exc:  # non-finite float in the metadata: not written by us
        raise TamperedModelError(f"Model file '{p}' has metadata this writer never produces ({exc}).") from exc
    if not hmac.compare_digest(digest, str(header.get("sha256"))):
        raise TamperedModelError(
            f"Model file '{p}' failed its checksum: its metadata or arrays were changed after it "
            "was saved. Use the original file or fit the model again."
        )
    signature = header.get("hmac_sha256")
    if key is None and signature is not None:
        raise ModelSignatureError(
            f"Model file '{p}' is signed; give the key it was signed with (key=..., CLI "
            "--key-file) to load it."
        )
    if key is not None:
        if signature is None:
            raise ModelSignatureError(
                f"Model file '{p}' is not signed, but a key was given: its authenticity cannot be "
                "checked. Ask its author for a signed file (save(..., key=...), --key-file)."
            )
        if not hmac.compare_digest(_hmac(key, _content(*parts)), str(signature)):
            raise ModelSignatureError(
                f"Model file '{p}' does not match the key: it was signed with another key or "
                "changed by someone without the key. Check the key file; do not use this model."
            )
    return ModelFile(kind, version, written_by, data, meta, p, signed=signature is not None)


# --------------------------------------------------------------------------- estimators
class PersistenceMixin(ABC):
    """``save`` / ``load`` for fitted sitekit objects, through this module's one format.

    A class sets ``_model_kind`` and implements ``_model_content() -> (arrays, metadata)``
    and the classmethod ``_from_model_file(model_file) -> object`` (which validates the
    arrays against the metadata), then registers ``_from_model_file`` with
    :func:`register_kind`.
    """

    _model_kind: str = ""

    def save(self, path: PathLike, *, force: bool = False, metadata: Mapping | None = None,
             key: bytes | str | None = None) -> Path:
        """Save the fitted object: arrays + JSON metadata under one checksum (never pickle).

        The checksum covers the metadata (parameters, site and feature names, covariate
        encoding ...) and every array together, so an edited or truncated file is refused by
        :meth:`load`.  It guards against accidents and casual edits, not against a
        deliberate forger; pass ``key`` to sign the file with HMAC-SHA256 (for models
        exchanged between sites), and :meth:`load` then needs the same key.

        Parameters
        ----------
        path : str or path-like
            Output file (conventionally ``*.npz``), written atomically.
        force : bool, default=False
            Replace an existing file.
        metadata : dict, optional
            Extra JSON-serialisable information stored with the model (e.g. the CLI records
            the site and covariate column names); after :meth:`load` it is
            ``file_metadata_["extra"]``.
        key : bytes or str, optional
            Shared secret: sign the file (HMAC-SHA256).

        Returns
        -------
        pathlib.Path
        """
        arrays, meta = self._model_content()
        meta["extra"] = user_metadata(metadata, f"{type(self).__name__}.save")
        return write_model_file(path, kind=self._model_kind, arrays=arrays, metadata=meta,
                                force=force, key=key)

    @classmethod
    def load(cls, path: PathLike, *, key: bytes | str | None = None):
        """Load a fitted object written by :meth:`save` (also files written by sitekit 0.1).

        Parameters
        ----------
        path : str or path-like
            The model file.
        key : bytes or str, optional
            The key a signed file was saved with.

        Returns
        -------
        object
            The fitted estimator; its ``file_metadata_`` holds the file's metadata (kind,
            schema and sitekit versions, parameters, sites, features, ``extra``).

        Raises
        ------
        MissingFileError
            ``path`` does not exist.
        ModelFileError
            The file is truncated (:class:`~sitekit.exceptions.CorruptModelError`), edited
            (:class:`~sitekit.exceptions.TamperedModelError`), inconsistent
            (:class:`~sitekit.exceptions.InvalidModelError`), wrongly signed
            (:class:`~sitekit.exceptions.ModelSignatureError`), of another kind
            (:class:`~sitekit.exceptions.WrongModelKindError`) or of a newer version.
        """
        mf = read_model_file(path, kind=cls._model_kind, key=key)
        try:
            return cls._from_model_file(mf)
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise mf.invalid(f"incomplete {mf.kind} metadata ({type(exc).__name__}: {exc})") from exc

    @abstractmethod
    def _model_content(self) -> tuple[dict, dict]:
        """The arrays and the JSON metadata that describe the fitted object."""

    @classmethod
    @abstractmethod
    def _from_model_file(cls, mf: ModelFile):
        """The fitted object of a validated model file."""


# --------------------------------------------------------------------------- dispatch
def register_kind(kind: str, loader: Callable[[ModelFile], object]) -> None:
    """Register the function that turns a :class:`ModelFile` of ``kind`` into an object.

    Parameters
    ----------
    kind : str
        The ``kind`` written by :func:`write_model_file`.
    loader : callable
        ``loader(model_file) -> object``; it must validate the arrays against the metadata
        (shapes, dtypes, finiteness, names) and raise
        :class:`~sitekit.exceptions.InvalidModelError` on a mismatch.
    """
    if not isinstance(kind, str) or not kind:
        raise ValidationError(f"The 'kind' must be a non-empty str. Got {kind!r}.")
    if not callable(loader):
        raise ValidationError(f"The loader of kind {kind!r} must be callable.")
    _LOADERS[kind] = loader


def load(path: PathLike, *, key: bytes | str | None = None) -> object:
    """Load any fitted sitekit object from its file; the file says which class.

    Parameters
    ----------
    path : str or path-like
        A file written by ``ComBat.save``, ``CovBat.save``, ``NestedComBat.save``, the
        federated protocol, or any kind registered with :func:`register_kind` (also files
        written by sitekit 0.1).
    key : bytes or str, optional
        The shared secret of a signed file (see :func:`read_model_file`).

    Returns
    -------
    object
        The fitted object (e.g. a :class:`~sitekit.harmonize.ComBat`).

    Raises
    ------
    ModelFileError
        The file is missing, truncated, tampered with, inconsistent, wrongly signed or of
        an unknown kind (the subclasses name which).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sitekit.harmonize import ComBat, load
    >>> X = np.random.default_rng(0).normal(size=(40, 3))
    >>> path = os.path.join(tempfile.mkdtemp(), "combat.npz")
    >>> _ = ComBat().fit(X, sites=[0, 1] * 20).save(path)
    >>> type(load(path)).__name__
    'ComBat'
    """
    mf = read_model_file(path, key=key)
    loader = _LOADERS.get(mf.kind)
    if loader is None:
        raise WrongModelKindError(
            f"Model file '{mf.source}' holds a {mf.kind!r} object, which no loaded module "
            f"registers (known: {sorted(_LOADERS)}); import the module that defines it."
        )
    try:
        return loader(mf)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise mf.invalid(f"{type(exc).__name__}: {exc}") from exc
