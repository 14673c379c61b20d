"""Real PostgreSQL: migrations, persistence and concurrent writers in separate processes."""

import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import inspect

from indexer.api import Indexer
from indexer.db.engine import make_engine, upgrade
from indexer.moments import Moments
from indexer.store import QdrantLocation
from tests import workers

pytestmark = pytest.mark.postgres


def test_alembic_creates_schema_and_models_agree(pg_url: str):
    upgrade(pg_url)
    tables = set(inspect(make_engine(pg_url)).get_table_names())
    assert {"collections", "modality_stats", "points", "item_vectors", "alignment_maps"} <= tables
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        capture_output=True,
        text=True,
        env={"INFORANK_DATABASE_URL": pg_url, "PATH": ""},
        cwd=workers.__file__.rsplit("/", 2)[0],
    )
    assert out.returncode == 0, out.stderr
    assert "No new upgrade operations detected" in out.stdout + out.stderr


def test_concurrent_writers_lose_no_update(pg_url: str):
    ix = Indexer(pg_url, QdrantLocation(local_path=":memory:"))
    ix.create_collection("c", dim=workers.D, min_count=8)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=workers.concurrent_writer, args=(pg_url, k * 60, (k + 1) * 60, 7)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    everything = workers.items(0, 240)
    for m in ("image", "text"):
        raw = np.stack([it.vectors[m] for it in everything])
        unit = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
        want = Moments.from_batch(unit.astype(np.float64), np.linalg.norm(raw, axis=1))
        _, got = ix.moments("c", m)
        assert got.n == 240
        assert np.max(np.abs(got.m2 - want.m2)) <= 1e-9 * np.max(np.abs(want.m2))
        assert np.max(np.abs(got.mean - want.mean)) <= 1e-9
    # 4 processes × ceil(60/7)=9 batches, each one version
    assert ix.collection("c").stats_version == 36
    ix.close()


def test_several_ingest_processes_share_postgres_and_one_qdrant_server(pg_url: str, qdrant_server: str):
    """The deployment past one machine: four ingest processes, one PostgreSQL, one Qdrant server.
    Afterwards every item is one point with its database payload, nothing is dirty, and the
    statistics equal a from-scratch computation (skipped without Docker)."""
    from tests.consistency import assert_consistent

    ix = Indexer(pg_url, QdrantLocation(url=qdrant_server))
    ix.create_collection("c", dim=workers.D, min_count=8)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=workers.concurrent_writer, args=(pg_url, k * 60, (k + 1) * 60, 7, qdrant_server))
        for k in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    assert_consistent(ix, "c")
    assert ix.store.count(ix.collection("c").qdrant_collection) == 240
    ix.drop_collection("c")
    ix.close()


def test_statistics_read_is_cached_by_version(pg_url: str):
    ix = Indexer(pg_url, QdrantLocation(local_path=":memory:"))
    ix.create_collection("c", dim=workers.D)
    ix.add("c", workers.items(0, 20))
    v1, a = ix.moments("c", "image")
    v2, b = ix.moments("c", "image")
    assert v1 == v2 and a is b  # no reload while the version stands
    ix.add("c", workers.items(20, 30))
    v3, c = ix.moments("c", "image")
    assert v3 == v1 + 1 and c.n == 30
    fresh = Indexer(pg_url, QdrantLocation(local_path=":memory:"), migrate=False)
    assert fresh.moments("c", "image")[1].n == 30  # persisted, read by a new process-level cache
    ix.close()
    fresh.close()
