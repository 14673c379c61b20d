"""A million pairs on one machine (the embedded default): ingest rate as the collection grows,
bytes per item on disk, peak memory, search on exact scan and on HNSW, and the first search
after a restart. Separate from ``run_all`` (``--n 1000000``: ≈ 25 min on 2 cores in 2026-11,
the index built as it grows; ``--keep DIR --until S`` cuts it into invocations of about S
seconds each, every one going on where the last stopped).

    python -m bench.scale [--n 1000000] [--chunk 100000] [--queries 100] [--dir DIR] [--keep DIR --until S]

Vectors: CLIP-shaped synthetic pairs (``clip_like``: anisotropic, off-centre shells, one per
modality); ids 0..n-1, each with an image and a text vector. Every figure is a ratio against a
baseline of the same run: the first chunk's ingest rate, the plain query on the same index kind,
warm searches of the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
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
from retrieval.cli.common import settled_heap
from retrieval.options import SearchOptions
from retrieval.search import EF_CROSS, Searcher


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Steps:
    """The run's state in ``DIR/state.json``: each step's figures once it has finished, so a run
    cut into several invocations (``--keep DIR --until S``) goes on where the last one stopped."""

    def __init__(self, root: Path, until: float | None) -> None:
        self.root, self.path, self.until = root, root / "state.json", until
        self.start = time.perf_counter()
        self.state: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def save(self, **kv: Any) -> None:
        self.state.update(kv)
        self.path.write_text(json.dumps(self.state, indent=1))

    def out_of_time(self) -> bool:
        return self.until is not None and time.perf_counter() - self.start > self.until


OPTS = SearchOptions(k=10, exclude_bottom_info_gain_pct=5, rerank_info_gain=0.05, rerank_conformity=-0.05)


def _ingest(st: Steps, db: Path, edge: Path, n: int, chunk: int) -> bool:
    """Chunk by chunk; False when the time ran out before the last."""
    ix = Indexer(f"sqlite:///{db}", QdrantLocation(edge_path=str(edge)))
    try:
        if "scale" not in {c.name for c in ix.collections()}:
            ix.create_collection("scale", dim=512, min_count=32)
        rates = st.state.get("rates", [])
        for start in range(len(rates) * chunk, n, chunk):
            if st.out_of_time():
                return False
            m = min(chunk, n - start)
            img = clip_like(m, seed=start + 1)
            txt = clip_like(m, seed=start + 2, shift=1)
            items = (Item({"image": img[i], "text": txt[i]}, id=start + i) for i in range(m))
            t = time.perf_counter()
            # as `inforank ingest` does: the HNSW index built a bounded segment at a time as it grows
            rep = ix.add("scale", items, batch_size=1024, index=True)
            built = sum(b["seconds"] for b in rep.index_builds)
            rates.append(m / (time.perf_counter() - t - built))  # the write alone; builds timed apart
            builds = st.state.get("index_builds", []) + [
                {"at": start + m, "seconds": b["seconds"], **b["after"]} for b in rep.index_builds
            ]
            st.save(rates=rates, index_builds=builds, ingest_rss_mb=max(st.state.get("ingest_rss_mb", 0), _rss_mb()))
            new = builds[len(builds) - len(rep.index_builds) :]
            print(f"{start + m} pairs: {rates[-1]:.0f} pairs/s; index builds {new}", flush=True)
        return True
    finally:
        ix.close()


def run(
    n: int = 1_000_000,
    chunk: int = 100_000,
    nq: int = 100,
    root: Path | None = None,
    keep: Path | None = None,
    until: float | None = None,
) -> dict[str, Any] | None:
    tmp = keep or Path(tempfile.mkdtemp(dir=root))
    tmp.mkdir(parents=True, exist_ok=True)
    st = Steps(tmp, until)
    db, edge = tmp / "db.sqlite", tmp / "edge"
    queries = clip_like(nq, seed=10**9, shift=1)  # text-like queries of images
    try:
        with settled_heap():  # the garbage-collector policy `inforank ingest` runs with
            ingested = _ingest(st, db, edge, n, chunk)
        if not ingested:
            print(f"stopped after {len(st.state.get('rates', []))} chunks: run again with --keep {tmp} to go on")
            return None
        if "sql_bytes" not in st.state:
            st.save(sql_bytes=sum(_du(p) for p in tmp.glob("db.sqlite*")), edge_before=_du(edge))
        if "exact" not in st.state and not st.out_of_time():
            ix = Indexer(f"sqlite:///{db}", QdrantLocation(edge_path=str(edge)))
            t = time.perf_counter()
            s = Searcher(ix)
            s.search("scale", queries[0], OPTS)
            cold = time.perf_counter() - t
            exact = interleaved(ix, s, queries[1:], OPTS, None, "scale", exact=True)
            exact["_ids"] = [[sorted(a) for a in side] for side in exact["_ids"]]  # JSON for the state file
            ix.close()
            st.save(cold_first_ms=cold * 1e3, exact=exact)
            print("exact", {k: v for k, v in exact.items() if k != "_ids"}, flush=True)
        if "build_s" not in st.state and not st.out_of_time():
            ix = Indexer(f"sqlite:///{db}", QdrantLocation(edge_path=str(edge)))
            t = time.perf_counter()
            built = ix.optimize("scale", force=True)
            ix.close()
            st.save(build_s=time.perf_counter() - t, indexed_vectors=built["after"]["indexed_vectors"])
            print(f"HNSW built in {st.state['build_s']:.0f} s", flush=True)
        if "hnsw" not in st.state and "build_s" in st.state and not st.out_of_time():
            ix = Indexer(f"sqlite:///{db}", QdrantLocation(edge_path=str(edge)))
            s = Searcher(ix)
            s.search("scale", queries[0], OPTS)
            hnsw = interleaved(ix, s, queries[1:], OPTS, EF_CROSS, "scale")
            ix.close()
            (ep, eo), (hp, ho) = ([set(a) for a in side] for side in st.state["exact"]["_ids"]), hnsw.pop("_ids")
            hnsw.update(
                recall_plain=recall(hp, ep),
                recall_filtered_reranked=recall(ho, eo),
                plain_p50_exact_over_hnsw=st.state["exact"]["plain_query"]["p50_ms"] / hnsw["plain_query"]["p50_ms"],
            )
            st.save(hnsw=hnsw, edge_after=_du(edge))
            print("hnsw", hnsw, flush=True)
        if "restart" not in st.state and "hnsw" in st.state and not st.out_of_time():
            st.save(restart=_restart(db, edge, queries))  # its own process: the service's memory alone
        if "restart" not in st.state:
            print(f"not finished: run again with --keep {tmp} to go on")
            return None
        return _report(st.state, n, chunk)
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _restart(db: Path, edge: Path, queries: np.ndarray) -> dict[str, Any]:
    """What the service does after a restart, in a fresh process: warm up, then search."""
    code = f"""
