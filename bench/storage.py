"""What the exact vector log in SQL costs, and what reading vectors back from Qdrant instead would
give (issue 13's storage decision), on the embedded default, same run:

- ingest of N image vectors (against a fixed text bank) with the log as shipped, and with the
  log's vector column written empty (everything else identical: the same rows, indexes, scores,
  push) — what a ledger without vectors would save on the write; automatic rescores off in both,
  since a ledger's rescore would read its vectors elsewhere;
- the database's bytes per vector either way (after a WAL checkpoint), and how far the logged
  float32 unit vectors compress (zlib, and zlib after a byte shuffle);
- reading vectors back: from the database by item key (what unmerges, rescores and the hubness
  refresh do today) against Qdrant Edge's retrieve by point id, rows per second;
- whether Qdrant hands back exactly the float32 values that were merged: the vectors retrieved
  from Edge (cosine distance) compared bit for bit with the logged ones.

    python -m bench.storage [--n 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.common import clip_like, report
from indexer import writer
from indexer.api import Indexer
from indexer.db.models import PointRow, VectorRow
from indexer.items import Item
from indexer.store import QdrantLocation


class _NoVectors:
    """A session whose inserts of vector-log rows store an empty vector (the rest as given)."""

    def __init__(self, session: Any) -> None:
        self._s = session

    def execute(self, stmt: Any, params: Any = None, **kw: Any) -> Any:
        if isinstance(params, list) and params and isinstance(params[0], dict) and "vector" in params[0]:
            params = [{**p, "vector": b""} for p in params]
        return self._s.execute(stmt, params, **kw) if params is not None else self._s.execute(stmt, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)


@contextmanager
def without_log() -> Iterator[None]:
    original = writer._record

    def record(session: Any, *args: Any) -> Any:
        return original(cast(Session, _NoVectors(session)), *args)

    writer._record = record  # type: ignore[assignment]
    try:
        yield
    finally:
        writer._record = original


def ingest(root: Path, vecs: np.ndarray, texts: np.ndarray, log: bool) -> tuple[float, Indexer]:
    ix = Indexer(f"sqlite:///{root}/db.sqlite", QdrantLocation(edge_path=str(root / "edge")), auto_rescore=False)
    ix.create_collection("bench", dim=vecs.shape[1])
    ix.add("bench", [Item({"text": t}, id=f"t{i}") for i, t in enumerate(texts)])
    items = (Item({"image": v}, id=i) for i, v in enumerate(vecs))
    t = time.perf_counter()
    if log:
        rep = ix.add("bench", items, batch_size=1024)
    else:
        with without_log():
            rep = ix.add("bench", items, batch_size=1024)
    dt = time.perf_counter() - t
    assert len(rep.ingested) == len(vecs) and not rep.rejected
    return dt, ix


def db_bytes(root: Path) -> int:
    """The database's size on disk once its WAL is checkpointed (the indexer closed)."""
    with closing(sqlite3.connect(root / "db.sqlite")) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in root.glob("db.sqlite*"))


def read_back(ix: Indexer, n: int, batch: int = 2048) -> dict[str, Any]:
    """Rows per second reading image vectors by key from the database and by id from Edge, and
    how many of Edge's differ in any bit from the database's."""
    c = ix.collection("bench")
    rng = np.random.default_rng(0)
    order = rng.permutation(n)[: min(n, 20_000)]
    keys = [str(int(i)) for i in order]  # item keys are JSON: "17"
    t = time.perf_counter()
    logged: dict[str, bytes] = {}
    pids: dict[str, str] = {}
    with ix.reads() as s:
        for a in range(0, len(keys), 500):
            chunk = keys[a : a + 500]
            for k, v in s.execute(
                select(VectorRow.item_key, VectorRow.vector).where(
                    VectorRow.collection_id == c.id, VectorRow.modality == "image", VectorRow.item_key.in_(chunk)
                )
            ):
                logged[k] = v
    sql_s = time.perf_counter() - t
    with ix.reads() as s:
        for k, p in s.execute(select(PointRow.item_key, PointRow.point_id).where(PointRow.collection_id == c.id)):
            pids[k] = p
    ids = [pids[k] for k in keys]
    t = time.perf_counter()
    got: dict[str, np.ndarray] = {}
    for a in range(0, len(ids), batch):
        for h in ix.store.retrieve(c.qdrant_collection, ids[a : a + batch], with_vectors=True):
            assert h.vectors is not None
            got[h.id] = np.asarray(h.vectors["image"], dtype="<f4")
    edge_s = time.perf_counter() - t
    differ = sum(got[pids[k]].tobytes() != logged[k] for k in keys)
    return {
        "rows": len(keys),
        "sql_rows_per_s": len(keys) / sql_s,
        "edge_rows_per_s": len(keys) / edge_s,
        "edge_vectors_not_bit_identical": int(differ),
    }


def compressibility(vecs: np.ndarray) -> dict[str, float]:
    """Compressed size / raw size of the float32 unit vectors (lower is better)."""
    sample = np.ascontiguousarray(vecs[:10_000], dtype="<f4")
    raw = sample.tobytes()
    shuffled = sample.view(np.uint8).reshape(len(sample), -1, 4).transpose(0, 2, 1).tobytes()
    per_row = sum(len(zlib.compress(r.tobytes(), 6)) for r in sample[:2000]) / (2000 * sample.shape[1] * 4)
    return {
        "zlib_whole_sample": len(zlib.compress(raw, 6)) / len(raw),
        "zlib_byte_shuffled": len(zlib.compress(shuffled, 6)) / len(raw),
        "zlib_per_row": per_row,
    }


def run(n: int = 100_000, repeat: int = 2) -> dict[str, Any]:
    vecs = clip_like(n, seed=3)
    texts = clip_like(1000, seed=4, shift=1)
    runs: dict[str, list[float]] = {"log": [], "no_log": []}
    sizes: dict[str, int] = {}
    reads: dict[str, Any] = {}
    for r in range(repeat):
        for log in (True, False):
            with tempfile.TemporaryDirectory() as d:
                root = Path(d)
                dt, ix = ingest(root, vecs, texts, log)
                runs["log" if log else "no_log"].append(dt)
                if log and r == 0:
                    reads = read_back(ix, n)
                ix.close()
                sizes["log" if log else "no_log"] = db_bytes(root)
    vectors = n + len(texts)
    with_log, no_log = min(runs["log"]), min(runs["no_log"])
    return report(
        "storage",
        {
            "n": n,
            "ingest_with_log_s": with_log,
            "ingest_without_log_vectors_s": no_log,
            "log_share_of_ingest": 1 - no_log / with_log,
            "db_bytes_per_vector_with_log": sizes["log"] / vectors,
            "db_bytes_per_vector_without": sizes["no_log"] / vectors,
            "compressed_over_raw": compressibility(vecs),
            "read_back": reads,
            "runs_s": runs,
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    run(a.n, a.repeat)
