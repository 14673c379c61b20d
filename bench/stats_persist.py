"""Statistics merge + persist time per batch (1, 64, 1024 vectors, d=512), SQLite and PostgreSQL.

Baseline (same run, same database): a transaction that only overwrites the statistics row's
blobs with the same bytes — the floor any O(d²) persisted design pays. inforank's figure adds
the collection lock, the Chan merge and the version bump.

    python -m bench.stats_persist [--pg postgresql://postgres@127.0.0.1:5432/test] [--rounds 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import numpy as np
import psycopg
from sqlalchemy import update

from bench.common import clip_like, report
from indexer.db.engine import make_engine, session_factory, upgrade
from indexer.db.models import CollectionRow, StatsRow
from indexer.db.statstore import StatsCache, lock_collection, to_bytes, write_moments
from indexer.moments import Moments

D = 512


def stats_collection(url: str, name: str = "b") -> int:
    """A migrated database at ``url`` with one collection whose image statistics hold 100
    vectors: what the statistics benchmarks merge into. Returns its id."""
    upgrade(url)
    sessions = session_factory(make_engine(url))
    with sessions.begin() as s:
        row = CollectionRow(
            name=name,
            model="external",
            pretrained="",
            dim=D,
            tau=1.0,
            min_count=32,
            qdrant_collection=name,
            vector_names={"image": "image"},
            attached=False,
            stats_version=0,
        )
        s.add(row)
        s.flush()
        write_moments(s, row.id, "image", Moments.from_batch(clip_like(100, D).astype(np.float64), np.ones(100)), 0)
        return int(row.id)


def _one_db(url: str, rounds: int) -> dict[str, dict[str, float]]:
    cid = stats_collection(url)
    sessions = session_factory(make_engine(url))
    cache = StatsCache()
    out = {}
    for b in (1, 64, 1024):
        data = clip_like(b * rounds, D, seed=b).astype(np.float64)
        ours, base = [], []
        for r in range(rounds):
            t = time.perf_counter()
            with sessions.begin() as s:
                c = lock_collection(s, cid)
                _, cur = cache.get(s, cid, "image", D)
                new = cur.merge(Moments.from_batch(data[r * b : (r + 1) * b], np.ones(b)))
                c.stats_version += 1
                write_moments(s, cid, "image", new, c.stats_version)
            cache.put(cid, "image", c.stats_version, new)
            ours.append(time.perf_counter() - t)
            blob_m, blob_m2 = to_bytes(new.mean), to_bytes(new.m2)
            t = time.perf_counter()
            with sessions.begin() as s:
                s.execute(
                    update(StatsRow)
                    .where(StatsRow.collection_id == cid, StatsRow.kind == "current")
                    .values(mean=blob_m, m2=blob_m2, raw_mean=blob_m)
                )
            base.append(time.perf_counter() - t)
        o, bl = float(np.median(ours)), float(np.median(base))
        out[str(b)] = {"inforank_ms": o * 1e3, "raw_persist_ms": bl * 1e3, "ratio": o / bl}
    return out


def run(pg: str | None, rounds: int = 20) -> dict:
    res = {}
    with tempfile.TemporaryDirectory() as d:
        res["sqlite"] = _one_db(f"sqlite:///{d}/bench.sqlite", rounds)
    if pg:
        name = f"inforank_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        try:
            res["postgres"] = _one_db(pg.rsplit("/", 1)[0] + "/" + name, rounds)
        finally:
            with psycopg.connect(pg, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return report("stats_persist", {"d": D, "rounds": rounds, "median_per_batch": res})


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args()
    run(a.pg or None, a.rounds)
