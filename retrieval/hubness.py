"""Hubness correction: some items ("hubs") are near many queries and crowd every result list.

Nearest-neighbour normalisation: each item v of modality g gets a bias, the mean of its k highest
similarities to a *bank* of queries (the collection's items of the other modality), and a query's
similarity to v is corrected to ``cos(q, v) − β · bias(v)``. ``fit`` chooses k and β on the
collection's own pairs (half of them query, the other half is the bank; the held-out figures are
``inforank evaluate``'s), computes every item's bias, stores it with the item (SQL, then the
``{g}_hub_bias`` payload field) and searches apply it inside Qdrant's formula with ``hubness=True``.

The biases are a snapshot of the bank at the fit: items written later have none (no correction)
and a growing bank is not followed until the next fit (``applied.hubness`` says at which version).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import update

from indexer.api import Indexer
from indexer.db.models import CollectionRow, VectorRow
from indexer.db.statstore import lock_collection
from indexer.errors import InvalidInputError
from indexer.items import item_key, other_modality
from indexer.sync import sync_dirty
from indexer.writer import mark_dirty
from retrieval.evaluate import HUB_GRID, _bias, _choose, _pairs, _unit


def fit(ix: Indexer, name: str, *, k: int | None = None, beta: float | None = None) -> dict[str, Any]:
    """Choose (k, β) unless given, compute every item's bias against the other modality, store it."""
    c = ix.collection(name)
    if set(c.modalities) != {"image", "text"}:
        raise InvalidInputError("Hubness correction needs both modalities: the bank is the other modality's items.")
    if (k is None) != (beta is None):
        raise InvalidInputError("Give both k and beta, or neither (then they are chosen on the collection's pairs).")
    if k is None or beta is None:
        p = _pairs(ix, name)
        vec = {m: _unit(v) for m, v in p.vectors.items()}
        train = np.random.default_rng(0).permutation(len(p.ids))
        k, beta = _choose(vec["text"], vec["image"], train)  # text queries, the common case
    if not (1 <= k <= 1000 and 0 <= beta <= 10):
        raise InvalidInputError(f"k must be 1–1000 and beta 0–10, got k={k}, beta={beta}.")
    data = {m: ix.vectors(name, m) for m in c.modalities}
    biased = 0
    with ix.sessions.begin() as s:
        row = lock_collection(s, c.id)
        for g in c.modalities:
            ids, gallery, _ = data[g]
            bank = data[other_modality(g)][1]
            if not len(ids) or not len(bank):
                continue
            bias = _bias(gallery.astype(np.float64), bank.astype(np.float64), k)
            keys = [item_key(i) for i in ids]
            s.execute(
                update(VectorRow),
                [
                    {"collection_id": c.id, "item_key": key, "modality": g, "hub_bias": float(b)}
                    for key, b in zip(keys, bias, strict=True)
                ],
            )
            mark_dirty(s, c.id, keys)
            biased += len(keys)
        s.execute(
            update(CollectionRow)
            .where(CollectionRow.id == c.id)
            .values(hub_k=k, hub_beta=beta, hub_version=row.stats_version)
        )
        version = row.stats_version
    sync_dirty(ix.sessions, ix.store, ix.collection(name))
    return {"collection": name, "k": k, "beta": beta, "items": biased, "stats_version": version, "grid": HUB_GRID}


__all__ = ["fit"]
