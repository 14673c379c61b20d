"""Filtered search on the HNSW index, with and without a payload index on the filtered field
(``inforank index-field``): p50 / p99 latency, recall@10 against the exact filtered answer, and
how often the graph came back short and the searcher scanned instead, for a filter that 1 % of
the points pass and one that 25 % pass.

Three states of the same gallery (N CLIP-shaped image vectors, metadata ``g = i % 100`` and
``h = i % 4``), at inforank's real index thresholds: no payload index; the same store after the
fields were indexed (graph built before: no links for them); a second store whose fields were
indexed before its graph was built. The baseline is the first state, in the same run. Each
filter runs through the searcher (shipped), on the same build left to Qdrant's filtered walk (as
before stop 17), and as an exact scan (the recall reference, timed too).

    python -m bench.filters [--n 100000] [--queries 100] [--gallery clip_like|coco]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import clip_like, coco_shaped, embedded, report
from indexer.items import Item
from retrieval import search as search_mod
from retrieval.search import Searcher, SearchOptions

FILTERS: dict[str, dict[str, Any] | None] = {
    "none (plain)": None,
    "1 %": {"must": [{"key": "g", "match": {"value": 1}}]},
    "5 %": {"must": [{"key": "g", "range": {"lt": 5}}]},
    "25 %": {"must": [{"key": "h", "match": {"value": 1}}]},
}


def _store(root: Path, vecs: np.ndarray, index_first: bool) -> Any:
    ix = embedded(root, auto_rescore=False)
    ix.create_collection("c", dim=vecs.shape[1])
    if index_first:
        ix.index_field("c", "g", "integer")
        ix.index_field("c", "h", "integer")
    items = [Item({"image": vecs[i]}, id=i, metadata={"g": i % 100, "h": i % 4}) for i in range(len(vecs))]
    ix.add("c", items, batch_size=4096, index=False)
    t = time.perf_counter()
    ix.optimize("c", force=True)
    print(f"  built the graph in {time.perf_counter() - t:.0f} s", flush=True)
    return ix


def _measure(ix: Any, queries: np.ndarray) -> dict[str, Any]:
    out = _measure_plan(ix, queries)
    # the same filters left to Qdrant's filtered walk, as every user filter was before this stop
    was = search_mod.Searcher._user_fraction
    search_mod.Searcher._user_fraction = lambda *_a: None  # type: ignore[method-assign]
    try:
        walk = _measure_plan(ix, queries)
    finally:
        search_mod.Searcher._user_fraction = was  # type: ignore[method-assign]
    for f, w in walk.items():
        if f in out and FILTERS[f] is not None:
            out[f"{f}, filtered walk"] = {k: v for k, v in w.items() if not k.startswith("exact")}
    return out


def _measure_plan(ix: Any, queries: np.ndarray) -> dict[str, Any]:
    s = Searcher(ix)
    out: dict[str, Any] = {}
    for name, flt in FILTERS.items():
        # one query first, untimed: the first filtered query on a field reads its payloads cold
        s.search("c", queries[-1], SearchOptions(k=10, query_modality="image", filter=flt))
        times, exact_times, recall, scans = [], [], [], 0
        for q in queries:
            t = time.perf_counter()
            got = s.search("c", q, SearchOptions(k=10, query_modality="image", filter=flt))
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            exact = s.search("c", q, SearchOptions(k=10, query_modality="image", filter=flt, exact=True))
            exact_times.append(time.perf_counter() - t)
            recall.append(len({r.id for r in got.results} & {r.id for r in exact.results}) / 10)
            scans += got.applied["image_search"]["method"] == "exact"
        ms, exact_ms = np.array(times) * 1e3, np.array(exact_times) * 1e3
        out[name] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "recall@10": float(np.mean(recall)),
            "scanned_share": scans / len(queries),
            "exact_p50_ms": float(np.percentile(exact_ms, 50)),
        }
    return out


def run(n: int = 100_000, queries: int = 100, gallery: str = "clip_like") -> dict[str, Any]:
    if gallery == "coco":  # COCO-shaped, searched by the real COCO images: an easy set for HNSW
        vecs, img, _ = coco_shaped(n)
        qs = img[:queries].astype(np.float32)
    else:  # anisotropic in all 512 dimensions: a hard one
        vecs, qs = clip_like(n), clip_like(queries, seed=7)
    res: dict[str, Any] = {"n": n, "queries": len(qs), "gallery": gallery}
    with tempfile.TemporaryDirectory() as d:
        print("no payload index", flush=True)
        ix = _store(Path(d) / "a", vecs, index_first=False)
        try:
            res["no payload index"] = _measure(ix, qs)
            ix.index_field("c", "g", "integer")
            ix.index_field("c", "h", "integer")
            res["indexed after the graph"] = _measure(ix, qs)
        finally:
            ix.close()
        print("indexed before the graph", flush=True)
        ix = _store(Path(d) / "b", vecs, index_first=True)
        try:
            res["indexed before the graph"] = _measure(ix, qs)
        finally:
            ix.close()
    base = res["no payload index"]
    for kind in ("indexed after the graph", "indexed before the graph"):
        for f in base:
            res[kind][f]["p50_vs_none"] = res[kind][f]["p50_ms"] / base[f]["p50_ms"]
    return report("filters", res)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--gallery", choices=("clip_like", "coco"), default="clip_like")
    a = ap.parse_args()
    run(a.n, a.queries, a.gallery)
