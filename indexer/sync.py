"""Pushing dirty points to Qdrant, then marking them clean: the second half of every write.

Each round locks up to ``batch`` dirty point rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
SQLite's ``BEGIN IMMEDIATE`` serialises), pushes them, marks them clean and commits. Holding the
row locks across the push means no writer can change a point between our read and our mark, so a
stale state is never marked as synced. A crash leaves rows dirty, and the next round replays them:
Qdrant upserts and deletes are idempotent.

A point Qdrant refuses for its content (a value validation let through, or data written by an
older version) is *quarantined*: marked clean with the reason, so it never blocks the points
behind it. ``stats`` and ``sync`` list quarantined points; deleting or rewriting the item clears it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from sqlalchemy import delete, false, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from indexer.collections import Collection
from indexer.db.models import PointRow, VectorRow
from indexer.errors import NotFoundError, StorageError
from indexer.payload import payload, store_point
from indexer.schema import OWNED_FIELDS, key
from indexer.store.base import VectorStore

BATCH = 1024


#: a quarantine reason is cut to the column's width
REASON_CHARS = 1000

_POINT = (PointRow.item_key, PointRow.user_id, PointRow.point_id, PointRow.meta, PointRow.deleted)
_VECTOR = (
    VectorRow.item_key,
    VectorRow.modality,
    VectorRow.content_hash,
    VectorRow.vector,
    VectorRow.source,
    VectorRow.raw_norm,
    VectorRow.conformity,
    VectorRow.info_gain,
    VectorRow.scores_version,
    VectorRow.hub_bias,
)


@dataclass
class Pushed:
    """What a push did: points sent, and the item keys Qdrant refused (quarantined) with why."""

    pushed: int = 0
    quarantined: dict[str, str] = field(default_factory=dict)

    def __iadd__(self, other: Pushed) -> Pushed:
        self.pushed += other.pushed
        self.quarantined.update(other.quarantined)
        return self


def sync_dirty(
    sessions: sessionmaker[Session],
    store: VectorStore,
    c: Collection,
    progress: Callable[[int], None] | None = None,
    batch: int = BATCH,
) -> Pushed:
    """Replay every dirty point of ``c`` to Qdrant."""
    total = Pushed()
    while True:
        with sessions.begin() as s:
            pts = s.execute(
                select(*_POINT)
                .where(PointRow.collection_id == c.id, PointRow.dirty == true())
                .order_by(PointRow.item_key)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            if not pts:
                return total
            total += _push(s, store, c, list(pts))
        if progress:
            progress(len(pts))


def push_fresh(
    sessions: sessionmaker[Session],
    store: VectorStore,
    c: Collection,
    fresh: list[tuple[dict[str, Any], list[dict[str, Any]]]],
) -> Pushed:
    """Push points a write just created from its own rows in memory, then mark them clean.

    The same guarantee as :func:`sync_dirty` without reading vectors back: the point rows are
    locked (``FOR UPDATE SKIP LOCKED``; SQLite's ``BEGIN IMMEDIATE`` serialises) and only those
    still at the revision this write gave them are pushed; a point another writer changed since,
    or whose row is locked, stays dirty for that writer or the next sync.
    """
    if not fresh:
        return Pushed()
    keys = [p["item_key"] for p, _ in fresh]
    with sessions.begin() as s:
        held: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            rows = s.execute(
                select(PointRow.item_key, PointRow.revision)
                .where(
                    PointRow.collection_id == c.id,
                    PointRow.item_key.in_(keys[start : start + 500]),
                    PointRow.dirty == true(),
                )
                .with_for_update(skip_locked=True)
            )
            held.update((k, r) for k, r in rows)
        ok = [(SimpleNamespace(**p), [SimpleNamespace(**v) for v in vs]) for p, vs in fresh]
        ok = [(p, vs) for p, vs in ok if held.get(p.item_key) == p.revision]
        return _send(s, store, c, ok)


def _send(s: Session, store: VectorStore, c: Collection, live: list[tuple[Any, list[Any]]]) -> Pushed:
    """Upsert full points (on an adopted collection only inforank's payload fields), then mark
    them clean, or quarantined where Qdrant refused them."""
    if not live:
        return Pushed()
    if c.attached:  # adopted collection: never touch the user's vectors
        refused = store.set_payload(c.qdrant_collection, [(p.point_id, payload(p, vs)) for p, vs in live])
    else:
        refused = store.upsert(c.qdrant_collection, [store_point(p, vs, c.vector_names) for p, vs in live])
    _mark_clean(s, c, [p.item_key for p, _ in live if p.point_id not in refused])
    if refused:  # an older copy in Qdrant no longer says what the database does: take it out
        _remove(store, c, sorted(refused))
    for p, _ in live:
        if p.point_id in refused:
            s.execute(
                update(PointRow)
                .where(PointRow.collection_id == c.id, PointRow.item_key == p.item_key)
                .values(dirty=False, quarantine=refused[p.point_id][:REASON_CHARS])
            )
    bad = {p.item_key: refused[p.point_id] for p, _ in live if p.point_id in refused}
    return Pushed(len(live) - len(bad), bad)


def _mark_clean(s: Session, c: Collection, keys: list[str]) -> None:
    """Only for rows this transaction holds locked: nobody can have changed them since."""
    for start in range(0, len(keys), 500):
        s.execute(
            update(PointRow)
            .where(PointRow.collection_id == c.id, PointRow.item_key.in_(keys[start : start + 500]))
            .values(dirty=False, quarantine=None)
        )


def _remove(store: VectorStore, c: Collection, ids: list[str]) -> None:
    if c.attached:  # the point is the user's: remove only what inforank wrote
        store.delete_payload(c.qdrant_collection, ids, sorted(OWNED_FIELDS))
    else:
        store.delete(c.qdrant_collection, ids)


def _push(s: Session, store: VectorStore, c: Collection, pts: list[Any]) -> Pushed:
    gone = [p for p in pts if p.deleted]
    live = [p for p in pts if not p.deleted]
    vecs: dict[str, list[Any]] = defaultdict(list)
    keys = [p.item_key for p in live]
    for start in range(0, len(keys), 500):
        for v in s.execute(
            select(*_VECTOR).where(VectorRow.collection_id == c.id, VectorRow.item_key.in_(keys[start : start + 500]))
        ):
            vecs[v.item_key].append(v)
    done = _send(s, store, c, [(p, vecs[p.item_key]) for p in live])
    if gone:
        gone_keys = [p.item_key for p in gone]
        _remove(store, c, [p.point_id for p in gone])
        for start in range(0, len(gone_keys), 500):
            s.execute(
                delete(PointRow).where(
                    PointRow.collection_id == c.id, PointRow.item_key.in_(gone_keys[start : start + 500])
                )
            )
    done.pushed += len(gone)
    return done


def push_scores(
    sessions: sessionmaker[Session],
    store: VectorStore,
    c: Collection,
    scores: list[tuple[str, str, float | None, float | None, int | None]],
    revisions: dict[str, int],
) -> Pushed:
    """Push rescored values as a payload update of the score fields alone (no vectors re-sent),
    then mark the points clean. ``scores``: (item key, modality, conformity, information gain,
    scores version) as committed. As in :func:`push_fresh`, only points still at the revision
    the rescore left are sent; the others stay dirty for the full replay."""
    if not scores:
        return Pushed()
    fields: dict[str, dict[str, Any]] = defaultdict(dict)
    for item, m, conf, ig, version in scores:
        f = fields[item]
        if conf is not None:
            f[key(m, "conformity")] = float(conf)
        if ig is not None:
            f[key(m, "info_gain")] = float(ig)
        if version is not None:
            f[key(m, "stats_version")] = int(version)
    keys = list(fields)
    with sessions.begin() as s:
        held: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            rows = s.execute(
                select(PointRow.item_key, PointRow.point_id, PointRow.revision)
                .where(
                    PointRow.collection_id == c.id,
                    PointRow.item_key.in_(keys[start : start + 500]),
                    PointRow.dirty == true(),
                    PointRow.deleted == false(),
                )
                .with_for_update(skip_locked=True)
            )
            held.update((k, pid) for k, pid, rev in rows if revisions.get(k) == rev)
        try:
            refused = store.set_payload(c.qdrant_collection, [(held[k], fields[k]) for k in keys if k in held])
        except (StorageError, NotFoundError):  # e.g. a point Qdrant does not have (quarantined, or never pushed)
            return Pushed()  # all stay dirty: the caller's full replay upserts them whole
        ok = [k for k in keys if k in held and held[k] not in refused]
        _mark_clean(s, c, ok)
    # a refused payload update leaves the point dirty: the full replay quarantines it if need be
    return Pushed(len(ok))
