"""Keeping hubness biases true as the collection changes (the fit itself: retrieval/hubness.py).

An item's bias is the mean of its k highest similarities to the bank (the other modality's items,
or a bank the user supplied). Once a collection has a fit, triggers on ``item_vectors`` queue every
change in ``hub_pending`` (migration 0006), and :func:`refresh` follows them with the store's own
nearest-neighbour queries, never with a scan of the collection:

- an item **added** to modality m: its own bias is the mean of its k nearest items of the other
  modality (one query), and, as a new member of the other modality's bank, it raises the bias of
  exactly the items o whose k-th similarity ``hub_kth`` it beats: those are among its own nearest
  neighbours in o's modality (the same query, ``REACH`` deep), and each is recomputed by its own
  k-nearest query;
- an item **removed** (its vector kept in the queue): the items it was among the k nearest of,
  ``similarity ≥ hub_kth``, are recomputed the same way.

The reach is deep enough to miss nothing once it ends below ``floor``, the lowest k-th similarity
of any item: an item o beyond the reach of a changed bank item b has ``cos(o, b) ≤ s_R`` (the
similarity at the reach's end), and b enters or leaves o's k nearest only where ``cos(o, b)`` is at
least o's k-th similarity, so at least ``floor``. The refresh therefore reaches ``REACH`` deep and,
while the reach still ends at or above the floor, four times deeper, up to ``MAX_REACH``. Past that
cap what it can miss is bounded, and the bound adds up over the changes it missed (several can
hit the same item):

- missed **additions** raise a bias by at most ``max s_R − floor`` in all (each of at most k new
  members beats an old member that was at least the floor; ``max s_R + 1`` once a removal was
  missed too, since o's k-th similarity may then lie below the floor);
- missed **removals** lower it by at most ``min(n, k)/k · (max s_R + 1)`` for n of them (each takes
  a member of at most its ``s_R`` out of the mean of k; what replaces it is at least −1).

The modality's ``bound`` (``applied.hubness``, ``stats``) is the larger of the two, kept with its
parts in ``missed``: 0 while every reach passed the floor, as on the COCO pairs and the 100k
synthetic pairs of ``bench.hubness``; a new fit or a recomputation of every bias resets it.
Biases follow the store's search: exact on a scanned store, within the HNSW index's recall on an
indexed one.

A queue longer than ``REFIT_SHARE`` of the collection is followed by :func:`recompute_all`
instead: every bias at once, exact, as the fit computes them.

New items read the modality's mean bias at the last full computation (``center``) until the refresh reaches them,
so a fresh item is neither favoured nor held back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from indexer.collections import Collection
from indexer.db.models import CollectionRow, HubBankRow, HubPendingRow, VectorRow
from indexer.db.statstore import lock_collection
from indexer.items import item_key, other_modality
from indexer.schema import ID
from indexer.store.base import QuerySpec, VectorStore
from indexer.sync import sync_dirty
from indexer.writer import mark_dirty

#: how deep the refresh first looks among a changed item's nearest neighbours of the other
#: modality, and how deep at most (four times deeper each round while the reach ends at or above
#: the floor). Synthetic CLIP-shaped pairs, k = 8: passing the floor took at most 925 neighbours at
#: 20k pairs (median 108), so the cap covers ≈ 90k pairs with its margin; larger collections may
#: miss, and then the bound says by how much.
REACH = 256
MAX_REACH = 4096
#: a queue longer than this share of the collection's vectors is followed by recomputing every
#: bias at once (numpy over the stored vectors, exact): measured at 20k pairs, following 5 % growth
#: change by change recomputed 89 % of the biases one query each, 4.9× the cost of a refit
REFIT_SHARE = 0.01
#: pending changes taken per round (one short transaction writes a round's biases)
ROUND = 256


def top_k(gallery: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each gallery row's (mean of its ``k`` highest similarities to the bank, the k-th of them)."""
    mean, kth = np.empty(len(gallery)), np.empty(len(gallery))
    for s in range(0, len(gallery), 2048):
        sim = gallery[s : s + 2048] @ bank.T
        kk = min(k, sim.shape[1])
        top = np.partition(sim, -kk, axis=1)[:, -kk:]
        mean[s : s + 2048], kth[s : s + 2048] = top.mean(axis=1), top.min(axis=1)
    return mean, kth


def fitted_modalities(c: Collection) -> tuple[str, ...]:
    """The modalities whose items carry a bias."""
    hub = c.hub or {}
    return tuple(m for m in c.modalities if m in (hub.get("center") or {}))


