"""Search latency at N points: filtered + reranked inforank search vs a plain nearest-neighbour
query of the same k on the same backend (embedded Qdrant Edge), and HTTP service throughput
under 16 concurrent clients.

    python -m bench.search [--n 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import clip_like, closed_loop, report, serving
from bench.ingest import inforank_ingest
from indexer.store.base import QuerySpec
from retrieval.search import Searcher, SearchOptions


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.array(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def service_throughput(data_dir: Path, queries: np.ndarray, clients: int = 16, per_client: int = 25) -> dict:
    with serving({"INFORANK_DATA_DIR": str(data_dir)}) as url:
        body = {"vector": queries[0].tolist(), "k": 10, "exclude_bottom_info_gain_pct": 5, "rerank_info_gain": 0.05}
        cold = time.perf_counter()
        httpx.post(url + "/collections/bench/search", json=body, timeout=60)  # first query reads the scores
        cold = time.perf_counter() - cold

        def request(k: int, j: int) -> tuple[str, dict]:
            q = queries[(k * per_client + j) % len(queries)].tolist()
            return "/collections/bench/search", {**body, "vector": q}

        res = closed_loop(url, clients, per_client, request, timeout=30)
        lat, errors, wall = res["latencies"], res["errors"], res["wall"]
        return {
            "clients": clients,
            "requests": len(lat),
            "errors": errors,
            "qps": len(lat) / wall,
            "first_query_ms": cold * 1e3,
            **_pct(lat),
        }


def run(n: int = 100_000, nq: int = 200) -> dict:
    vecs = clip_like(n, seed=3)
    texts = clip_like(1000, seed=4, shift=1)
    queries = clip_like(nq, seed=9, shift=1)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _, ix = inforank_ingest(root, vecs, texts, 1024)
        c = ix.collection("bench")
        s = Searcher(ix)
        opts = SearchOptions(k=10, exclude_bottom_info_gain_pct=5, rerank_info_gain=0.05, rerank_conformity=-0.05)
        s.search("bench", queries[0], opts)  # warm the score-distribution cache
        plain, ours = [], []
        fallbacks = 0
        for q in queries:  # interleaved, so drift hits both alike
            t = time.perf_counter()
            ix.store.query(c.qdrant_collection, QuerySpec(vector=q.tolist(), using="image", limit=10))
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            res = s.search("bench", q, opts)
            ours.append(time.perf_counter() - t)
            assert len(res.results) == 10
            fallbacks += res.applied["image_filter_plan"] == "filtered search"
        ix.close()
        # the service reads the same embedded store, laid out as its data dir expects
        (root / "data").mkdir()
        (root / "db.sqlite").rename(root / "data" / "inforank.sqlite")
        (root / "edge").rename(root / "data" / "qdrant")
        svc = service_throughput(root / "data", queries)
    p, o = _pct(plain), _pct(ours)
    return report(
        "search",
        {
            "n": n,
            "queries": nq,
            "k": 10,
            "depth": 100,
            "backend": "embedded Qdrant Edge (exact search)",
            "plain_query": p,
            "filtered_reranked": o,
            "p50_ratio": o["p50_ms"] / p["p50_ms"],
            "p99_ratio": o["p99_ms"] / p["p99_ms"],
            "filtered_search_fallbacks": fallbacks,
            "goal": {"p50_ratio": 1.3, "p99_ratio": 1.5},
            "service": svc,
        },
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    run(a.n, a.queries)
