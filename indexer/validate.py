"""Are the fast scores faithful on *this* model and data? Exact KL on a sample vs the estimate."""

from __future__ import annotations

from typing import Any

import numpy as np

from indexer import scores
from indexer.api import Indexer
from indexer.errors import InvalidInputError
from indexer.items import other_modality

FAITHFUL_R2 = 0.98
TAUS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _r2(u: np.ndarray, ref_o: np.ndarray, ref_s: np.ndarray, mean: np.ndarray, cov: np.ndarray, tau: float) -> float:
    exact = scores.info_gain_exact(u, ref_o, ref_s, tau)
    return scores.r_squared(exact, scores.info_gain(u, mean, cov, tau, dtype=np.float64))


def validate(ix: Indexer, name: str, sample: int = 1000, reference: int = 2000, seed: int = 0) -> dict[str, Any]:
    c = ix.collection(name)
    rng = np.random.default_rng(seed)
    data = {m: ix.vectors(name, m) for m in c.modalities}
    out: dict[str, Any] = {"collection": name, "tau": c.tau, "modalities": {}}
    for m in c.modalities:
        other = other_modality(m)
        if other not in data or len(data[other][1]) < 2 or len(data[m][1]) < 3:
            continue
        ids, unit, _ = data[m]
        u = unit.astype(np.float64)
        idx = rng.permutation(len(u))[:sample]
        ref_o = data[other][1][rng.permutation(len(data[other][1]))[:reference]].astype(np.float64)
        ref_s = u[rng.permutation(len(u))[:reference]]
        _, own = ix.moments(name, m)
        _, oth = ix.moments(name, other)
        stored = ix.scores(name, m)
        pos = {str(i): k for k, i in enumerate(stored["ids"])}
        st_ig = np.array([stored["info_gain"][pos[str(ids[i])]] for i in idx])
        st_conf = np.array([stored["conformity"][pos[str(ids[i])]] for i in idx])

        exact = scores.info_gain_exact(u[idx], ref_o, ref_s, c.tau)
        fast = scores.info_gain(u[idx], own.mean, oth.covariance, c.tau, dtype=np.float64)
        definition = ((u[idx] @ u.T).sum(axis=1) - 1.0) / (len(u) - 1)
        fresh_conf = scores.conformity(u[idx], own.mean, own.n)
        ok = np.isfinite(st_ig)
        r2 = scores.r_squared(exact, fast)
        info: dict[str, Any] = {
            "sample": len(idx),
            "reference": len(ref_o),
            "r2_exact_vs_fresh_estimate": r2,
            "r2_exact_vs_stored": scores.r_squared(exact[ok], st_ig[ok]) if ok.sum() > 2 else None,
            "conformity_max_abs_error_fresh": float(np.max(np.abs(fresh_conf - definition))),
            "conformity_max_abs_error_stored": float(np.nanmax(np.abs(st_conf - definition))),
            "faithful": bool(r2 >= FAITHFUL_R2),
        }
        if not info["faithful"]:
            by_tau = {t: _r2(u[idx], ref_o, ref_s, own.mean, oth.covariance, t) for t in TAUS}
            info["r2_by_tau"] = by_tau
            good = [t for t, v in by_tau.items() if v >= FAITHFUL_R2]
            info["suggested_tau"] = min(good) if good else max(TAUS)
        out["modalities"][m] = info
    if not out["modalities"]:
        raise InvalidInputError(f"Collection {name!r} needs items in both modalities to validate information gain.")
    out["verdict"] = (
        "faithful: the norm-based scores track exact information gain"
        if all(v["faithful"] for v in out["modalities"].values())
        else "not faithful at this tau: see suggested_tau"
    )
    return out
