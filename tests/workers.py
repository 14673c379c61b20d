"""Entry points run in separate processes by the concurrency and crash tests."""

from __future__ import annotations

import sys

import numpy as np

from indexer.api import Indexer
from indexer.items import Item
from indexer.store import QdrantLocation

D = 32


def items(start: int, stop: int, seed: int = 0) -> list[Item]:
    out = []
    for i in range(start, stop):
        rng = np.random.default_rng(seed * 1_000_003 + i)
        out.append(
            Item(
                {"image": rng.normal(size=D) + 1.0, "text": rng.normal(size=D) - 1.0},
                id=f"w{i}",
                metadata={"i": i},
            )
        )
    return out


def concurrent_writer(db_url: str, start: int, stop: int, batch: int, qdrant_url: str | None = None) -> None:
    """One of several processes adding disjoint items to the same collection at once."""
    if qdrant_url:  # the deployment: every writer pushes to one shared Qdrant server
        ix = Indexer(db_url, QdrantLocation(url=qdrant_url), migrate=False)
    else:
        ix = Indexer(db_url, QdrantLocation(local_path=":memory:"), migrate=False)
        # each process has its own throw-away Qdrant: the statistics in PostgreSQL are under test
        if not ix.store.exists("c"):
            ix.store.create("c", {"image": D, "text": D}, [])
    ix.add("c", items(start, stop), batch_size=batch)
    ix.close()


def rescorer(db_url: str, edge: str, batch: int) -> None:
    """A full rescore in small batches, reporting each: the process the rescore crash test kills."""
    ix = Indexer(db_url, QdrantLocation(edge_path=edge))
    ix.rescore("c", all=True, batch_size=batch, progress=lambda k: print("batch", flush=True))
    print("done", flush=True)
    ix.close()


def main() -> None:
    """``python -m tests.workers DB_URL EDGE_PATH N BATCH``: the process the crash test kills
    (``python -m tests.workers rescore DB_URL EDGE_PATH BATCH``: the rescore it kills)."""
    if sys.argv[1] == "rescore":
        rescorer(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    db_url, edge, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ix = Indexer(db_url, QdrantLocation(edge_path=edge))
    if not any(c.name == "c" for c in ix.collections()):
        ix.create_collection("c", dim=D, min_count=8)
    ix.add("c", items(0, n), batch_size=batch, progress=lambda k: print("batch", flush=True))
    print("done", flush=True)
    ix.close()


if __name__ == "__main__":
    main()
