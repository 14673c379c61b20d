"""Choosing the backend: a Qdrant server URL, qdrant-client local mode, or embedded Edge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexer.errors import InvalidInputError
from indexer.store.base import VectorStore


@dataclass(frozen=True, kw_only=True)
class QdrantLocation:
    """Where points live. Exactly one of ``url``, ``local_path`` (qdrant-client local mode,
    ``":memory:"`` allowed) or ``edge_path`` (embedded Qdrant Edge, the default)."""

    url: str | None = None
    api_key: str | None = None
    local_path: str | None = None
    edge_path: str | None = None

    def __post_init__(self) -> None:
        given = [x for x in (self.url, self.local_path, self.edge_path) if x]
        if len(given) != 1:
            raise InvalidInputError("Give exactly one Qdrant location: a server url, a local_path, or an edge_path.")

    def describe(self) -> str:
        if self.url:
            return f"Qdrant server {self.url}"
        if self.local_path:
            return f"qdrant-client local mode at {self.local_path}"
        return f"embedded Qdrant Edge at {self.edge_path}"


def open_store(loc: QdrantLocation) -> VectorStore:
    if loc.edge_path:
        from indexer.store.edge import EdgeStore

        return EdgeStore(Path(loc.edge_path))
    from qdrant_client import QdrantClient

    from indexer.store.client import ClientStore

    if loc.url:
        return ClientStore(QdrantClient(url=loc.url, api_key=loc.api_key, timeout=60))
    return ClientStore(
        QdrantClient(location=":memory:") if loc.local_path == ":memory:" else QdrantClient(path=loc.local_path)
    )
