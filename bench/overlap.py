"""Sizing a lever, not a shipped path: the ingest with the next batch's database write on a
worker thread while the main thread pushes this batch to Qdrant Edge, against the ingest as
shipped and the scored-payload floor, in the same run.

SQLite and BLAS release the GIL, so the write of batch k+1 might overlap Edge's half of batch k
inside one process. The push here holds no database lock during Edge's update: it reads the
points' revisions, upserts those still dirty at the revision this write gave them, then marks
them clean only where the revision is still that one (one short transaction). With pushes
serialised in the process — as Edge's directory lock makes them — a point changed in between
stays dirty for its own writer's push. The run checks that every point ended clean and in Edge.

    python -m bench.overlap [--n 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, select, true, update

from bench.common import clip_like, report
from bench.ingest import bench_collection, inforank_ingest, plain_upsert
from indexer import blas, writer
from indexer.api import Indexer
from indexer.collections import Collection
from indexer.db.models import PointRow
from indexer.items import Item
from indexer.payload import store_point
from indexer.sync import sync_dirty
from retrieval.cli.common import settled_heap

_POINTS = PointRow.__table__


def _push(ix: Indexer, c: Collection, fresh: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
    if not fresh:
        return
    keys = [p["item_key"] for p, _ in fresh]
    held: dict[str, int] = {}
    with ix.sessions() as s:  # a read: no write lock while Edge works
        for start in range(0, len(keys), 500):
            rows = s.execute(
                select(PointRow.item_key, PointRow.revision).where(
                    PointRow.collection_id == c.id,
                    PointRow.item_key.in_(keys[start : start + 500]),
                    PointRow.dirty == true(),
                )
            )
            held.update((k, r) for k, r in rows)
    live = [(SimpleNamespace(**p), [SimpleNamespace(**v) for v in vs]) for p, vs in fresh]
    live = [(p, vs) for p, vs in live if held.get(p.item_key) == p.revision]
    if not live:  # a replay (below) already pushed them
        return
    refused = ix.store.upsert(c.qdrant_collection, [store_point(p, vs, c.vector_names) for p, vs in live])
    if refused:
        raise RuntimeError(f"Edge refused {len(refused)} points")
    with ix.sessions.begin() as s:
        s.connection().execute(
            update(_POINTS)
            .where(_POINTS.c.collection_id == c.id, _POINTS.c.item_key == bindparam("k"))
            .where(_POINTS.c.revision == bindparam("r"))
            .values(dirty=False, quarantine=None),
            [{"k": p.item_key, "r": p.revision} for p, _ in live],
        )


def _settle(ix: Indexer, c: Collection, written: tuple[int, Any]) -> int:
    """Push a batch's new points; points it left dirty otherwise (scores that became computable)
    go through the shipped replay, as the shipped write does."""
    n, outbox = written
    _push(ix, c, outbox.fresh)
    if outbox.others:
        sync_dirty(ix.sessions, ix.store, c)
    return n


def overlapped_ingest(root: Path, vecs: np.ndarray, texts: np.ndarray, batch: int) -> float:
    ix = bench_collection(root, vecs.shape[1], texts)
    try:
        c = ix.collection("bench")

        def write(items: list[Item], offset: int) -> tuple[int, Any]:
            with ix.sessions.begin() as s:
                rep, new, outbox = writer.write(s, ix.cache, c, items, offset)
            for m, (v, mom) in new.items():
                ix.cache.put(c.id, m, v, mom)
            return len(rep.ingested), outbox

        done = 0
        t = time.perf_counter()
        # BLAS to one thread for the whole run, as the shipped writer does per batch (a limit
        # set from a worker thread is ignored once the main thread has set one)
        with blas.one_thread(), ThreadPoolExecutor(1) as pool:
            pending = None
            for start in range(0, len(vecs), batch):
                items = [Item({"image": vecs[i]}, id=i) for i in range(start, min(start + batch, len(vecs)))]
                nxt = pool.submit(write, items, start)
                if pending is not None:
                    done += _settle(ix, c, pending.result())
                pending = nxt
            if pending is not None:
                done += _settle(ix, c, pending.result())
        dt = time.perf_counter() - t
        with ix.sessions() as s:
            dirty = s.execute(select(func.count()).where(PointRow.collection_id == c.id, PointRow.dirty == true()))
            left = dirty.scalar_one()
        if done != len(vecs) or left or ix.store.count("bench") != len(vecs) + len(texts):
            raise RuntimeError(f"overlapped ingest lost points: {done} written, {left} dirty")
        return dt
    finally:
        ix.close()


def run(n: int = 100_000, batch: int = 1024, repeat: int = 2) -> dict:
    vecs = clip_like(n, seed=3)
    texts = clip_like(1000, seed=4, shift=1)
    runs: dict[str, list[float]] = {"floor": [], "shipped": [], "overlapped": []}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d, settled_heap():
            runs["floor"].append(plain_upsert(Path(d) / "floor", vecs, batch, scored=True))
            dt, ix = inforank_ingest(Path(d) / "ours", vecs, texts, batch)
            ix.close()
            runs["shipped"].append(dt)
            runs["overlapped"].append(overlapped_ingest(Path(d) / "overlap", vecs, texts, batch))
    floor = min(runs["floor"])
    return report(
        "overlap",
        {
            "n": n,
            "batch": batch,
            "runs_s": runs,
            "shipped_over_floor": min(runs["shipped"]) / floor,
            "overlapped_over_floor": min(runs["overlapped"]) / floor,
            "overlapped_over_shipped": min(runs["overlapped"]) / min(runs["shipped"]),
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    run(a.n, a.batch, a.repeat)
