"""Ingest of N precomputed 512-d vectors: inforank (embedded default: Qdrant Edge + SQLite)
vs a plain upsert of the same vectors to the same backend, in the same run.

    python -m bench.ingest [--n 100000] [--batch 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import clip_like, report
from indexer.api import Indexer
from indexer.items import Item
from indexer.store import QdrantLocation
from indexer.store.base import StorePoint
from indexer.store.edge import EdgeStore


def plain_upsert(root: Path, vecs: np.ndarray, batch: int) -> float:
    store = EdgeStore(root)
    store.create("plain", {"image": vecs.shape[1]}, [])
    t = time.perf_counter()
    for s in range(0, len(vecs), batch):
        store.upsert(
            "plain",
            [
                StorePoint(str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))), {"image": vecs[i].tolist()}, {"id": i})
                for i in range(s, min(s + batch, len(vecs)))
            ],
        )
    dt = time.perf_counter() - t
    store.close()
    return dt


def inforank_ingest(root: Path, vecs: np.ndarray, texts: np.ndarray, batch: int) -> tuple[float, Indexer]:
    ix = Indexer(f"sqlite:///{root}/db.sqlite", QdrantLocation(edge_path=str(root / "edge")))
    ix.create_collection("bench", dim=vecs.shape[1])
    ix.add("bench", [Item({"text": t}, id=f"t{i}") for i, t in enumerate(texts)])  # so IG is computable
    items = (Item({"image": v}, id=i) for i, v in enumerate(vecs))
    t = time.perf_counter()
    rep = ix.add("bench", items, batch_size=batch)
    dt = time.perf_counter() - t
    assert len(rep.ingested) == len(vecs) and not rep.rejected
    return dt, ix


def run(n: int = 100_000, batch: int = 1024) -> dict:
    vecs = clip_like(n, seed=3)
    texts = clip_like(1000, seed=4, shift=1)
    with tempfile.TemporaryDirectory() as d:
        base = plain_upsert(Path(d) / "plain", vecs, batch)
        ours, ix = inforank_ingest(Path(d) / "ours", vecs, texts, batch)
        assert ix.store.count("bench") == n + len(texts)
        ix.close()
    return report(
        "ingest",
        {
            "n": n,
            "batch": batch,
            "backend": "embedded Qdrant Edge + SQLite",
            "plain_upsert_s": base,
            "inforank_s": ours,
            "ratio": ours / base,
            "overhead_pct": 100 * (ours / base - 1),
            "goal_overhead_pct": 10,
            "inforank_items_per_s": n / ours,
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1024)
    a = p.parse_args()
    run(a.n, a.batch)
