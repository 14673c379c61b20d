"""Sizing a lever, not a shipped path: the 100k ingest with Qdrant Edge moved into a child
process, against the ingest as shipped and the scored-payload floor, in the same run.

qdrant-edge-py holds the GIL while it updates, so the Edge half of a write (building Edge's
points, the update itself) cannot overlap the database half in a thread. Here a child process
owns the shard; the parent sends each batch's points (float32 arrays, no Python float lists)
and goes on with the next batch while the child upserts; every other store call waits for the
child's answer, after the upserts before it. This prototype marks points clean before the child
has acknowledged them, which the shipped protocol must not do (a crash in between would lose
them): a real implementation would mark them clean once acknowledged, in the next batch's
transaction (docs in BENCHMARKS.md, "one BLAS thread" and after).

    python -m bench.edge_process [--n 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import clip_like, report
from bench.ingest import inforank_ingest, plain_upsert


def _serve(conn: Any, root: str) -> None:
    from indexer.store.edge import EdgeStore

    store = EdgeStore(Path(root))
    while True:
        try:
            _, name, args, kw = conn.recv()
        except EOFError:
            break
        try:
            conn.send(("ok", getattr(store, name)(*args, **kw)))
        except Exception as exc:
            conn.send(("error", exc))
        if name == "close":
            break


class ChildEdge:
    """A VectorStore whose Edge shard lives in a child process; upserts are not waited for."""

    def __init__(self, root: Path) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, str(root)), daemon=True)
        self.proc.start()
        self.pending = 0
        self.segment_points = None  # the bench ingests without index builds

    def _drain(self) -> None:
        while self.pending:
            kind, value = self.conn.recv()
            self.pending -= 1
            if kind == "error":
                raise value

    def _call(self, name: str, *args: Any, **kw: Any) -> Any:
        self._drain()
        self.conn.send(("call", name, args, kw))
        kind, value = self.conn.recv()
        if kind == "error":
            raise value
        return value

    def upsert(self, name: str, points: Sequence[Any]) -> dict[str, str]:
        self.conn.send(("call", "upsert", (name, points), {}))
        self.pending += 1
        return {}

    def close(self) -> None:
        self._call("close")
        self.proc.join(30)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *args, **kw: self._call(name, *args, **kw)


def child_ingest(root: Path, vecs: np.ndarray, texts: np.ndarray, batch: int) -> float:
    from indexer import payload, sync
    from indexer.api import Indexer
    from indexer.items import Item
    from indexer.store import QdrantLocation
    from indexer.store.base import StorePoint

    def store_point(point: Any, rows: Sequence[Any], names: dict[str, str]) -> StorePoint:
        vectors: dict[str, Any] = {names[v.modality]: payload.unit_of(v) for v in rows}  # arrays, pickled whole
        return StorePoint(point.point_id, vectors, payload.payload(point, rows))

    real = sync.store_point
    sync.store_point = store_point  # type: ignore[assignment]
    try:
        ix = Indexer(f"sqlite:///{root}/db.sqlite", QdrantLocation(edge_path=str(root / "edge")))
        ix.store.close()
        ix.store = ChildEdge(root / "edge")  # type: ignore[assignment]
        ix.create_collection("bench", dim=vecs.shape[1])
        ix.add("bench", [Item({"text": t}, id=f"t{i}") for i, t in enumerate(texts)])
        t = time.perf_counter()
        rep = ix.add("bench", (Item({"image": v}, id=i) for i, v in enumerate(vecs)), batch_size=batch)
        count = ix.store.count("bench")  # waits for every upsert
        dt = time.perf_counter() - t
        assert len(rep.ingested) == len(vecs) and count == len(vecs) + len(texts)
        ix.close()
        return dt
    finally:
        sync.store_point = real


def run(n: int = 100_000, batch: int = 1024, repeat: int = 2) -> dict[str, Any]:
    vecs = clip_like(n, seed=3)
    texts = clip_like(1000, seed=4, shift=1)
    runs: dict[str, list[float]] = {"floor": [], "shipped": [], "edge_in_child": []}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            runs["floor"].append(plain_upsert(Path(d) / "floor", vecs, batch, scored=True))
            dt, ix = inforank_ingest(Path(d) / "shipped", vecs, texts, batch)
            ix.close()
            runs["shipped"].append(dt)
            runs["edge_in_child"].append(child_ingest(Path(d) / "child", vecs, texts, batch))
    best = {k: min(v) for k, v in runs.items()}
    return report(
        "edge_process",
        {
            "n": n,
            **{f"{k}_s": v for k, v in best.items()},
            "shipped_over_floor": best["shipped"] / best["floor"],
            "edge_in_child_over_floor": best["edge_in_child"] / best["floor"],
            "edge_in_child_over_shipped": best["edge_in_child"] / best["shipped"],
            "runs_s": runs,
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    run(a.n, a.batch, a.repeat)