import json, sys, time, numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from bench.scale import OPTS, _rss_mb
from bench.common import clip_like
from indexer.api import Indexer
from indexer.store import QdrantLocation
from retrieval.search import Searcher
queries = clip_like({len(queries)}, seed=10**9, shift=1)
ix = Indexer("sqlite:///{db}", QdrantLocation(edge_path="{edge}"))
s = Searcher(ix)
t = time.perf_counter(); s.warm("scale"); warm_up = time.perf_counter() - t
t = time.perf_counter(); s.search("scale", queries[1], OPTS); first = time.perf_counter() - t
warm = []
for q in queries[2:42]:
    t = time.perf_counter(); s.search("scale", q, OPTS); warm.append(time.perf_counter() - t)
w50 = float(np.median(warm)) * 1e3
print(json.dumps({{"service_warm_up_ms": warm_up * 1e3, "first_after_warm_up_ms": first * 1e3,
    "warm_p50_ms": w50, "ratio": first * 1e3 / w50, "peak_rss_mb": _rss_mb()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _report(st: dict[str, Any], n: int, chunk: int) -> dict[str, Any]:
    rates = st["rates"]
    exact = {k: v for k, v in st["exact"].items() if k != "_ids"}
    return report(
        "scale",
        {
            "pairs": n,
            "chunk": chunk,
            "cpus": os.cpu_count(),
            "ingest_pairs_per_s": rates,
            "ingest_last_over_first": rates[-1] / rates[0],
            "ingest_peak_rss_mb": st["ingest_rss_mb"],
            "bytes": {"sql": st["sql_bytes"], "qdrant": st["edge_before"], "qdrant_with_hnsw": st["edge_after"]},
            "bytes_per_vector": {
                "sql": st["sql_bytes"] / (2 * n),
                "qdrant": st["edge_before"] / (2 * n),
                "qdrant_with_hnsw": st["edge_after"] / (2 * n),
            },
            "exact": exact,
            "hnsw": {**st["hnsw"], "build_s": st["build_s"], "indexed_vectors": st["indexed_vectors"]},
            "index_builds_during_ingest": st.get("index_builds", []),
            "restart": {"cold_first_ms": st["cold_first_ms"], **st["restart"]},
            "service_peak_rss_mb": st["restart"]["peak_rss_mb"],
            "goal": {"p50_ratio": 1.3, "p99_ratio": 1.5, "restart_ratio": 1.2, "ingest_last_over_first": 0.8},
        },
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=None, help="where the stores go (needs ~12 GB at 1M)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the stores here and go on from what is there")
    ap.add_argument("--until", type=float, default=None, help="stop after the step that passes this many seconds")
    a = ap.parse_args()
    run(a.n, a.chunk, a.queries, a.dir, a.keep, a.until)
