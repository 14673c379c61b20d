"""Search latency at N points: filtered + reranked inforank search vs a plain nearest-neighbour
query of the same k on the same backend (embedded Qdrant Edge), first on exact search, then on
the HNSW index (same beam width for both, recall against the exact answers); the first search
after reopening the store vs warm ones; and HTTP service throughput under 16 concurrent clients.

    python -m bench.search [--n 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import clip_like, closed_loop, report, serving
from bench.ingest import inforank_ingest
from indexer.api import Indexer
from indexer.store import QdrantLocation
from indexer.store.base import QuerySpec
from retrieval.search import Searcher, SearchOptions


def pct(xs: list[float]) -> dict[str, float]:
    a = np.array(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def compared(base: tuple[str, list[float]], other: tuple[str, list[float]]) -> dict[str, Any]:
    """Both runs' p50/p99 (ms) under their names, and ``other`` over ``base`` at each."""
    b, o = pct(base[1]), pct(other[1])
    return {base[0]: b, other[0]: o, "p50_ratio": o["p50_ms"] / b["p50_ms"], "p99_ratio": o["p99_ms"] / b["p99_ms"]}


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
            **pct(lat),
        }


def interleaved(
    ix: Indexer,
    s: Searcher,
    queries: np.ndarray,
    opts: SearchOptions,
    ef: int | None,
    name: str = "bench",
    exact: bool = False,
) -> dict:
    """Plain query vs inforank search, query by query (so drift hits both alike); ``_ids`` holds
    each query's answers, for :func:`recall`. ``exact``: both by full scan, also where an index exists."""
    c = ix.collection(name)
    opts = replace(opts, exact=True) if exact else opts
    plain, ours, ids_plain, ids_ours, fallbacks = [], [], [], [], 0
    for q in queries:
        t = time.perf_counter()
        spec = QuerySpec(vector=q.tolist(), using="image", limit=10, ef=ef, exact=exact)
        hits = ix.store.query(c.qdrant_collection, spec)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = s.search(name, q, opts)
        ours.append(time.perf_counter() - t)
        assert len(res.results) == 10
        fallbacks += res.applied["image_filter_plan"] == "filtered search"
        ids_plain.append({h.payload.get("inforank_id") for h in hits})
        ids_ours.append({r.id for r in res.results})
    return {
        **compared(("plain_query", plain), ("filtered_reranked", ours)),
        "filtered_search_fallbacks": fallbacks,
        "_ids": (ids_plain, ids_ours),
    }


def mixed_cost(s: Searcher, queries: np.ndarray, name: str = "bench") -> dict:
    """A mixed list (images and texts, k = 10) calibrated from both sides — each modality's
    ``MIX_REACH``·k best fetched with their vectors and rescored — against the same list merged on
    raw cosine (each modality's 10 best, no vectors), query by query."""
    raw_opts = SearchOptions(k=10, modality="all", calibrate=False)
    cal_opts = SearchOptions(k=10, modality="all")
    raw, cal = [], []
    for q in queries:
        t = time.perf_counter()
        s.search(name, q, raw_opts)
        raw.append(time.perf_counter() - t)
        t = time.perf_counter()
        s.search(name, q, cal_opts)
        cal.append(time.perf_counter() - t)
    return compared(("raw_merge", raw), ("calibrated", cal))


def recall(approx: list[set], exact: list[set]) -> float:
    return float(np.mean([len(a & e) / max(len(e), 1) for a, e in zip(approx, exact, strict=True)]))


def run(n: int = 100_000, nq: int = 200) -> dict:
    vecs = clip_like(n, seed=3)
    texts = clip_like(1000, seed=4, shift=1)
    queries = clip_like(nq, seed=9, shift=1)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _, ix = inforank_ingest(root, vecs, texts, 1024)
        s = Searcher(ix)
        opts = SearchOptions(k=10, exclude_bottom_info_gain_pct=5, rerank_info_gain=0.05, rerank_conformity=-0.05)
        s.search("bench", queries[0], opts)  # warm the score-distribution cache
        exact = interleaved(ix, s, queries, opts, None)
        s.search("bench", queries[0], SearchOptions(k=10, modality="all"))
        mixed = mixed_cost(s, queries)
        t = time.perf_counter()
        built = ix.optimize("bench", force=True)
        build_s = time.perf_counter() - t
        s = Searcher(ix)
        s.search("bench", queries[0], opts)
        from retrieval.search import EF_CROSS

        hnsw = interleaved(ix, s, queries, opts, EF_CROSS)  # text-like queries: the wide beam, for both
        (ep, eo), (hp, ho) = exact.pop("_ids"), hnsw.pop("_ids")
        hnsw["recall@10_plain"] = recall(hp, ep)
        hnsw["recall@10_filtered_reranked"] = recall(ho, eo)
        hnsw["build_s"] = build_s
        hnsw["indexed_vectors"] = built["after"]["indexed_vectors"]
        hnsw["plain_p50_exact_over_hnsw"] = exact["plain_query"]["p50_ms"] / hnsw["plain_query"]["p50_ms"]
        ix.close()
        # the first search after a restart (a new process's Indexer and Searcher) vs warm ones
        ix = Indexer(f"sqlite:///{root}/db.sqlite", QdrantLocation(edge_path=str(root / "edge")))
        t = time.perf_counter()
        s = Searcher(ix)
        s.search("bench", queries[1], opts)
        first = time.perf_counter() - t
        warm = []
        for q in queries[2:52]:
            t = time.perf_counter()
            s.search("bench", q, opts)
            warm.append(time.perf_counter() - t)
        ix.close()
        # as `inforank serve` starts: warm() before the first request
        ix = Indexer(f"sqlite:///{root}/db.sqlite", QdrantLocation(edge_path=str(root / "edge")))
        s = Searcher(ix)
        t = time.perf_counter()
        s.warm("bench")
        warm_up = time.perf_counter() - t
        t = time.perf_counter()
        s.search("bench", queries[1], opts)
        served_first = time.perf_counter() - t
        w50 = float(np.median(warm)) * 1e3
        restart = {
            "cold_first_ms": first * 1e3,
            "warm_p50_ms": w50,
            "cold_ratio": first * 1e3 / w50,
            "service_warm_up_ms": warm_up * 1e3,
            "first_after_warm_up_ms": served_first * 1e3,
            "ratio": served_first * 1e3 / w50,
        }
        ix.close()
        # the service reads the same embedded store, laid out as its data dir expects
        (root / "data").mkdir()
        (root / "db.sqlite").rename(root / "data" / "inforank.sqlite")
        (root / "edge").rename(root / "data" / "qdrant")
        svc = service_throughput(root / "data", queries)
    return report(
        "search",
        {
            "n": n,
            "queries": nq,
            "k": 10,
            "depth": 100,
            "backend": "embedded Qdrant Edge",
            "exact": exact,
            "hnsw": hnsw,
            "restart": restart,
            "mixed": mixed,
            "goal": {"p50_ratio": 1.3, "p99_ratio": 1.5, "restart_ratio": 1.2},
            "service": svc,
        },
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    run(a.n, a.queries)
