"""What limits several writers on PostgreSQL: statistics-lock throughput with 1, 2 and 4 writer
processes committing into one collection.

Each process repeats inforank's per-batch critical section for ``--seconds``: lock the
collection row (``SELECT … FOR UPDATE``), read the running statistics, merge a batch of
``--batch`` 512-d vectors (Chan), write them back with the version bump, commit. Reported:
batches/s in total, and the share of each batch's wall time spent waiting for the lock. The
baseline is the same run's single process. (The full ingest path adds work *outside* the lock —
validation, hashing, scoring, the vector log, the Qdrant push — which parallelises.)

    python -m bench.writers [--pg postgresql://postgres@127.0.0.1:5432/test] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import uuid
from typing import Any

import numpy as np
import psycopg

from bench.common import clip_like, report
from bench.stats_persist import D, stats_collection
from indexer.db.engine import make_engine, session_factory
from indexer.db.statstore import StatsCache, lock_collection, write_moments
from indexer.moments import Moments


def _writer(url: str, cid: int, batch: int, seconds: float, seed: int, out: Any) -> None:
    sessions = session_factory(make_engine(url))
    cache = StatsCache()
    data = clip_like(batch, D, seed=seed).astype(np.float64)
    done, waited = 0, 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        delta = Moments.from_batch(data, np.ones(batch))  # outside the lock, as in ingest
        with sessions.begin() as s:
            t = time.perf_counter()
            c = lock_collection(s, cid)
            waited += time.perf_counter() - t
            _, cur = cache.get(s, cid, "image", D)
            c.stats_version += 1
            write_moments(s, cid, "image", cur.merge(delta), c.stats_version)
        done += 1
    out.put((done, waited))


def run(pg: str, seconds: float = 10.0, batch: int = 1024) -> dict[str, Any]:
    name = f"inforank_w_{uuid.uuid4().hex[:8]}"
    base, _, _ = pg.rpartition("/")
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    try:
        cid = stats_collection(url, "w")
        ctx = mp.get_context("spawn")
        res: dict[str, Any] = {}
        for procs in (1, 2, 4):
            q = ctx.Queue()
            ps = [ctx.Process(target=_writer, args=(url, cid, batch, seconds, k, q)) for k in range(procs)]
            for p in ps:
                p.start()
            got = [q.get() for _ in ps]
            for p in ps:
                p.join()
            batches = sum(g[0] for g in got)
            res[str(procs)] = {
                "batches_per_s": batches / seconds,
                "vectors_per_s": batches * batch / seconds,
                "lock_wait_share": sum(g[1] for g in got) / (procs * seconds),
            }
        one = res["1"]["batches_per_s"]
        for r in res.values():
            r["vs_one_process"] = r["batches_per_s"] / one
        return report("writers", {"database": "postgresql", "batch": batch, "seconds": seconds, "processes": res})
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=1024)
    a = ap.parse_args()
    run(a.pg, a.seconds, a.batch)
