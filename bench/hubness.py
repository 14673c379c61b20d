"""Search latency with the hubness correction vs the same search without it, same run, and the
fit's wall time. Embedded default (Qdrant Edge + SQLite), synthetic CLIP-shaped pairs.

    python -m bench.hubness [--pairs 50000] [--queries 200]

``--follow``: what following the bank costs after a fit — fit on ``--pairs`` pairs, add
``--grow`` % more, ``rescore``; wall time of each, biases recomputed, the largest distance of any
stored bias from its definition against the bank *now* (numpy over every stored vector), and the
bound the refresh reports. Each way of following runs on its own copy: change by change (the
store's nearest-neighbour queries; ``REFIT_SHARE`` set out of reach) and as the refresh chooses.

    python -m bench.hubness --follow [--pairs 20000] [--grow 5]

``--shrink P``: fit, delete P % of the pairs (under the recompute-all share, so the refresh
follows the removals one by one), ``rescore``: the bound the refresh reports (0 where every
reach passed the floor) against the largest distance of any stored bias from its definition.

    python -m bench.hubness --shrink 0.5 [--pairs 50000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import clip_like, paired_store, report
from indexer import hubness as following
from indexer.api import Indexer
from indexer.items import Item
from retrieval import hubness
from retrieval.search import Searcher, SearchOptions


def run(pairs: int = 50_000, nq: int = 200) -> dict:
    with paired_store(clip_like(pairs, seed=1), clip_like(pairs, seed=2, shift=1)) as ix:
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


def _worst_error(ix: Indexer, name: str, k: int) -> float:
    """Largest |stored bias − definition| over every item: the mean of its k highest cosines to
    the other modality's items now."""
    from sqlalchemy import select

    from indexer.db.models import PointRow, VectorRow

    c = ix.collection(name)
    vec = {m: ix.vectors(name, m) for m in ("image", "text")}
    with ix.reads() as s:
        rows = s.execute(
            select(PointRow.user_id, VectorRow.modality, VectorRow.hub_bias)
            .join(
                PointRow,
                (PointRow.collection_id == VectorRow.collection_id) & (PointRow.item_key == VectorRow.item_key),
            )
            .where(VectorRow.collection_id == c.id)
        ).all()
    stored = {(str(u), m): b for u, m, b in rows}
    worst = 0.0
    for m, o in (("image", "text"), ("text", "image")):
        ids, units = vec[m][0], vec[m][1].astype(np.float64)
        bank = vec[o][1].astype(np.float64).T
        for start in range(0, len(ids), 2048):  # blocks: never an N × N matrix in memory
            top = np.sort(units[start : start + 2048] @ bank, axis=1)[:, -k:].mean(axis=1)
            got = np.array([stored[(str(i), m)] for i in ids[start : start + 2048]], dtype=np.float64)
            worst = max(worst, float(np.max(np.abs(got - top))))
    return worst


def follow(pairs: int = 20_000, grow_pct: float = 5.0, k: int = 8, beta: float = 0.5) -> dict:
    """Fit, grow, follow: once change by change, once as the refresh chooses (fresh stores each)."""
    extra = max(1, int(pairs * grow_pct / 100))
    img, txt = clip_like(pairs + extra, seed=1), clip_like(pairs + extra, seed=2, shift=1)
    out: dict = {"pairs": pairs, "grow_pct": grow_pct, "k": k, "beta": beta, "refit_share": following.REFIT_SHARE}
    for way, share in (("change_by_change", float("inf")), ("as_chosen", following.REFIT_SHARE)):
        saved, following.REFIT_SHARE = following.REFIT_SHARE, share
        try:
            with paired_store(img[:pairs], txt[:pairs]) as ix:
                t = time.perf_counter()
                hubness.fit(ix, "c", k=k, beta=beta)
                fit_s = time.perf_counter() - t
                more = [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(pairs, pairs + extra)]
                ix.add("c", more, batch_size=4096)
                t = time.perf_counter()
                rep = ix.rescore("c")
                follow_s = time.perf_counter() - t
                out[way] = {
                    "fit_s": fit_s,
                    "rescore_s": follow_s,
                    "rescore_over_fit": follow_s / fit_s,
                    **(rep.hubness or {}),
                    "worst_error": _worst_error(ix, "c", k),
                }
        finally:
            following.REFIT_SHARE = saved
        print(way, out[way], flush=True)
    return report("hubness_follow", out)


def shrink(pairs: int = 50_000, remove_pct: float = 0.5, k: int = 8, beta: float = 0.5) -> dict:
    """Fit, then delete ``remove_pct`` % of the pairs (under the refresh's recompute-all share,
    so it follows the removals one by one) and ``rescore``: the bound the refresh reports (0
    where every reach passed the floor) against the largest distance of any stored bias from its
    definition afterwards."""
    img, txt = clip_like(pairs, seed=1), clip_like(pairs, seed=2, shift=1)
    gone = max(1, int(pairs * remove_pct / 100))
    out: dict = {"pairs": pairs, "removed_pairs": gone, "k": k, "beta": beta, "refit_share": following.REFIT_SHARE}
    with paired_store(img, txt) as ix:
        t = time.perf_counter()
        hubness.fit(ix, "c", k=k, beta=beta)
        out["fit_s"] = time.perf_counter() - t
        ix.delete("c", list(np.random.default_rng(0).choice(pairs, gone, replace=False).tolist()))
        t = time.perf_counter()
        rep = ix.rescore("c")
        out["rescore_s"] = time.perf_counter() - t
        out.update(rep.hubness or {})
        out["worst_error"] = _worst_error(ix, "c", k)
    return report("hubness_shrink", out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--follow", action="store_true", help="measure following the bank after a fit instead")
    p.add_argument("--grow", type=float, default=5.0, help="--follow: per cent more pairs after the fit")
    p.add_argument("--shrink", type=float, default=None, help="measure following the removal of this per cent instead")
    a = p.parse_args()
    if a.shrink is not None:
        shrink(a.pairs, a.shrink)
    elif a.follow:
        follow(a.pairs, a.grow)
    else:
        run(a.pairs, a.queries)
