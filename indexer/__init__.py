"""inforank's write path: running statistics, geometry scores, ingestion into Qdrant."""

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
    StorageError,
)
from indexer.items import Item
from indexer.moments import Moments
from indexer.store import QdrantLocation
from indexer.writer import BatchReport, Rejection

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
    "QdrantLocation",
    "Rejection",
    "RescoreReport",
    "StorageError",
]
