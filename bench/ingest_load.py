"""Ingest under concurrent load: 16 clients posting batches to one `inforank serve` backed by
PostgreSQL (Qdrant Edge for points), per-request latency p50/p99 and items/s; and where one
writer's time under the collection lock goes, from a single-writer profile in the same run.

    python -m bench.ingest_load [--clients 16] [--requests 12] [--batch 64] [--pg URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psycopg

from bench.common import clip_like, closed_loop, report, serving
from bench.search import pct


def _database(admin: str) -> str:
    name = f"inforank_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return admin.rpartition("/")[0] + "/" + name


def _drop(admin: str, url: str) -> None:
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')


def load(admin: str, clients: int, per_client: int, batch: int, code: Path | None = None) -> dict:
    """``code``: a checkout of another inforank version to serve instead (a same-run baseline)."""
    db = _database(admin)
    data = Path(tempfile.mkdtemp())
    try:
        with serving({"INFORANK_DATA_DIR": str(data), "INFORANK_DATABASE_URL": db}, code) as url:
            return _load(url, clients, per_client, batch)
    finally:
        _drop(admin, db)


def _load(url: str, clients: int, per_client: int, batch: int) -> dict:
    """The timed part: 16 writers against a warmed collection."""
    httpx.post(url + "/collections", json={"name": "load", "dim": 512}, timeout=30).raise_for_status()
    n = clients * per_client * batch
    img, txt = clip_like(n, seed=5), clip_like(n, seed=6, shift=1)
    # a warm collection first, so every timed request is a steady-state write
    warm = [{"id": f"w{i}", "image": img[i].tolist(), "text": txt[i].tolist()} for i in range(256)]
    httpx.post(url + "/collections/load/items", json={"items": warm}, timeout=120).raise_for_status()

    def request(k: int, j: int) -> tuple[str, dict]:
        s = (k * per_client + j) * batch
        items = [{"id": i, "image": img[i].tolist(), "text": txt[i].tolist()} for i in range(s, s + batch)]
        return "/collections/load/items", {"items": items}

    res = closed_loop(url, clients, per_client, request)
    lat, errors, wall = res["latencies"], res["errors"], res["wall"]
    return {
        "clients": clients,
        "requests": len(lat),
        "batch_pairs": batch,
        "errors": errors,
        "pairs_per_s": len(lat) * batch / wall,
        "max_ms": float(np.max(lat) * 1e3),
        **pct(lat),
    }


def lock_profile(admin: str, batch: int, batches: int = 12) -> dict:
    """One writer, the same batches: time inside the write's transaction (lock held from the
    collection lock to commit), split by phase with the profiler."""
    import cProfile
    import pstats

    from indexer import writer
    from indexer.api import Indexer
    from indexer.items import Item
    from indexer.store import QdrantLocation

    db = _database(admin)
    data = Path(tempfile.mkdtemp())
    ix = Indexer(db, QdrantLocation(edge_path=str(data / "q")))
    try:
        ix.create_collection("p", dim=512)
        n = batch * (batches + 4)
        img, txt = clip_like(n, seed=7), clip_like(n, seed=8, shift=1)
        ix.add("p", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(4 * batch)], batch_size=4 * batch)
        prof = cProfile.Profile()
        real = writer.write

        def profiled(*a, **k):  # type: ignore[no-untyped-def]
            return prof.runcall(real, *a, **k)

        writer.write = profiled  # type: ignore[assignment]
        t = time.perf_counter()
        for b in range(4, 4 + batches):
            ix.add("p", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(b * batch, (b + 1) * batch)])
        total = time.perf_counter() - t
        writer.write = real  # type: ignore[assignment]
        st = pstats.Stats(prof)
        cum = {f"{Path(k[0]).name}:{k[2]}": v[3] for k, v in st.stats.items()}  # type: ignore[attr-defined]

        def ms(*names: str) -> float:
            return 1e3 * sum(cum.get(n, 0.0) for n in names) / batches

        return {
            "batch_pairs": batch,
            "add_ms_per_batch": 1e3 * total / batches,
            "write_txn_ms_per_batch": ms("writer.py:write"),
            "lock_wait_and_read_rows_ms": ms("writer.py:lock_collection", "writer.py:_rows"),
            "record_rows_ms": ms("writer.py:_record"),
            "touch_points_ms": ms("writer.py:_touch_points"),
            "write_statistics_ms": ms("statstore.py:write_moments"),
            "merge_moments_ms": ms("writer.py:_batch_moments"),
            "freshness_ms": ms("writer.py:track_freshness"),
        }
    finally:
        ix.close()
        _drop(admin, db)


def run(admin: str, clients: int = 16, per_client: int = 12, batch: int = 64, baseline: Path | None = None) -> dict:
    out = {"load": load(admin, clients, per_client, batch), "one_writer": lock_profile(admin, batch)}
    if baseline is not None:
        out["baseline_load"] = load(admin, clients, per_client, batch, code=baseline)
    return report("ingest_load", out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=12, help="requests per client")
    p.add_argument("--batch", type=int, default=64, help="pairs per request")
    p.add_argument("--baseline", type=Path, help="a checkout of another version, served the same load after")
    a = p.parse_args()
    run(a.pg, a.clients, a.requests, a.batch, a.baseline)