def user_bank(session: Session, c: Collection) -> dict[str, np.ndarray]:
    """A user-supplied bank, by the gallery modality it corrects."""
    rows = session.execute(select(HubBankRow).where(HubBankRow.collection_id == c.id)).scalars()
    return {other_modality(r.modality): np.frombuffer(r.vectors, dtype="<f4").reshape(-1, c.dim) for r in rows}


@dataclass
class Refresh:
    followed: int = 0  # queued changes worked off
    recomputed: int = 0  # biases recomputed
    bound: dict[str, float] = field(default_factory=dict)
    pending: int = 0  # still queued (another writer's changes, arrived meanwhile)
    refit: bool = False  # every bias recomputed at once (the queue was long)

    def as_dict(self) -> dict[str, Any]:
        return {
            "followed": self.followed,
            "recomputed": self.recomputed,
            "bound": self.bound,
            "pending": self.pending,
            "refit": self.refit,
        }


def pending(session: Session, c: Collection) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(HubPendingRow).where(HubPendingRow.collection_id == c.id)
        ).scalar()
        or 0
    )


def any_pending(session: Session, c: Collection) -> bool:
    q = select(HubPendingRow.id).where(HubPendingRow.collection_id == c.id).limit(1)
    return session.execute(q).first() is not None


class _Neighbours:
    """Nearest items of a modality through the store (what Qdrant has: the synced points)."""

    def __init__(self, store: VectorStore, c: Collection) -> None:
        self.store, self.c = store, c

    def __call__(self, vec: np.ndarray, modality: str, limit: int) -> list[tuple[str, float]]:
        hits = self.store.query(
            self.c.qdrant_collection,
            QuerySpec(vector=[float(x) for x in vec], using=self.c.vector_names[modality], limit=limit),
        )
        return [(item_key(h.payload[ID]), h.score) for h in hits if ID in h.payload]


def refresh(
    sessions: sessionmaker[Session],
    store: VectorStore,
    c: Collection,
    vectors: int,
    *,
    progress: Callable[[int], None] | None = None,
) -> Refresh:
    """Follow every queued change of ``c`` (see the module's docstring); ``vectors``: how many
    the collection holds (the statistics know it). Queries run outside any transaction; each
    round's biases are written in one short one, which also takes the round's changes off the
    queue. Writers may run meanwhile: their changes queue behind."""
    out = Refresh()
    if c.hub_k is None:
        return out
    k = int(c.hub_k)
    with sessions() as s:
        queued = pending(s, c)
    if queued and queued > REFIT_SHARE * vectors:
        return recompute_all(sessions, store, c)
    near = _Neighbours(store, c)
    while True:
        with sessions() as s:
            c = Collection.of(s.get(CollectionRow, c.id))
            hub = dict(c.hub or {})
            gallery = fitted_modalities(c)
            banks = user_bank(s, c) if hub.get("bank") == "user" else {}
            rows = (
                s.execute(
                    select(HubPendingRow)
                    .where(HubPendingRow.collection_id == c.id)
                    .order_by(HubPendingRow.id)
                    .limit(ROUND)
                )
                .scalars()
                .all()
            )
            if not rows:
                break
            ids = [r.id for r in rows]
            vecs = _vectors(s, c, {(r.item_key, r.modality) for r in rows if not r.removed})
        floor = dict(hub.get("floor") or {})
        bound = dict(hub.get("bound") or {})
        missed = dict(hub.get("missed") or {})
        new: dict[tuple[str, str], tuple[float, float]] = {}
        reaches: list[tuple[bool, str, list[tuple[str, float]]]] = []  # (removed, o, o's items near it)
        for r in rows:
            m, o = r.modality, other_modality(r.modality)
            vec = np.frombuffer(r.vector or b"", dtype="<f4") if r.removed else vecs.get((r.item_key, m))
            if vec is None or not len(vec):
                continue  # replaced or removed since: a later entry follows it
            if banks:  # a user bank: an item's bias is against it; the collection's items are no bank
                if m in banks and not r.removed:
                    b_mean, b_kth = top_k(vec[None, :].astype(np.float64), banks[m].astype(np.float64), k)
                    new[(r.item_key, m)] = (float(b_mean[0]), float(b_kth[0]))
                continue
            if o not in c.vector_names or (o not in gallery and m not in gallery):
                continue
            reach, complete = _reach(near, vec, o, k, floor.get(o)) if o in gallery else (near(vec, o, k), True)
            if not r.removed and m in gallery and reach:
                sims = [sc for _, sc in reach[:k]]
                new[(r.item_key, m)] = (float(np.mean(sims)), float(sims[-1]))
            if o in gallery:  # r's item is (or was) in the bank of o's items
                reaches.append((r.removed, o, reach))
                if not complete:  # beyond the reach, an item of o is at most reach[-1] close: a possible miss
                    missed[o] = _missed(missed.get(o), reach[-1][1], bool(r.removed))
                    bound[o] = _bound(missed[o], floor[o], k)
        with sessions() as s:
            kth = _kths(s, c, {(key, o) for _, o, reach in reaches for key, _ in reach})
            redo = {
                (key, o)
                for removed, o, reach in reaches
                for key, sc in reach
                if (t := kth.get((key, o))) is not None and (sc >= t - 1e-6 if removed else sc > t)
            } - set(new)
            redo_vecs = _vectors(s, c, redo)
        for (key, o), vec in redo_vecs.items():  # whose top k a bank change entered or left: recompute
            sims = [sc for _, sc in near(vec, other_modality(o), k)]
            if sims:
                new[(key, o)] = (float(np.mean(sims)), float(sims[-1]))
        with sessions.begin() as s:
            lock_collection(s, c.id)
            live = _existing(s, c, set(new))
            changed: list[dict[str, Any]] = [
                {"collection_id": c.id, "item_key": key, "modality": m, "hub_bias": b, "hub_kth": t}
                for (key, m), (b, t) in new.items()
                if (key, m) in live
            ]
            if changed:
                s.execute(update(VectorRow), changed)
                mark_dirty(s, c.id, [r["item_key"] for r in changed])
            for m in gallery:
                kths = [r["hub_kth"] for r in changed if r["modality"] == m]
                if kths and m in floor:
                    floor[m] = min(floor[m], *kths)
            s.execute(delete(HubPendingRow).where(HubPendingRow.id.in_(ids)))
            s.execute(
                update(CollectionRow)
                .where(CollectionRow.id == c.id)
                .values(hub={**hub, "floor": floor, "bound": bound, "missed": missed})
            )
            out.pending = pending(s, c)
        sync_dirty(sessions, store, c)
        out.followed += len(rows)
        out.recomputed += len(changed)
        out.bound = bound
        if progress:
            progress(len(rows))
    return out


