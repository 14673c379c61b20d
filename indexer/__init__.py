"""inforank's write path: running statistics, geometry scores, ingestion into Qdrant.

Names are imported on first use (PEP 562), so ``import indexer.errors`` — all the HTTP client
needs — does not pull in SQLAlchemy, Qdrant or scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "BatchReport": "indexer.writer",
    "Collection": "indexer.collections",
    "ConflictError": "indexer.errors",
    "Indexer": "indexer.api",
    "InforankError": "indexer.errors",
    "InvalidInputError": "indexer.errors",
    "InvalidItemError": "indexer.errors",
    "InvalidQueryError": "indexer.errors",
    "InvalidVectorError": "indexer.errors",
    "Item": "indexer.items",
    "ModelUnavailableError": "indexer.errors",
    "Moments": "indexer.moments",
    "NotFoundError": "indexer.errors",
    "PointRefusedError": "indexer.errors",
    "QdrantLocation": "indexer.store",
    "Rejection": "indexer.writer",
    "RescoreReport": "indexer.api",
    "StorageError": "indexer.errors",
    "StoreBusyError": "indexer.errors",
    "UnauthorizedError": "indexer.errors",
}

__all__ = [
    "BatchReport",
    "Collection",
    "ConflictError",
    "Indexer",
    "InforankError",
    "InvalidInputError",
    "InvalidItemError",
    "InvalidQueryError",
    "InvalidVectorError",
    "Item",
    "ModelUnavailableError",
    "Moments",
    "NotFoundError",
    "PointRefusedError",
    "QdrantLocation",
    "Rejection",
    "RescoreReport",
    "StorageError",
    "StoreBusyError",
    "UnauthorizedError",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")


if TYPE_CHECKING:
    from indexer.api import Indexer, RescoreReport
    from indexer.collections import Collection
    from indexer.errors import (
        ConflictError,
        InforankError,
        InvalidInputError,
        InvalidItemError,
        InvalidQueryError,
        InvalidVectorError,
        ModelUnavailableError,
        NotFoundError,
        PointRefusedError,
        StorageError,
        StoreBusyError,
        UnauthorizedError,
    )
    from indexer.items import Item
    from indexer.moments import Moments
    from indexer.store import QdrantLocation
    from indexer.writer import BatchReport, Rejection
