"""Are the fast scores faithful on *this* model and data? Exact KL on a sample vs the estimate."""

from __future__ import annotations

from typing import Any

import numpy as np

from indexer import scores
from indexer.api import Indexer
from indexer.errors import InvalidInputError
from indexer.items import other_modality

FAITHFUL_R2 = 0.98
#: stored conformity further than this from its definition is reported as stale
CONFORMITY_TOLERANCE = 1e-3


def validate(ix: Indexer, name: str, sample: int = 1000, reference: int = 2000, seed: int = 0) -> dict[str, Any]:
    c = ix.collection(name)
    rng = np.random.default_rng(seed)
    data = {m: ix.vectors(name, m) for m in c.modalities}
    out: dict[str, Any] = {"collection": name, "modalities": {}}
    for m in c.modalities:
        if len(data[m][1]) < 3:
            continue
        ids, unit, _ = data[m]
        u = unit.astype(np.float64)
        idx = rng.permutation(len(u))[:sample]
        _, own = ix.moments(name, m)
        stored = ix.scores(name, m)
        pos = {str(i): k for k, i in enumerate(stored["ids"])}
        st_ig = np.array([stored["info_gain"][pos[str(ids[i])]] for i in idx])
        st_conf = np.array([stored["conformity"][pos[str(ids[i])]] for i in idx])
        definition = ((u[idx] @ u.T).sum(axis=1) - 1.0) / (len(u) - 1)
        fresh_conf = scores.conformity(u[idx], own.mean, own.n)
        stored_err = float(np.nanmax(np.abs(st_conf - definition))) if np.isfinite(st_conf).any() else None
        info: dict[str, Any] = {
            "sample": len(idx),
            "conformity_max_abs_error_fresh": float(np.max(np.abs(fresh_conf - definition))),
            "conformity_max_abs_error_stored": stored_err,
            "conformity_fresh": stored_err is not None and stored_err <= CONFORMITY_TOLERANCE,
        }
        other = other_modality(m)
        if other in data and len(data[other][1]) >= 2:
            ref_o = data[other][1][rng.permutation(len(data[other][1]))[:reference]].astype(np.float64)
            ref_s = u[rng.permutation(len(u))[:reference]]
            _, oth = ix.moments(name, other)
            exact = scores.info_gain_exact(u[idx], ref_o, ref_s, c.tau)
            fast = scores.info_gain(u[idx], own.mean, oth.covariance, c.tau, dtype=np.float64)
            ok = np.isfinite(st_ig)
            r2 = scores.r_squared(exact, fast)
            info.update(
                reference=len(ref_o),
                r2_exact_vs_fresh_estimate=r2,
                r2_exact_vs_stored=scores.r_squared(exact[ok], st_ig[ok]) if ok.sum() > 2 else None,
                faithful=bool(r2 >= FAITHFUL_R2),
            )
        out["modalities"][m] = info
    if not out["modalities"]:
        raise InvalidInputError(f"Collection {name!r} needs at least 3 items in a modality to validate.")
    v = out["modalities"].values()
    if not all(x.get("faithful", True) for x in v):
        out["verdict"] = (
            "not faithful: the norm-based information gain does not track the exact KL divergence on this "
            "model's embeddings; rank by conformity, or check that the vectors come from a contrastive model"
        )
    elif not all(x["conformity_fresh"] for x in v):
        out["verdict"] = "stored scores are stale: run `inforank rescore`"
    else:
        out["verdict"] = "faithful: the stored scores track their definitions"
    return out