def _reach(
    near: _Neighbours, vec: np.ndarray, o: str, k: int, floor: float | None
) -> tuple[list[tuple[str, float]], bool]:
    """``vec``'s nearest items of modality ``o``, ``REACH`` deep and four times deeper while the
    reach ends at or above ``floor`` (it may then have missed an item), up to ``MAX_REACH``; and
    whether it is complete: it ended below the floor or ran out of items (no floor: nothing to
    judge by, taken as complete)."""
    limit = max(REACH, k)
    hits = near(vec, o, limit)

    def open_ended() -> bool:
        return floor is not None and len(hits) >= limit and hits[-1][1] >= floor

    while open_ended() and limit < MAX_REACH:
        limit = min(4 * limit, max(MAX_REACH, k))
        hits = near(vec, o, limit)
    return hits, not open_ended()


def _missed(before: dict[str, float] | None, s_r: float, removed: bool) -> dict[str, float]:
    """The changes the refresh may have missed for one modality: the largest reach end of the
    additions and of the removals, and how many removals."""
    m = {"added": -1.0, "removed": 0, "removed_reach": -1.0, **(before or {})}
    if removed:
        m["removed"] += 1
        m["removed_reach"] = max(m["removed_reach"], s_r)
    else:
        m["added"] = max(m["added"], s_r)
    return m


def _bound(m: dict[str, float], floor: float, k: int) -> float:
    """How far any bias of the modality can be from its definition after the missed changes
    ``m`` (the module's docstring says why)."""
    raised = 0.0
    if m["added"] > -1.0:
        raised = m["added"] + 1.0 if m["removed"] else max(0.0, m["added"] - floor)
    lowered = min(m["removed"], k) / k * (m["removed_reach"] + 1.0) if m["removed"] else 0.0
    return float(max(raised, lowered))


