"""A million pairs on one machine (the embedded default): ingest rate as the collection grows,
bytes per item on disk, peak memory, search on exact scan and on HNSW, and the first search
after a restart. Separate from ``run_all`` (``--n 1000000`` takes most of an hour on 2 cores).

    python -m bench.scale [--n 1000000] [--chunk 100000] [--queries 100] [--dir DIR]

Vectors: CLIP-shaped synthetic pairs (``clip_like``: anisotropic, off-centre shells, one per
modality); ids 0..n-1, each with an image and a text vector. Every figure is a ratio against a
baseline of the same run: the first chunk's ingest rate, the plain query on the same index kind,
warm searches of the same process.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import clip_like, report
from bench.search import interleaved, recall
from indexer.api import Indexer
from indexer.items import Item
from indexer.store import QdrantLocation
from retrieval.options import SearchOptions
from retrieval.search import EF_CROSS, Searcher


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def run(n: int = 1_000_000, chunk: int = 100_000, nq: int = 100, root: Path | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(dir=root))
    db, edge = tmp / "db.sqlite", tmp / "edge"
    try:
        ix = Indexer(f"sqlite:///{db}", QdrantLocation(edge_path=str(edge)))
        ix.create_collection("scale", dim=512, min_count=32)
        rates = []
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            img = clip_like(m, seed=start + 1)
            txt = clip_like(m, seed=start + 2, shift=1)
            items = (Item({"image": img[i], "text": txt[i]}, id=start + i) for i in range(m))
            t = time.perf_counter()
            ix.add("scale", items, batch_size=1024)
            rates.append(m / (time.perf_counter() - t))
            print(f"{start + m} pairs: {rates[-1]:.0f} pairs/s", flush=True)
        ingest_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ix.close()
        sql_bytes = sum(_du(p) for p in tmp.glob("db.sqlite*"))
        edge_before = _du(edge)

        ix = Indexer(f"sqlite:///{db}", QdrantLocation(edge_path=str(edge)))
        queries = clip_like(nq, seed=10**9, shift=1)  # text-like queries of images
        opts = SearchOptions(k=10, exclude_bottom_info_gain_pct=5, rerank_info_gain=0.05, rerank_conformity=-0.05)
        t = time.perf_counter()
        s = Searcher(ix)
        s.search("scale", queries[0], opts)
        cold = time.perf_counter() - t
        exact = interleaved(ix, s, queries[1:], opts, None, "scale")
        print(
            f"sql {sql_bytes} B, qdrant {edge_before} B, rss {ingest_rss_mb:.0f} MB, cold {cold * 1e3:.0f} ms",
            flush=True,
        )
        print("exact", {k: v for k, v in exact.items() if k != "_ids"}, flush=True)  # the build may take long
        t = time.perf_counter()
        built = ix.optimize("scale", force=True)
        build_s = time.perf_counter() - t
        s = Searcher(ix)
        s.search("scale", queries[0], opts)
        hnsw = interleaved(ix, s, queries[1:], opts, EF_CROSS, "scale")
        (ep, eo), (hp, ho) = exact.pop("_ids"), hnsw.pop("_ids")
        hnsw.update(
            recall_plain=recall(hp, ep),
            recall_filtered_reranked=recall(ho, eo),
            build_s=build_s,
            indexed_vectors=built["after"]["indexed_vectors"],
            plain_p50_exact_over_hnsw=exact["plain_query"]["p50_ms"] / hnsw["plain_query"]["p50_ms"],
        )
        ix.close()
        edge_after = _du(edge)

        ix = Indexer(f"sqlite:///{db}", QdrantLocation(edge_path=str(edge)))
        s = Searcher(ix)
        t = time.perf_counter()
        s.warm("scale")
        warm_up = time.perf_counter() - t
        t = time.perf_counter()
        s.search("scale", queries[1], opts)
        first = time.perf_counter() - t
        warm = []
        for q in queries[2:42]:
            t = time.perf_counter()
            s.search("scale", q, opts)
            warm.append(time.perf_counter() - t)
        ix.close()
        w50 = float(np.median(warm)) * 1e3
        per_vector = {
            "sql": sql_bytes / (2 * n),
            "qdrant": edge_before / (2 * n),
            "qdrant_with_hnsw": edge_after / (2 * n),
        }
        return report(
            "scale",
            {
                "pairs": n,
                "chunk": chunk,
                "ingest_pairs_per_s": rates,
                "ingest_last_over_first": rates[-1] / rates[0],
                "ingest_peak_rss_mb": ingest_rss_mb,
                "bytes": {"sql": sql_bytes, "qdrant": edge_before, "qdrant_with_hnsw": edge_after},
                "bytes_per_vector": per_vector,
                "exact": exact,
                "hnsw": hnsw,
                "restart": {
                    "cold_first_ms": cold * 1e3,
                    "service_warm_up_ms": warm_up * 1e3,
                    "first_after_warm_up_ms": first * 1e3,
                    "warm_p50_ms": w50,
                    "ratio": first * 1e3 / w50,
                },
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "goal": {"p50_ratio": 1.3, "p99_ratio": 1.5, "restart_ratio": 1.2, "ingest_last_over_first": 0.8},
            },
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=None, help="where the stores go (needs ~12 GB at 1M)")
    a = ap.parse_args()
    run(a.n, a.chunk, a.queries, a.dir)
