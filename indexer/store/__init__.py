"""One small interface over Qdrant: a server (qdrant-client) or the embedded Qdrant Edge."""

from indexer.store.base import Hit, QuerySpec, StorePoint, VectorStore
from indexer.store.factory import QdrantLocation, open_store

__all__ = ["Hit", "QdrantLocation", "QuerySpec", "StorePoint", "VectorStore", "open_store"]
