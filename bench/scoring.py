"""Scoring throughput vs the same run's float32 GEMM rate, and speed-up over exact IG.

python -m bench.scoring [--n 100000] [--ref 10000]
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.common import best_of, clip_like, report
from indexer import scores
from indexer.moments import Moments


def run(n: int = 100_000, d: int = 512, ref: int = 10_000, exact_items: int = 2_000) -> dict:
    img = clip_like(n, d, seed=1, shift=0)
    txt = clip_like(max(ref, 2), d, seed=2, shift=1)
    own = Moments.from_batch(img.astype(np.float64), np.ones(n))
    other = Moments.from_batch(txt.astype(np.float64), np.ones(len(txt)))
    sigma32 = other.covariance.astype(np.float32)

    gemm = best_of(lambda: img @ sigma32)  # the one GEMM information gain needs, alone

    def score() -> None:
        scores.info_gain(img, own.mean, other.covariance)
        scores.conformity(img, own.mean, own.n)

    t_score = best_of(score)
    # Exact IG costs O(items × ref × d): time it on a slice and compare per item.
    sub = img[:exact_items].astype(np.float64)
    t_exact = best_of(lambda: scores.info_gain_exact(sub, txt[:ref], img[:ref], 1.0), repeat=1)
    per_item_exact = t_exact / exact_items
    per_item_fast = t_score / n
    return report(
        "scoring",
        {
            "n": n,
            "d": d,
            "reference": ref,
            "gemm_rows_per_s": n / gemm,
            "scoring_rows_per_s": n / t_score,
            "fraction_of_gemm_rate": gemm / t_score,
            "goal_fraction": 0.5,
            "exact_ig_items_timed": exact_items,
            "exact_ig_rows_per_s": 1 / per_item_exact,
            "speedup_over_exact": per_item_exact / per_item_fast,
            "goal_speedup": 30,
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--ref", type=int, default=10_000)
    a = p.parse_args()
    run(a.n, ref=a.ref)
