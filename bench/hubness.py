"""Search latency with the hubness correction vs the same search without it, same run, and the
fit's wall time. Embedded default (Qdrant Edge + SQLite), synthetic CLIP-shaped pairs.

    python -m bench.hubness [--pairs 50000] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import clip_like, report
from indexer.api import Indexer
from indexer.items import Item
from indexer.store import QdrantLocation
from retrieval import hubness
from retrieval.search import Searcher, SearchOptions


def run(pairs: int = 50_000, nq: int = 200) -> dict:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        ix = Indexer(f"sqlite:///{root / 'h.sqlite'}", QdrantLocation(edge_path=str(root / "q")), auto_rescore=False)
        try:
            ix.create_collection("c", dim=512)
            img, txt = clip_like(pairs, seed=1), clip_like(pairs, seed=2, shift=1)
            ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(pairs)], batch_size=4096)
            t = time.perf_counter()
            hubness.fit(ix, "c", k=4, beta=0.75)
            fit_s = time.perf_counter() - t
            s = Searcher(ix)
            queries = clip_like(nq, seed=9, shift=1)
            plain, corrected = SearchOptions(k=10), SearchOptions(k=10, hubness=True)
            s.search("c", queries[0], plain)
            s.search("c", queries[0], corrected)
            a, b = [], []
            for q in queries:  # interleaved, query by query
                t = time.perf_counter()
                s.search("c", q, plain)
                a.append(time.perf_counter() - t)
                t = time.perf_counter()
                s.search("c", q, corrected)
                b.append(time.perf_counter() - t)
        finally:
            ix.close()
    pa, pb = np.array(a) * 1e3, np.array(b) * 1e3
    return report(
        "hubness",
        {
            "items": 2 * pairs,
            "fit_s": fit_s,
            "plain": {"p50_ms": float(np.median(pa)), "p99_ms": float(np.percentile(pa, 99))},
            "hubness": {"p50_ms": float(np.median(pb)), "p99_ms": float(np.percentile(pb, 99))},
            "p50_ratio": float(np.median(pb) / np.median(pa)),
            "p99_ratio": float(np.percentile(pb, 99) / np.percentile(pa, 99)),
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=200)
    a = p.parse_args()
    run(a.pairs, a.queries)
