"""Wall time of ``inforank evaluate`` on N synthetic pairs (the issue's "minutes at 10k pairs on
2 cores"): every option through the real search path, the mixed lists from both sides, and the
held-out hubness figures, with the default 5 folds and 1,000 queries. Embedded default.

    python -m bench.evaluate [--pairs 10000]

The pairs share a latent direction (image = its own shell around it, text = another, shifted), so
recall is neither 0 nor 1 and every option has work to do.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import paired_store, report
from retrieval.evaluate import evaluate


def paired(n: int, d: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CLIP-shaped pairs: a shared anisotropic latent, each modality its own noise and offset."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 0.02, d)
    latent = rng.standard_normal((n, d)) * scales
    out = []
    for shift in (0, 1):
        x = latent + 1.5 * rng.standard_normal((n, d)) * scales
        x[:, shift] += 1.5
        out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return out[0], out[1]


def run(pairs: int = 10_000) -> dict:
    img, txt = paired(pairs)
    with paired_store(img, txt) as ix:
        t = time.perf_counter()
        out = evaluate(ix, "c")
        wall = time.perf_counter() - t
    plain = out["options"]["plain"]
    return report(
        "evaluate",
        {
            "pairs": pairs,
            "queries": out["queries"],
            "folds": out["folds"],
            "options": len(out["options"]),
            "wall_s": wall,
            "plain_r@1": {d: plain[d]["r@1"]["mean"] for d in plain},
            "hubness_r@1": {d: h["r@1"]["mean"] for d, h in out["hubness_offline"].items()},
            "mixed_share_of_ceiling_r@1": {d: m["share_of_ceiling"]["r@1"] for d, m in out["mixed"].items()},
            "mixed_own_modality_first": {d: m["own_modality_at_rank_1"] for d, m in out["mixed"].items()},
        },
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=10_000)
    a = p.parse_args()
    run(a.pairs)
