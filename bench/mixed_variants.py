"""Mixed image+text lists on the shipped COCO pairs, whole gallery, numpy: the shipped two-sided
calibration against other ways of combining its two sides and against the same calibration in
the aligned space, and what the shipped list puts first when it is the query's own modality.

Each direction's figures are shares of its single-modality ceiling (plain search over the other
modality alone) at R@1 and R@10, with the share of the query's own modality in the top 10. The
aligned variants are held out: the shrunk Procrustes map of ``align fit`` is fitted on the
training folds' pairs and judged on the held-out fold's queries over the whole gallery.

    python -m bench.mixed_variants
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from scipy.special import log_ndtr

from bench.common import COCO, report
from indexer.moments import Moments
from retrieval.align import fit_map
from retrieval.hubness import unit
from retrieval.search import query_side

Combine = Callable[[np.ndarray, np.ndarray], np.ndarray]

COMBINE: dict[str, Combine] = {
    "sum (shipped)": lambda zq, zv: zq + zv,
    "smaller side": np.minimum,
    "Fisher, Gaussian tails (mutual proximity)": lambda zq, zv: -(log_ndtr(-zq) + log_ndtr(-zv)),
    "signed geometric mean": lambda zq, zv: np.sign(zq * zv) * np.sqrt(np.abs(zq * zv)),
    "query's side only": lambda zq, zv: zq,
    "item's side only": lambda zq, zv: zv,
}
LAMBDAS = (0.0, 10.0, 100.0, 1000.0)
K = 10


def _sides(q: np.ndarray, v: np.ndarray, mom_v: Moments, mom_q: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Both z-scores of every similarity of queries ``q`` to items ``v`` (search's two sides)."""
    sim = q @ v.T
    return query_side(sim, q, mom_v), (sim - v @ mom_q.mean) / mom_q.spread(v)


def _judge(cross: np.ndarray, own: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Ranks of each query's pair (``cross[i, rows[i]]``) in the list of both modalities; ``own``
    already has the query itself at −inf."""
    idx = np.arange(len(rows))
    target = cross[idx, rows]
    rank = (cross > target[:, None]).sum(axis=1) + (own > target[:, None]).sum(axis=1)
    top = np.argsort(-np.concatenate([cross, own], axis=1), axis=1)[:, :K]
    return {"rank": rank, "own": (top >= cross.shape[1]).mean(axis=1), "first_own": own.max(axis=1) > cross.max(axis=1)}


def run(folds: int = 5) -> dict:
    feats = np.load(COCO).astype(np.float64)
    vec = {"image": unit(feats[0]), "text": unit(feats[1])}
    n = len(vec["image"])
    mom = {m: Moments.from_batch(v, np.ones(n)) for m, v in vec.items()}
    out: dict = {"pairs": n, "combine": {}, "aligned": {}, "own_first": {}}
    for q_mod, g_mod in (("text", "image"), ("image", "text")):
        d = f"{q_mod}_to_{g_mod}"
        q = vec[q_mod]
        plain = q @ vec[g_mod].T
        ceiling = (plain > np.diag(plain)[:, None]).sum(axis=1)
        c1, c10 = float(np.mean(ceiling < 1)), float(np.mean(ceiling < K))
        zc = _sides(q, vec[g_mod], mom[g_mod], mom[q_mod])
        zo = _sides(q, q, mom[q_mod], mom[q_mod])
        for name, f in COMBINE.items():
            own = f(*zo)
            np.fill_diagonal(own, -np.inf)
            j = _judge(f(*zc), own, np.arange(n))
            out["combine"].setdefault(name, {})[d] = {
                "r@1_of_ceiling": float(np.mean(j["rank"] < 1)) / c1,
                "r@10_of_ceiling": float(np.mean(j["rank"] < K)) / c10,
                "own_modality_in_top_10": float(np.mean(j["own"])),
            }
        # what the shipped list puts first when it is the query's own modality: where that item
        # ranks among the query's own modality as the query's pair sees it (the query left out)
        own = sum(zo)
        np.fill_diagonal(own, -np.inf)
        j = _judge(sum(zc), own, np.arange(n))
        first = np.flatnonzero(j["first_own"])
        pair_view = vec[g_mod] @ q.T
        np.fill_diagonal(pair_view, -np.inf)
        displacer = own.argmax(axis=1)[first]
        rank = (pair_view[first] > pair_view[first, displacer][:, None]).sum(axis=1)
        # the ceiling's hits lost to the own modality: how near the item that took rank 1 is
        lost = np.flatnonzero((ceiling == 0) & j["first_own"])
        took = own.argmax(axis=1)[lost]
        pairs_of = vec[g_mod]
        out["own_first"][d] = {
            "share_of_queries": float(len(first) / n),
            **{f"in_pairs_top_{k}": float(np.mean(rank < k)) for k in (10, 25, 50)},
            "chance_top_10": K / (n - 1),
            "ceiling_hits": int(np.sum(ceiling == 0)),
            "ceiling_hits_lost_to_own_modality": len(lost),
            "median_cos_of_their_pairs": float(np.median(np.sum(pairs_of[lost] * pairs_of[took], axis=1))),
            "random_pairs_median_cos": float(np.median(pairs_of @ pairs_of.T)),
            "pair_to_item_that_took_rank_1": float(np.median(np.sum(pairs_of[lost] * q[took], axis=1))),
            "pair_to_its_own_query": float(np.median(np.sum(pairs_of[lost] * q[lost], axis=1))),
        }
        # the same calibration in the aligned space, held out
        parts = np.array_split(np.random.default_rng(0).permutation(n), folds)
        for lam in LAMBDAS:
            r1, r10, c1s, c10s = [], [], [], []
            for part in parts:
                train = np.setdiff1d(np.arange(n), part)
                text = unit(vec["text"] @ fit_map(vec["text"][train], vec["image"][train], "procrustes", lam))
                space = {"image": vec["image"], "text": text}
                am = {m: Moments.from_batch(v, np.ones(n)) for m, v in space.items()}
                qa = space[q_mod][part]
                cross = sum(_sides(qa, space[g_mod], am[g_mod], am[q_mod]))
                own = sum(_sides(qa, space[q_mod], am[q_mod], am[q_mod]))
                own[np.arange(len(part)), part] = -np.inf
                rank = _judge(cross, own, part)["rank"]
                sims = qa @ space[g_mod].T
                ceil = (sims > sims[np.arange(len(part)), part][:, None]).sum(axis=1)
                r1 += list(rank < 1)
                r10 += list(rank < K)
                c1s += list(ceil < 1)
                c10s += list(ceil < K)
            out["aligned"].setdefault(f"lambda={lam:g}", {})[d] = {
                "r@1_of_unaligned_ceiling": float(np.mean(r1)) / c1,
                "r@10_of_unaligned_ceiling": float(np.mean(r10)) / c10,
                "aligned_ceiling_r@1": float(np.mean(c1s)),
            }
    return report("mixed_variants", out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=int, default=5)
    run(p.parse_args().folds)
