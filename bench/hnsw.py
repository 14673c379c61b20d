"""HNSW on the embedded store: recall@10 against the exact answer and latency, by beam width,
for queries of the indexed modality and for queries across the modality gap.

The gallery is COCO-shaped: N image vectors drawn from a Gaussian with the mean and covariance
of the 500 real CLIP ViT-B/16 COCO image embeddings (``retrieval/data``), normalised. Queries are
the real COCO captions (text → image, across the gap) or the real COCO images (image → image).
The baseline is the same shard's exact search in the same run. Qdrant's own index settings
(m = 16, ef_construct = 100), as inforank creates shards.

    python -m bench.hnsw [--n 100000] [--queries text|image] [--ef 128 256 512 1024 2048]

``--segment P``: segments bounded at P points (``max_segment_size``), indexed as the gallery grows
(an ``optimize()`` after each P points, as ``inforank ingest`` builds), against one segment over
everything when left out: what the segment size does to the graph's answer across the gap.

    python -m bench.hnsw --n 300000 --segment 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import qdrant_edge as qe

from bench.common import coco_shaped, report


def run(
    n: int = 100_000,
    queries: str = "text",
    efs: tuple[int, ...] = (128, 256, 512, 1024, 2048),
    segment: int | None = None,
) -> dict:
    gallery, img, txt = coco_shaped(n)
    d = img.shape[1]
    q = (txt if queries == "text" else img)[:100].astype(np.float32)
    cfg = qe.EdgeConfig(
        vectors={"image": qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine)},
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=10_000, max_segment_size=None if segment is None else segment * d * 4 // 1024
        ),
    )
    build_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        shard = qe.EdgeShard.create(tmp, cfg)
        for a in range(0, n, 1000):
            pts = [qe.Point(i, {"image": gallery[i].tolist()}, {}) for i in range(a, min(n, a + 1000))]
            shard.update(qe.UpdateOperation.upsert_points(pts))
            if segment is not None and (a + 1000) % segment == 0 and a + 1000 < n:
                t = time.perf_counter()
                shard.optimize()  # index each segment's worth as it arrives
                build_s += time.perf_counter() - t

        def search(params: object) -> tuple[float, list[set[int]]]:
            t = time.perf_counter()
            got = []
            for v in q:
                req = qe.QueryRequest(query=qe.Query.Nearest(v.tolist(), using="image"), limit=10, params=params)
                got.append({int(p.id) for p in shard.query(req)})
            return (time.perf_counter() - t) / len(q) * 1e3, got

        exact_ms, exact = search(qe.SearchParams(exact=True))
        t = time.perf_counter()
        shard.optimize()
        build_s += time.perf_counter() - t
        segments = int(shard.info().segments_count)
        rows = {}
        for ef in efs:
            ms, got = search(qe.SearchParams(hnsw_ef=ef))
            recall = float(np.mean([len(a & b) / 10 for a, b in zip(got, exact, strict=True)]))
            rows[str(ef)] = {"ms": ms, "recall@10": recall, "speedup_vs_exact": exact_ms / ms}
        shard.close()
    return report(
        "hnsw",
        {
            "n": n,
            "segment_points": segment,
            "segments": segments,
            "queries": f"100 real COCO {queries}s",
            "exact_ms": exact_ms,
            "build_s": build_s,
            "by_ef": rows,
        },
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", choices=("text", "image"), default="text")
    ap.add_argument("--ef", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    ap.add_argument("--segment", type=int, default=None, help="bound segments at this many points")
    a = ap.parse_args()
    run(a.n, a.queries, tuple(a.ef), a.segment)
