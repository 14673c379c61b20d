"""Hubness correction: some items ("hubs") are near many queries and crowd every result list.

Nearest-neighbour normalisation: each item v of modality g gets a bias, the mean of its k highest
similarities to a *bank* of queries (the collection's items of the other modality), and a query's
similarity to v is corrected to ``cos(q, v) − β · bias(v)``. ``fit`` chooses k and β on the
collection's own pairs (half of them query, the other half is the bank; the held-out figures are
``inforank evaluate``'s), computes every item's bias, stores it with the item (SQL, then the
``{g}_hub_bias`` payload field) and searches apply it inside Qdrant's formula with ``hubness=True``.

After the fit, every change is followed by :func:`indexer.hubness.refresh` (run by ``rescore``):
new items get their bias, and items a new or removed bank item comes close to get theirs
recomputed, with the store's own nearest-neighbour queries; until then a new item counts as the
modality's mean bias (neutral).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, update

from indexer.api import Indexer
from indexer.db.models import CollectionRow, HubBankRow
from indexer.db.statstore import lock_collection
from indexer.errors import InvalidInputError
from indexer.hubness import clear_queue, queue_end, top_k, write_all
from indexer.items import item_key, other_modality
from indexer.sync import sync_dirty
from indexer.vectors import check_rows


@dataclass(frozen=True)
class Pairs:
    ids: list[Any]
    vectors: dict[str, np.ndarray]  # modality → rows in ``ids`` order


Loaded = dict[str, tuple[list[Any], np.ndarray, np.ndarray]]


def pairs(ix: Indexer, name: str, got: Loaded | None = None) -> Pairs:
    """The collection's paired items (an image and a text under one id); ``got``: the
    modalities' ``Indexer.vectors`` when the caller has read them already."""
    got = got or {m: ix.vectors(name, m) for m in ("image", "text")}
    index = {m: {str(i): k for k, i in enumerate(got[m][0])} for m in got}
    common = [i for i in got["image"][0] if str(i) in index["text"]]
    if len(common) < 10:
        raise InvalidInputError(
            f"Collection {name!r} has {len(common)} paired items (an image and a text under one id); "
            "evaluate needs at least 10."
        )
    vec = {m: np.stack([got[m][1][index[m][str(i)]] for i in common]) for m in got}
    return Pairs(common, vec)


