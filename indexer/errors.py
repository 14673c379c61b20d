"""The one exception hierarchy of inforank.

    InforankError
    ├── InvalidInputError            bad data from the caller; nothing was written
    │   ├── InvalidVectorError       NaN/Inf, zero, wrong dimension, wrong shape
    │   ├── InvalidItemError         empty text, corrupt image, malformed record
    │   └── InvalidQueryError        bad search parameters (k, filters, fields)
    ├── NotFoundError                unknown collection, item or alignment map
    ├── ConflictError                collection exists, model identity mismatch
    ├── UnauthorizedError            the service refused the API key
    ├── ModelUnavailableError        open_clip weights cannot be loaded (offline, missing extra)
    │   └── ExtraMissingError        an optional extra (clip, report, parquet, service) is not installed
    └── StorageError                 Qdrant or the database failed underneath us

Errors from dependencies are converted at the boundary (``raise StorageError(...) from exc``);
the CLI and the HTTP service map these classes to exit codes and status codes in one place.
Messages are full sentences that say what to do next.
"""

from __future__ import annotations

from typing import Any


class InforankError(Exception):
    """Base class of every error inforank raises on purpose."""


class InvalidInputError(InforankError, ValueError):
    """The caller's data cannot be used; nothing was written."""


class InvalidVectorError(InvalidInputError):
    """A vector is NaN/Inf, zero, or of the wrong dimension or shape."""


class InvalidItemError(InvalidInputError):
    """An item (text, image, record) cannot be read or is empty."""


class InvalidQueryError(InvalidInputError):
    """Search parameters are out of range or name unknown fields."""


class NotFoundError(InforankError, LookupError):
    """A collection, item or alignment map does not exist."""


class ConflictError(InforankError):
    """The request contradicts what is stored (existing collection, model identity)."""


class UnauthorizedError(InforankError):
    """The inforank service refused the request's API key (HTTP 401)."""


class ModelUnavailableError(InforankError):
    """Encoder weights or the optional ``clip`` extra are unavailable."""


class ExtraMissingError(ModelUnavailableError):
    """An optional extra is not installed; the message names the ``pip install`` that adds it."""


def require(module: str, extra: str, what: str) -> Any:
    """``module`` imported, or an :class:`ExtraMissingError` saying which extra provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExtraMissingError(f"{what} needs the optional extra: pip install 'inforank[{extra}]'.") from None


class StorageError(InforankError):
    """Qdrant or the SQL database failed underneath an operation."""


class StoreBusyError(StorageError):
    """The embedded Qdrant Edge directory is held by another process; nothing was written."""


class PointRefusedError(StorageError):
    """Qdrant refused the content of a request (a payload value, an id), not the connection.

    The sync narrows such a refusal down to the points that cause it and quarantines them, so
    one bad point never blocks the others."""
