"""Keeping scores fresh: the rescore rate against a plain payload update of the same points, and
the rescoring work of a growing collection with and without the automatic policy, same run.

    python -m bench.freshness [--n 100000] [--batch 1000]

Embedded default (Qdrant Edge + SQLite). Vectors: synthetic CLIP-shaped pairs (bench.common),
with a slow drift in arrival order so the statistics keep moving as they do for real streams.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import clip_like, report
from indexer import writer
from indexer.api import Indexer
from indexer.items import Item
from indexer.store import QdrantLocation
from indexer.store.edge import EdgeStore


def _pairs(n_pairs: int, drift: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    img = clip_like(n_pairs, seed=1, shift=0)
    txt = clip_like(n_pairs, seed=2, shift=1)
    img[:, 2:3] += np.linspace(0.0, drift, n_pairs, dtype=np.float32)[:, None]  # later items lean one way
    return img, txt


def _grow(root: Path, img: np.ndarray, txt: np.ndarray, batch: int, auto: bool) -> dict[str, float]:
    """Ingest the pairs in batches of ``batch`` items (half images, half texts); count the rows
    the policy read and rewrote beyond each row's own first scoring (rescores due beyond the
    inline limit run right after the write, as the service's background thread would)."""
    ix = Indexer(f"sqlite:///{root / 'f.sqlite'}", QdrantLocation(edge_path=str(root / "q")), auto_rescore=auto)
    checked: list[int] = []
    real = writer.rescore_rows
    writer.rescore_rows = lambda s, c, rows, *a: checked.append(len(rows)) or real(s, c, rows, *a)  # type: ignore[assignment]
    try:
        ix.create_collection("c", dim=img.shape[1])
        n, half = len(img), batch // 2
        rewritten = 0
        t = time.perf_counter()
        for s in range(0, n, half):
            rep = ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(s, min(s + half, n))])
            rewritten += rep.rescored
            if rep.rescore_due:  # too large for the write itself: what the service's background
                rewritten += ix.rescore("c").rescored  # thread or `rescore --watch` does next
        wall = time.perf_counter() - t
        fresh = ix.freshness("c")
        st = ix.stats("c", sample=4000)["modalities"]
        return {
            "sampled_share_outside_tolerance": {
                m: st[m]["freshness"].get("sampled_share_outside_tolerance") for m in ("image", "text")
            },
            "items": 2 * n,
            "wall_s": wall,
            "rows_checked_by_policy": sum(checked),
            "rows_rewritten_by_policy": rewritten,
            "bound_conformity": max(f["bound"]["conformity"] for f in fresh.values()),
            "within_tolerance": not any(f["outside_tolerance"] for f in fresh.values()),
        }
    finally:
        writer.rescore_rows = real  # type: ignore[assignment]
        ix.close()


def _rescore_vs_payload(root: Path, img: np.ndarray, txt: np.ndarray) -> dict[str, float]:
    """A stale collection (10 % ingested first, the rest later, no policy), rescored; then a
    plain Edge payload update of the same number of points with the same fields."""
    ix = Indexer(f"sqlite:///{root / 'r.sqlite'}", QdrantLocation(edge_path=str(root / "rq")), auto_rescore=False)
    try:
        ix.create_collection("c", dim=img.shape[1])
        n = len(img)
        first = n // 10
        ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(first)], batch_size=2048)
        ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(first, n)], batch_size=2048)
        t = time.perf_counter()
        rep = ix.rescore("c", all=True)
        rescore_s = time.perf_counter() - t
        ids = [h.id for h in ix.store.scroll("c", None, max(rep.rescored // 2, 1), False).points]
    finally:
        ix.close()
    store = EdgeStore(root / "rq")
    try:
        payloads = [
            (pid, {"image_conformity": 0.3, "image_info_gain": 1e-3, "text_conformity": 0.3, "text_info_gain": 1e-3})
            for pid in ids
        ]
        t = time.perf_counter()
        store.set_payload("c", payloads)
        plain_s = time.perf_counter() - t
    finally:
        store.close()
    points = len(ids)
    return {
        "rows_checked": rep.checked,
        "rows_rewritten": rep.rescored,
        "points_updated": points,
        "rescore_s": rescore_s,
        "plain_payload_update_s": plain_s,
        "rescore_rows_checked_per_s": rep.checked / rescore_s,
        "ratio_rescore_to_plain_payload_update": rescore_s / plain_s if plain_s else float("nan"),
    }


def run(n: int = 100_000, batch: int = 1000) -> dict:
    img, txt = _pairs(n // 2)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "a").mkdir()
        (root / "b").mkdir()
        (root / "c").mkdir()
        without = _grow(root / "a", img, txt, batch, auto=False)
        with_policy = _grow(root / "b", img, txt, batch, auto=True)
        (root / "d").mkdir()
        stationary = _grow(root / "d", *_pairs(n // 2, drift=0.0), batch, auto=True)
        rescore = _rescore_vs_payload(root / "c", img, txt)
    return report(
        "freshness",
        {
            "n_items": n,
            "batch": batch,
            "growth_without_policy": without,
            "growth_with_policy": with_policy,
            "wall_ratio_policy": with_policy["wall_s"] / without["wall_s"],
            "growth_with_policy_stationary_stream": stationary,
            "rescore_vs_plain_payload_update": rescore,
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000, help="items (half images, half texts)")
    p.add_argument("--batch", type=int, default=1000)
    a = p.parse_args()
    run(a.n, a.batch)
