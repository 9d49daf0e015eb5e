"""Exceptions and warnings raised by sitekit.

Every user mistake raises a :class:`SitekitError` subclass whose message names the
offending column, site or file and says what would fix it.  The subclasses also derive
from the matching built-in (``ValueError``, ``OSError`` ...) so that generic handlers
keep working.  The CLI maps :class:`CheckFailedError` to exit code 1 and every other
:class:`SitekitError` to exit code 2.
"""

from __future__ import annotations

__all__ = [
    "SitekitError",
    "ValidationError",
    "UnknownSiteError",
    "ConfoundingError",
    "FileError",
    "MissingFileError",
    "CorruptFileError",
    "OutputExistsError",
    "ModelFileError",
    "CorruptModelError",
    "TamperedModelError",
    "ModelSignatureError",
    "InvalidModelError",
    "WrongModelKindError",
    "CheckFailedError",
    "SpheresNotFoundError",
    "SitekitWarning",
    "DataWarning",
    "ExtractionError",
    "ProtocolError",
    "PrivacyError",
    "NumericalError",
    "CostWarning",
]


class SitekitError(Exception):
    """Base class of every error sitekit raises on purpose."""


class ValidationError(SitekitError, ValueError):
    """Invalid user input: a parameter, a column, a value."""


class UnknownSiteError(ValidationError):
    """A site (or categorical level) that the fitted model has never seen."""


class ConfoundingError(ValidationError):
    """Covariates confounded with site: the design matrix is not of full rank."""


class FileError(SitekitError, OSError):
    """A file that cannot be used: base class of the file errors."""


class MissingFileError(FileError, FileNotFoundError):
    """An input file or directory that does not exist."""


class CorruptFileError(FileError):
    """A file that exists but is empty, truncated, corrupt or of the wrong type."""


class OutputExistsError(FileError, FileExistsError):
    """An output that already exists (pass ``force=True`` / ``--force``) or would overwrite an input."""


class ModelFileError(CorruptFileError):
    """A saved model or summary file that is truncated, tampered with or from a newer version."""


class CorruptModelError(ModelFileError):
    """A model file that cannot be read at all: truncated, not an archive, corrupt header."""


class TamperedModelError(ModelFileError):
    """A model file whose content (arrays or metadata) no longer matches its checksum."""


class ModelSignatureError(ModelFileError):
    """A keyed signature (HMAC) that is missing, unexpected or does not match the key."""


class InvalidModelError(ModelFileError):
    """A model file whose content is inconsistent: shapes, dtypes, non-finite parameters,
    names that do not match the arrays."""


class WrongModelKindError(ModelFileError):
    """A model file of another kind than the one asked for (e.g. a CovBat file to ComBat.load)."""


class CheckFailedError(SitekitError):
    """A quality check did not pass (EARL band missed, robustness threshold missed).

    The CLI maps it to exit code 1.  ``result`` carries the data behind the verdict.
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class SitekitWarning(UserWarning):
    """Base class of sitekit's warnings."""


class CostWarning(SitekitWarning):
    """A computation that will take long (the message estimates how long and how to avoid it)."""


class DataWarning(SitekitWarning):
    """A recoverable data problem (a one-sample site, a constant feature, ...)."""


class ExtractionError(ValidationError):
    """One case (image + mask) cannot be extracted: geometry mismatch, empty mask, absent label,
    a pre-step or pyradiomics failing.  ``stage`` names the step (``"check"``, ``"suv"``,
    ``"filter"``, ``"extract"``) for the errors table of :func:`sitekit.features.extract`.
    """

    def __init__(self, message: str, stage: str = "extract") -> None:
        super().__init__(message)
        self.stage = stage


class SpheresNotFoundError(ValidationError):
    """The six spheres of a NEMA/IEC phantom scan could not be located.

    ``preview`` (a 2D RGB SimpleITK image of the sphere plane with what was found marked, or
    None) and ``found`` (a DataFrame of the candidate centres) show what the search saw; pass
    manual centres to measure such a scan.
    """

    def __init__(self, message: str, preview: object = None, found: object = None) -> None:
        super().__init__(message)
        self.preview = preview
        self.found = found


class ProtocolError(ValidationError):
    """Federated ComBat files that do not fit together: another protocol version, mixed
    rounds, different features or covariate encodings, a message the summaries did not answer.
    """


class PrivacyError(ValidationError):
    """A federated summary would reveal too much: a site below the minimum size, or an array
    with one entry per sample."""


class NumericalError(ValidationError):
    """A result that cannot be represented in floating point (a feature's variance beyond
    the float64 range, a non-finite output for finite input).  ``features`` holds the
    column positions concerned; the message names them and the fix."""

    def __init__(self, message: str, features: object = None) -> None:
        super().__init__(message)
        self.features = features