def _chunks(keys: set[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    for m in sorted({m for _, m in keys}):
        ks = sorted(k for k, mm in keys if mm == m)
        for start in range(0, len(ks), 500):
            yield m, ks[start : start + 500]


def _vectors(s: Session, c: Collection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
    out: dict[tuple[str, str], np.ndarray] = {}
    for m, ks in _chunks(keys):
        q = select(VectorRow.item_key, VectorRow.vector).where(
            VectorRow.collection_id == c.id, VectorRow.modality == m, VectorRow.item_key.in_(ks)
        )
        out.update(((key, m), np.frombuffer(vec, dtype="<f4")) for key, vec in s.execute(q))
    return out


def _kths(s: Session, c: Collection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for m, ks in _chunks(keys):
        q = select(VectorRow.item_key, VectorRow.hub_kth).where(
            VectorRow.collection_id == c.id,
            VectorRow.modality == m,
            VectorRow.item_key.in_(ks),
            VectorRow.hub_kth.is_not(None),
        )
        out.update(((key, m), float(t)) for key, t in s.execute(q) if t is not None)
    return out


def _existing(s: Session, c: Collection, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for m, ks in _chunks(keys):
        q = select(VectorRow.item_key).where(
            VectorRow.collection_id == c.id, VectorRow.modality == m, VectorRow.item_key.in_(ks)
        )
        out.update((key, m) for (key,) in s.execute(q))
    return out


def queue_end(s: Session, c: Collection) -> int:
    """The id of the newest queued change (0: none): what a full computation reading now covers."""
    return int(s.execute(select(func.max(HubPendingRow.id)).where(HubPendingRow.collection_id == c.id)).scalar() or 0)


def clear_queue(s: Session, c: Collection, upto: int) -> int:
    """Take the changes up to ``upto`` off the queue (a full computation covered them); how many."""
    done = (HubPendingRow.collection_id == c.id, HubPendingRow.id <= upto)
    n = int(s.execute(select(func.count()).select_from(HubPendingRow).where(*done)).scalar() or 0)
    s.execute(delete(HubPendingRow).where(*done))
    return n


def write_all(
    s: Session, c: Collection, items: dict[str, tuple[list[str], np.ndarray]], banks: dict[str, np.ndarray], k: int
) -> tuple[int, dict[str, float], dict[str, float]]:
    """Every item's bias and k-th similarity against its modality's bank (``banks``: gallery
    modality → bank rows; ``items``: modality → item keys and unit vectors), written and marked
    dirty in the caller's transaction. Returns (items written, mean bias and lowest k-th similarity
    per modality: the ``center`` and ``floor``)."""
    written, center, floor = 0, {}, {}
    for g, bank in banks.items():
        keys, vecs = items.get(g, ([], np.zeros((0, c.dim))))
        if not keys or not len(bank):
            continue
        mean, kth = top_k(vecs.astype(np.float64), bank.astype(np.float64), k)
        s.execute(
            update(VectorRow),
            [
                {"collection_id": c.id, "item_key": key, "modality": g, "hub_bias": float(b), "hub_kth": float(t)}
                for key, b, t in zip(keys, mean, kth, strict=True)
            ],
        )
        mark_dirty(s, c.id, keys)
        written += len(keys)
        center[g], floor[g] = float(mean.mean()), float(kth.min())
    return written, center, floor


def recompute_all(sessions: sessionmaker[Session], store: VectorStore, c: Collection) -> Refresh:
    """Every bias against the bank as it is now, exact (what ``hubness fit`` does with the fit's
    k); the queue up to the vectors read is done, the bound back to 0."""
    with sessions() as s:
        seen = queue_end(s, c)
        hub = dict(c.hub or {})
        user = user_bank(s, c) if hub.get("bank") == "user" else {}
        items: dict[str, tuple[list[str], np.ndarray]] = {}
        for m in c.modalities:
            rows = s.execute(
                select(VectorRow.item_key, VectorRow.vector).where(
                    VectorRow.collection_id == c.id, VectorRow.modality == m
                )
            ).all()
            items[m] = (
                [r[0] for r in rows],
                np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(-1, c.dim),
            )
    gallery = fitted_modalities(c)
    banks = (
        {g: user[g] for g in gallery if g in user}
        if user
        else {g: items[other_modality(g)][1] for g in gallery if other_modality(g) in items}
    )
    out = Refresh(refit=True)
    with sessions.begin() as s:
        lock_collection(s, c.id)
        out.recomputed, center, floor = write_all(s, c, items, banks, int(c.hub_k or 0))
        out.followed = clear_queue(s, c, seen)
        s.execute(
            update(CollectionRow)
            .where(CollectionRow.id == c.id)
            .values(
                hub={
                    **hub,
                    "center": {**hub.get("center", {}), **center},
                    "floor": {**hub.get("floor", {}), **floor},
                    "bound": {},
                    "missed": {},
                }
            )
        )
        out.pending = pending(s, c)
    sync_dirty(sessions, store, c)
    return out
