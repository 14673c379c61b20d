"""Ingest of N precomputed 512-d vectors: inforank (embedded default: Qdrant Edge + SQLite)
vs a plain upsert of the same vectors to the same backend, in the same run.

    python -m bench.ingest [--n 100000] [--batch 1024]

``--small-writes``: what one small write (64 pairs, as a backend posts them) and one ``stats``
cost in a collection of ``--n`` pairs against the same in a collection of 2,000 pairs, same run:
a ratio above 1 is a cost that grows with the collection on a path that should not.

    python -m bench.ingest --small-writes --n 50000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import clip_like, paired_store, report
from indexer.api import Indexer
from indexer.items import SCORE_FIELDS, Item
from indexer.store import QdrantLocation
from indexer.store.base import StorePoint
from indexer.store.edge import EdgeStore
from retrieval.cli.common import settled_heap


def plain_upsert(root: Path, vecs: np.ndarray, batch: int, scored: bool = False) -> float:
    """A plain upsert of the vectors; ``scored``: into a collection laid out as inforank's (both
    named vectors, float indexes on the score fields) with a payload of inforank's shape, values
    made up before the clock starts — the Qdrant floor of any design that stores the scores."""
    store = EdgeStore(root)
    d = vecs.shape[1]
    store.create("plain", {"image": d, "text": d} if scored else {"image": d}, SCORE_FIELDS if scored else [])
    ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))) for i in range(len(vecs))]
    payloads = [
        {
            "inforank_id": i,
            "image_hash": f"{i:064x}",
            "image_conformity": 0.3 + 1e-7 * i,
            "image_info_gain": 1.0 + 1e-7 * i,
            "image_raw_norm": 1.0,
            "image_stats_version": 1 + i // batch,
        }
        if scored
        else {"id": i}
        for i in range(len(vecs))
    ]
    t = time.perf_counter()
    for s in range(0, len(vecs), batch):
        store.upsert(
            "plain",
            [StorePoint(ids[i], {"image": vecs[i].tolist()}, payloads[i]) for i in range(s, min(s + batch, len(vecs)))],
        )
    dt = time.perf_counter() - t
    store.close()
    return dt


def bench_collection(root: Path, dim: int, texts: np.ndarray) -> Indexer:
    """Collection "bench" on the embedded default, holding ``texts`` (so the images' information
    gain is computable from their first batch on)."""
    ix = Indexer(f"sqlite:///{root}/db.sqlite", QdrantLocation(edge_path=str(root / "edge")))
    ix.create_collection("bench", dim=dim)
    ix.add("bench", [Item({"text": t}, id=f"t{i}") for i, t in enumerate(texts)])
    return ix


def inforank_ingest(root: Path, vecs: np.ndarray, texts: np.ndarray, batch: int) -> tuple[float, Indexer]:
    ix = bench_collection(root, vecs.shape[1], texts)
    items = (Item({"image": v}, id=i) for i, v in enumerate(vecs))
    t = time.perf_counter()
    rep = ix.add("bench", items, batch_size=batch)
    dt = time.perf_counter() - t
    assert len(rep.ingested) == len(vecs) and not rep.rejected
    return dt, ix


def run(n: int = 100_000, batch: int = 1024, repeat: int = 2) -> dict:
    """Each figure is the best of ``repeat`` runs, the three kinds interleaved run by run."""
    vecs = clip_like(n, seed=3)
    texts = clip_like(1000, seed=4, shift=1)
    runs: dict[str, list[float]] = {"plain": [], "floor": [], "ours": []}
    for _ in range(repeat):
        # every kind under the garbage-collector policy `inforank ingest` runs with
        with tempfile.TemporaryDirectory() as d, settled_heap():
            runs["plain"].append(plain_upsert(Path(d) / "plain", vecs, batch))
            runs["floor"].append(plain_upsert(Path(d) / "floor", vecs, batch, scored=True))
            dt, ix = inforank_ingest(Path(d) / "ours", vecs, texts, batch)
            assert ix.store.count("bench") == n + len(texts)
            ix.close()
            runs["ours"].append(dt)
    base, floor, ours = min(runs["plain"]), min(runs["floor"]), min(runs["ours"])
    return report(
        "ingest",
        {
            "n": n,
            "batch": batch,
            "backend": "embedded Qdrant Edge + SQLite",
            "plain_upsert_s": base,
            "scored_payload_upsert_s": floor,
            "inforank_s": ours,
            "ratio": ours / base,
            "floor_ratio": floor / base,
            "ratio_to_floor": ours / floor,
            "overhead_pct": 100 * (ours / base - 1),
            "goal_overhead_pct": 10,
            "inforank_items_per_s": n / ours,
            "runs_s": runs,
        },
    )


def _small_writes(n: int, writes: int, img: np.ndarray, txt: np.ndarray) -> tuple[list[float], list[float]]:
    with paired_store(img[:n], txt[:n], name="bench", batch=2048) as ix:
        adds, stats = [], []
        for w in range(writes):
            base = n + 64 * w
            items = [Item({"image": img[base + j], "text": txt[base + j]}, id=base + j) for j in range(64)]
            t = time.perf_counter()
            ix.add("bench", items)
            adds.append(time.perf_counter() - t)
        for _ in range(3):
            t = time.perf_counter()
            ix.stats("bench")
            stats.append(time.perf_counter() - t)
        return adds, stats


def small_writes(n: int = 50_000, small: int = 2_000, writes: int = 40) -> dict:
    """Median time of an ``add`` of 64 pairs and of ``stats`` into a collection of ``n`` pairs,
    against the same into one of ``small`` pairs (automatic rescores off in both, so each write
    is the write alone)."""
    img, txt = clip_like(n + 64 * writes, seed=1), clip_like(n + 64 * writes, seed=2, shift=1)
    out: dict = {"n": n, "small": small, "writes_of_64_pairs": writes}
    for label, size in (("small", small), ("large", n)):
        adds, stats = _small_writes(size, writes, img, txt)
        out[f"{label}_add_ms_p50"] = 1000 * float(np.median(adds))
        out[f"{label}_stats_s"] = float(np.median(stats))
    out["add_ratio"] = out["large_add_ms_p50"] / out["small_add_ms_p50"]
    out["stats_ratio"] = out["large_stats_s"] / out["small_stats_s"]
    return report("ingest_small_writes", out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--small-writes", action="store_true", help="time small writes and stats at --n against 2,000 pairs")
    a = p.parse_args()
    if a.small_writes:
        small_writes(a.n)
    else:
        run(a.n, a.batch, a.repeat)