#: (k, β) candidates for the hubness correction, chosen per fold on the training folds alone
HUB_GRID = tuple((k, b) for k in (4, 8, 16) for b in (0.5, 0.75, 1.0))


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bias(gallery: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Each gallery item's mean of its ``k`` highest similarities to the bank."""
    return top_k(gallery, bank, k)[0]


def ranks(q: np.ndarray, gallery: np.ndarray, targets: np.ndarray, item_bias: np.ndarray, beta: float) -> np.ndarray:
    """1-based rank of each query's target (``targets``: gallery rows) under the corrected similarity."""
    sim = q @ gallery.T - beta * item_bias[None, :]
    own = sim[np.arange(len(q)), targets]
    return 1 + (sim > own[:, None]).sum(axis=1)


def choose(queries: np.ndarray, gallery: np.ndarray, train: np.ndarray) -> tuple[int, float]:
    """(k, β) with the best recall@1 on the training pairs: half of them query, the other half
    is the bank."""
    half = len(train) // 2
    tq, tb = train[:half], train[half:]

    def r1(kb: tuple[int, float]) -> float:
        return float(np.mean(ranks(queries[tq], gallery, tq, bias(gallery, queries[tb], kb[0]), kb[1]) <= 1))

    return max(HUB_GRID, key=r1)


def fit(
    ix: Indexer,
    name: str,
    *,
    k: int | None = None,
    beta: float | None = None,
    bank: np.ndarray | None = None,
    bank_modality: str = "text",
) -> dict[str, Any]:
    """Choose (k, β) unless given, compute every item's bias against its bank, store it.

    The bank of a gallery modality is the collection's items of the other modality, or
    ``bank``: vectors of ``bank_modality`` the user supplies (past queries, captions) — for an
    image-only collection searched by text, say. Choosing (k, β) needs the collection's pairs;
    without them give both (there is no evidence to choose from)."""
    c = ix.collection(name)
    if (k is None) != (beta is None):
        raise InvalidInputError("Give both k and beta, or neither (then they are chosen on the collection's pairs).")
    if bank is not None:
        if bank_modality not in ("image", "text"):
            raise InvalidInputError(f"bank_modality is image or text, got {bank_modality!r}.")
        try:
            bank = np.asarray(bank, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"The bank must be rows of {c.dim} numbers each: {exc}") from None
        if bank.ndim != 2 or not len(bank):
            raise InvalidInputError(f"The bank must be a non-empty 2-D array of {c.dim}-d vectors, got {bank.shape}.")
        ck = check_rows(bank, c.dim)  # the writer's own check: finite, a direction, a norm that fits
        if ck.reasons:
            first, why = min(ck.reasons.items())
            raise InvalidInputError(f"Bank row {first}: {why} ({len(ck.reasons)} bad rows of {len(bank)}).")
        bank = ck.unit.astype(np.float64)
        if other_modality(bank_modality) not in c.modalities:
            raise InvalidInputError(
                f"A {bank_modality} bank corrects {other_modality(bank_modality)} items; {name!r} has none."
            )
    with ix.reads() as s:
        seen = queue_end(s, c)
    data = {m: ix.vectors(name, m) for m in c.modalities}  # read once: the pairs and the biases
    one_sided = any(not len(data.get(m, ([],))[0]) for m in ("image", "text"))
    if bank is None and one_sided:
        raise InvalidInputError(
            "Hubness correction needs a bank: the other modality's items (this collection holds one modality "
            "only), or your own query vectors (`hubness fit --bank queries.npy --k 8 --beta 0.5`)."
        )
    if k is None or beta is None:
        if one_sided:
            raise InvalidInputError("Without pairs to choose them on, give k and beta (e.g. --k 8 --beta 0.5).")
        p = pairs(ix, name, data)
        vec = {m: unit(v) for m, v in p.vectors.items()}
        train = np.random.default_rng(0).permutation(len(p.ids))
        k, beta = choose(vec["text"], vec["image"], train)  # text queries, the common case
    if not (1 <= k <= 1000 and 0 <= beta <= 10):
        raise InvalidInputError(f"k must be 1–1000 and beta 0–10, got k={k}, beta={beta}.")
    banks = (
        {other_modality(bank_modality): bank}  # unit rows already (the check above)
        if bank is not None
        else {g: data[other_modality(g)][1] for g in c.modalities}
    )
    with ix.sessions.begin() as s:
        row = lock_collection(s, c.id)
        # the changes queued before the vectors were read are in this fit; later ones stay queued
        clear_queue(s, c, seen)
        s.execute(delete(HubBankRow).where(HubBankRow.collection_id == c.id))
        if bank is not None:
            vecs = np.ascontiguousarray(bank, dtype="<f4").tobytes()
            s.add(HubBankRow(collection_id=c.id, modality=bank_modality, vectors=vecs))
        items = {g: ([item_key(i) for i in data[g][0]], data[g][1]) for g in banks}
        biased, center, floor = write_all(s, c, items, banks, k)
        state = {
            "bank": "user" if bank is not None else "collection",
            "center": center,
            "floor": floor,
            "bound": {},
            "missed": {},
        }
        s.execute(
            update(CollectionRow)
            .where(CollectionRow.id == c.id)
            .values(hub_k=k, hub_beta=beta, hub_version=row.stats_version, hub=state)
        )
        version = row.stats_version
    sync_dirty(ix.sessions, ix.store, ix.collection(name))
    return {
        "collection": name,
        "k": k,
        "beta": beta,
        "items": biased,
        "bank": {g: len(b) for g, b in banks.items()},
        "user_bank": bank is not None,
        "stats_version": version,
        "grid": HUB_GRID,
    }


__all__ = ["HUB_GRID", "Pairs", "bias", "choose", "fit", "pairs", "ranks", "unit"]
