"""The transactional half of a write: validate, merge statistics, score, record — in one commit.

Protocol (docs/DESIGN.md, "Crash safety"): the database is the source of truth and Qdrant a
projection of it. One transaction holds the collection lock, merges/unmerges the statistics,
stores each item's exact unit vector and scores, and marks its point *dirty*. Only after the
commit does :mod:`indexer.sync` push dirty points to Qdrant and mark them clean. A crash before
the commit leaves nothing; a crash after it leaves dirty points that the next run replays
(upserts are idempotent). Statistics are never counted twice because the item row and the
statistics change in the same commit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from indexer.collections import Collection
from indexer.db.models import FreshnessRow, PointRow, VectorRow
from indexer.db.statstore import BASELINE, StatsCache, lock_collection, write_moments
from indexer.errors import InvalidItemError
from indexer.freshness import ZERO, Shift, mean_info_gain, shift
from indexer.items import (
    Item,
    UserId,
    check_hash,
    check_metadata,
    check_source,
    check_user_id,
    derived_id,
    item_key,
    other_modality,
    point_id,
    vector_hash,
)
from indexer.moments import Moments
from indexer.payload import unit_of
from indexer.scoring import score_members
from indexer.sketch import count_inserts
from indexer.vectors import check_rows, problem_of_shape

IN_CHUNK = 500
_VECTORS = cast(Table, VectorRow.__table__)
_POINTS = cast(Table, PointRow.__table__)


@dataclass
class Rejection:
    index: int | None  # the item's position in the input; None where it has none (quarantined)
    id: UserId | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": printable_id(self.id), "reason": self.reason}


def printable_id(uid: Any) -> Any:
    """The id as given, except where it cannot be printed or sent as JSON (a lone surrogate):
    then with the offending characters escaped, so a report about a bad id can itself be sent."""
    if isinstance(uid, str):
        return uid.encode("utf-8", "backslashreplace").decode("utf-8")
    return uid if uid is None or isinstance(uid, str | int | float | bool) else repr(uid)


@dataclass
class BatchReport:
    ingested: list[UserId] = field(default_factory=list)
    unchanged: list[UserId] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    stats_version: int = 0
    #: points an earlier, interrupted write left unsynced, pushed before this one
    replayed: int = 0
    #: committed items Qdrant refused: kept out of the way with their reason (``stats`` lists them)
    quarantined: list[Rejection] = field(default_factory=list)
    #: stored scores the freshness policy rewrote during this call
    rescored: int = 0
    #: a rescore is due and too large to run inside the write (the service runs it in the
    #: background, ``inforank ingest`` before it returns)
    rescore_due: bool = False
    #: HNSW builds the write asked for (``Indexer.add(index=True)``): what :meth:`Indexer.optimize` returned
    index_builds: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: BatchReport) -> None:
        self.ingested += other.ingested
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.quarantined += other.quarantined
        self.stats_version = max(self.stats_version, other.stats_version)


@dataclass
class Outbox:
    """What one committed write leaves to push: ``fresh`` holds the full database rows of points
    created by this write (pushed from memory, no read-back); ``others`` says whether the write
    also left other points dirty (changed or revived points, newly scored pending items)."""

    fresh: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)
    others: bool = False


@dataclass
class _Good:
    index: int
    uid: UserId
    key: str
    units: dict[str, np.ndarray]
    norms: dict[str, float]
    hashes: dict[str, str]
    meta: dict[str, Any]
    sources: dict[str, str]
    point_id: str | None = None


def _check_vectors(
    c: Collection, items: Sequence[Item]
) -> tuple[dict[tuple[int, str], str], dict[tuple[int, str], tuple[np.ndarray, float]]]:
    """Per (item, modality): why its vector is unusable, or its float32 unit vector and raw
    norm; checked and normalised per modality in one vectorised pass."""
    bad: dict[tuple[int, str], str] = {}
    good: dict[tuple[int, str], tuple[np.ndarray, float]] = {}
    for m in c.modalities:
        idx = [i for i, it in enumerate(items) if m in it.vectors]
        shaped = []
        for i in idx:
            why = problem_of_shape(np.shape(items[i].vectors[m]), c.dim)
            if why:
                bad[(i, m)] = f"{m} vector: {why}"
            else:
                shaped.append(i)
        if shaped:
            ck = check_rows(np.stack([np.asarray(items[i].vectors[m], dtype=np.float64) for i in shaped]), c.dim)
            for pos, why in ck.reasons.items():
                bad[(shaped[pos], m)] = f"{m} vector: {why}"
            kept = [i for i, ok in zip(shaped, ck.ok, strict=True) if ok]
            good.update(zip(((i, m) for i in kept), zip(ck.unit, ck.norms.tolist(), strict=True), strict=True))
    return bad, good


def _validate(c: Collection, items: Sequence[Item], offset: int) -> tuple[list[_Good], list[Rejection]]:
    good: list[_Good] = []
    bad: list[Rejection] = []
    seen: set[str] = set()
    problems, checked = _check_vectors(c, items)
    for i, it in enumerate(items):
        try:
            if not it.vectors:
                raise InvalidItemError("item has no vector")
            for m in it.vectors:
                if m not in c.vector_names:
                    raise InvalidItemError(f"collection {c.name!r} has no {m!r} vectors")
                if (i, m) in problems:
                    raise InvalidItemError(problems[(i, m)])
            meta = check_metadata(it.metadata or {})
            hashes = {
                m: check_hash(m, it.hashes[m]) if it.hashes.get(m) else vector_hash(it.vectors[m]) for m in it.vectors
            }
            sources = {m: check_source(m, s) for m, s in it.sources.items() if m in it.vectors and s is not None}
            uid = check_user_id(it.id) if it.id is not None else derived_id(c.model_identity, hashes)
            key = item_key(uid)
            if key in seen:
                raise InvalidItemError(f"id {uid!r} appears twice in the batch")
        except InvalidItemError as exc:
            bad.append(Rejection(offset + i if it.position is None else it.position, it.id, str(exc)))
            continue
        seen.add(key)
        units = {m: checked[(i, m)][0] for m in it.vectors}
        norms = {m: checked[(i, m)][1] for m in it.vectors}
        good.append(_Good(offset + i, uid, key, units, norms, hashes, meta, sources, it.point_id))
    return good, bad


def _rows(session: Session, model: Any, cid: int, keys: Sequence[str], cols: Sequence[str] | None = None) -> list[Any]:
    """Rows of ``model`` for ``keys``: ORM objects, or with ``cols`` only those columns as plain
    rows (the hot write path: no identity-map bookkeeping)."""
    what = [getattr(model, k) for k in cols] if cols else [model]
    out: list[Any] = []
    for s in range(0, len(keys), IN_CHUNK):
        res = session.execute(
            select(*what).where(model.collection_id == cid, model.item_key.in_(keys[s : s + IN_CHUNK]))
        )
        out += res.all() if cols else res.scalars().all()
    return out


def _batch_moments(rows: Iterable[tuple[np.ndarray, float]], dim: int) -> Moments:
    rows = list(rows)
    if not rows:
        return Moments.empty(dim)
    u = np.stack([r[0] for r in rows]).astype(np.float64)
    return Moments.from_batch(u, np.array([r[1] for r in rows]))


def write(
    session: Session, cache: StatsCache, coll: Collection, items: Sequence[Item], offset: int = 0
) -> tuple[BatchReport, dict[str, tuple[int, Moments]], Outbox]:
    """Validate and record one batch in the caller's transaction. Returns the report, the new
    statistics to publish to the cache once the transaction has committed, and the outbox."""
    report = BatchReport()
    good, report.rejected = _validate(coll, items, offset)
    if not good:
        return report, {}, Outbox()
    row = lock_collection(session, coll.id)
    c = Collection.of(row)
    keys = [g.key for g in good]
    existing = {(v.item_key, v.modality): v for v in _rows(session, VectorRow, c.id, keys, _VEC_COLS)}
    points = {p.item_key: p for p in _rows(session, PointRow, c.id, keys, _POINT_COLS)}
    adds: dict[str, list[tuple[np.ndarray, float]]] = defaultdict(list)
    removes: dict[str, list[tuple[np.ndarray, float]]] = defaultdict(list)
    changed: list[tuple[_Good, str]] = []
    for g in good:
        p = points.get(g.key)
        any_change = p is None or p.deleted
        for m, u in g.units.items():
            ex = existing.get((g.key, m))
            if ex is not None and ex.content_hash == g.hashes[m] and not (p and p.deleted):
                continue
            if ex is not None:
                removes[m].append((unit_of(ex).astype(np.float64), ex.raw_norm))
            adds[m].append((u, g.norms[m]))
            changed.append((g, m))
            any_change = True
        if not any_change and p is not None and g.meta and {**p.meta, **g.meta} != p.meta:
            any_change = True
        (report.ingested if any_change else report.unchanged).append(g.uid)
    if not report.ingested:
        report.stats_version = c.stats_version
        return report, {}, Outbox()
    version = c.stats_version + 1
    new: dict[str, tuple[int, Moments]] = {}
    for m in c.modalities:
        _, cur = cache.get(session, c.id, m, c.dim)
        if not adds[m] and not removes[m]:
            new[m] = (version, cur)
            continue
        cur = cur.unmerge(_batch_moments(removes[m], c.dim)).merge(_batch_moments(adds[m], c.dim))
        write_moments(session, c.id, m, cur, version)
        new[m] = (version, cur)
    row.stats_version = version
    vector_rows = _record(session, c, changed, existing, version, new)
    new_points, updated = _touch_points(session, c, good, points, set(report.ingested))
    filled = fill_pending(session, c, new, version)
    scored = {m for _, m in changed} | set(filled)
    changes = {m: len(adds[m]) + len(removes[m]) for m in c.modalities}
    track_freshness(session, cache, c, new, version, scored, changes)
    report.stats_version = version
    outbox = Outbox([(p, vector_rows[p["item_key"]]) for p in new_points], others=bool(updated or sum(filled.values())))
    return report, {m: v for m, v in new.items() if adds[m] or removes[m]}, outbox


def _record(
    session: Session,
    c: Collection,
    changed: list[tuple[_Good, str]],
    existing: dict[tuple[str, str], Any],
    version: int,
    new: dict[str, tuple[int, Moments]],
) -> dict[str, list[dict[str, Any]]]:
    """Store vectors and scores with two bulk statements (insert new rows, update the rest).
    Returns the inserted rows by item key."""
    by_mod: dict[str, list[_Good]] = defaultdict(list)
    for g, m in changed:
        by_mod[m].append(g)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for m, lst in by_mod.items():
        own = new[m][1]
        other = new.get(other_modality(m), (0, Moments.empty(c.dim)))[1]
        unit = np.stack([g.units[m] for g in lst]).astype(np.float64)
        sc = score_members(unit, own, other, c.tau, c.min_count)
        done = sc.conformity is not None and sc.info_gain is not None
        for j, g in enumerate(lst):
            row = {
                "collection_id": c.id,
                "item_key": g.key,
                "modality": m,
                "content_hash": g.hashes[m],
                "vector": np.ascontiguousarray(g.units[m], dtype="<f4").tobytes(),
                "raw_norm": g.norms[m],
                "source": g.sources.get(m),
                "conformity": None if sc.conformity is None else float(sc.conformity[j]),
                "info_gain": None if sc.info_gain is None else float(sc.info_gain[j]),
                "scores_version": version if done else None,
                "checked_version": version,
                "hub_bias": None,  # new content: no bias until the next hubness fit (neutral)
            }
            (updates if (g.key, m) in existing else inserts).append(row)
    if inserts:
        session.execute(insert(_VECTORS), inserts)  # Core: no ORM bulk bookkeeping
        count_inserts(session, inserts)  # the score histograms (updates and deletes: triggers)
    if updates:
        session.execute(update(VectorRow), updates)  # bulk UPDATE by primary key
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in inserts:
        by_key[r["item_key"]].append(r)
    return by_key


def _touch_points(
    session: Session,
    c: Collection,
    good: list[_Good],
    points: dict[str, Any],
    changed_ids: set[UserId],
) -> tuple[list[dict[str, Any]], int]:
    """Insert new point rows, bump the others. Returns the inserted rows and how many were updated."""
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for g in good:
        if g.uid not in changed_ids:
            continue
        p = points.get(g.key)
        if p is None:
            inserts.append(
                {
                    "collection_id": c.id,
                    "item_key": g.key,
                    "user_id": g.uid,
                    "point_id": g.point_id or point_id(c.name, g.key),
                    "meta": dict(g.meta),
                    "revision": 1,
                    "dirty": True,
                    "deleted": False,
                    "quarantine": None,
                }
            )
        else:
            meta = dict(g.meta) if p.deleted else {**(p.meta or {}), **g.meta}
            updates.append(
                {
                    "collection_id": c.id,
                    "item_key": g.key,
                    "meta": meta,
                    "revision": (p.revision or 0) + 1,
                    "dirty": True,
                    "deleted": False,
                    "quarantine": None,  # a rewrite retries a quarantined point
                }
            )
    if inserts:
        session.execute(insert(_POINTS), inserts)
    if updates:
        session.execute(update(PointRow), updates)
    return inserts, len(updates)


_VEC_COLS = ("item_key", "modality", "content_hash", "vector", "raw_norm")
_POINT_COLS = ("item_key", "meta", "deleted", "revision")


def fill_pending(
    session: Session, c: Collection, stats: dict[str, tuple[int, Moments]], version: int
) -> dict[str, int]:
    """Score items whose scores were pending and have become computable. Returns how many,
    per modality.

    Only modalities computable now are read: while the other modality is short of ``min_count``,
    a write must not reload every pending row of the collection."""
    ready = [m for m in c.modalities if computable(c, stats, m)]
    if not ready:
        return {}
    q = select(*SCORE_COLS).where(
        VectorRow.collection_id == c.id, VectorRow.modality.in_(ready), VectorRow.scores_version.is_(None)
    )
    rows = list(session.execute(q).all())
    snapshot = {m: mom for m, (_, mom) in stats.items()}
    done = {m: len([r for r in rows if r.modality == m]) for m in ready}
    changed = rescore_rows(session, c, rows, snapshot, version)
    mark_dirty(session, c.id, [r["item_key"] for r in changed])
    return {m: n for m, n in done.items() if n}


def computable(c: Collection, stats: dict[str, tuple[int, Moments]], m: str) -> bool:
    """Conformity needs 2 items of the modality; information gain ``min_count`` of the other."""
    own = stats.get(m, (0, Moments.empty(c.dim)))[1]
    other = stats.get(other_modality(m), (0, Moments.empty(c.dim)))[1]
    return own.n >= 2 and other.n >= c.min_count


#: the columns :func:`rescore_rows` reads (Core rows: no ORM bookkeeping on a full pass)
SCORE_COLS = (VectorRow.item_key, VectorRow.modality, VectorRow.vector, VectorRow.conformity, VectorRow.info_gain)


def rescore_rows(
    session: Session,
    c: Collection,
    rows: Sequence[Any],
    stats: dict[str, Moments],
    version: int,
    skip: dict[str, Shift] | None = None,
) -> list[dict[str, Any]]:
    """Score ``rows`` (of :data:`SCORE_COLS`) with the statistics ``stats`` of version
    ``version``: every row is checked at ``version``; a row whose stored scores differ from the
    new ones by more than ``skip`` (per modality; None: any difference) gets them. Conformity
    needs two items of the modality, information gain ``min_count`` of the other; what is not
    computable stays as it is. Two bulk statements; returns the new values of the rows that
    changed (their points need a push)."""
    changed: list[dict[str, Any]] = []
    confirmed: dict[str, list[str]] = defaultdict(list)
    for m in c.modalities:
        mine = [r for r in rows if r.modality == m]
        if not mine:
            continue
        own = stats.get(m, Moments.empty(c.dim))
        other = stats.get(other_modality(m), Moments.empty(c.dim))
        unit = np.stack([unit_of(r) for r in mine]).astype(np.float64)
        sc = score_members(unit, own, other, c.tau, c.min_count)
        tol = skip.get(m, ZERO) if skip else ZERO
        for j, r in enumerate(mine):
            conf = None if sc.conformity is None else float(sc.conformity[j])
            ig = None if sc.info_gain is None else float(sc.info_gain[j])
            moved = _moved(r.conformity, conf, tol.conformity) or _moved(r.info_gain, ig, tol.info_gain)
            if skip is None or moved:
                changed.append(
                    {
                        "collection_id": c.id,
                        "item_key": r.item_key,
                        "modality": m,
                        "conformity": r.conformity if conf is None else conf,
                        "info_gain": r.info_gain if ig is None else ig,
                        "scores_version": version if conf is not None and ig is not None else None,
                        "checked_version": version,
                    }
                )
            else:
                confirmed[m].append(r.item_key)
    if changed:
        session.execute(update(VectorRow), changed)  # bulk UPDATE by primary key
    for m, keys in confirmed.items():
        for start in range(0, len(keys), IN_CHUNK):
            session.execute(
                update(VectorRow)
                .where(
                    VectorRow.collection_id == c.id,
                    VectorRow.modality == m,
                    VectorRow.item_key.in_(keys[start : start + IN_CHUNK]),
                )
                .values(checked_version=version)
            )
    return changed


def _moved(stored: float | None, new: float | None, tol: float) -> bool:
    if new is None:
        return False
    return stored is None or abs(new - stored) > tol


def track_freshness(
    session: Session,
    cache: StatsCache,
    c: Collection,
    stats: dict[str, tuple[int, Moments]],
    version: int,
    scored: set[str],
    changes: dict[str, int],
) -> None:
    """Bring each modality's freshness row to ``version`` (inside the write's transaction, under
    the collection lock): items scored now widen the spread by the statistics' shift from the
    baseline; the bound is that shift plus the widest of spread and pending."""
    now = {m: mom for m, (_, mom) in stats.items()}
    base = {m: cache.get(session, c.id, m, c.dim, BASELINE)[1] for m in c.modalities}
    for m in c.modalities:
        f = session.get(FreshnessRow, (c.id, m))
        if now[m].n == 0 and f is None:
            continue
        if f is None:
            # the modality's first items are its baseline; a baseline from before freshness was
            # tracked (an upgraded database) leaves stored scores of unknown age: a rescore is due
            legacy = base[m].n > 0
            if not legacy:
                write_moments(session, c.id, m, now[m], version, kind=BASELINE)
                base[m] = now[m]
            f = new_freshness(session, c.id, m, version, pending=math.inf if legacy else 0.0)
        sh = shift(base, now, m, other_modality(m), c.tau)
        if m in scored:
            spread = Shift(f.spread_conformity, f.spread_info_gain).max(sh)
            f.spread_conformity, f.spread_info_gain = spread.conformity, spread.info_gain
        set_bound(f, c, now, m, sh, version)
        f.changes = (f.changes or 0) + changes.get(m, 0)


def new_freshness(session: Session, cid: int, m: str, version: int, pending: float = 0.0) -> FreshnessRow:
    """A modality's freshness row with its baseline at ``version``: nothing spread yet, rows
    not yet checked within ``pending`` (infinite where their age is unknown)."""
    f = FreshnessRow(collection_id=cid, modality=m, baseline_version=version, version=version)
    f.spread_conformity = f.spread_info_gain = 0.0
    f.pending_conformity = f.pending_info_gain = pending
    f.bound_conformity = f.bound_info_gain = f.tol_info_gain_abs = 0.0
    f.changes = f.rescored_items = 0
    session.add(f)
    return f


def set_bound(f: FreshnessRow, c: Collection, now: dict[str, Moments], m: str, sh: Shift, version: int) -> None:
    wide = Shift(f.spread_conformity, f.spread_info_gain).max(Shift(f.pending_conformity, f.pending_info_gain))
    b = sh + wide
    other = now.get(other_modality(m), Moments.empty(c.dim))
    if other.n < c.min_count:  # no information gain is stored while it is not computable
        b = Shift(b.conformity, 0.0)
    f.bound_conformity, f.bound_info_gain = b.conformity, b.info_gain
    f.tol_info_gain_abs = c.tol_info_gain * mean_info_gain(now[m], other, c.tau)
    f.version = version


def mark_dirty(session: Session, cid: int, keys: Sequence[str]) -> dict[str, int]:
    """Mark points dirty with a new revision (a rewrite also retries a quarantined point);
    returns each point's new revision."""
    keys = list(dict.fromkeys(keys))
    out: dict[str, int] = {}
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start : start + IN_CHUNK]
        where = (PointRow.collection_id == cid, PointRow.item_key.in_(chunk))
        session.execute(
            update(PointRow).where(*where).values(dirty=True, quarantine=None, revision=PointRow.revision + 1)
        )
        out.update((k, r) for k, r in session.execute(select(PointRow.item_key, PointRow.revision).where(*where)))
    return out


def delete(
    session: Session, cache: StatsCache, coll: Collection, ids: Sequence[UserId]
) -> tuple[list[UserId], list[UserId], dict[str, tuple[int, Moments]]]:
    """Remove items and their statistics contribution. Returns (deleted, missing, new stats)."""
    row = lock_collection(session, coll.id)
    c = Collection.of(row)
    keys = [item_key(i) for i in ids]
    points = {p.item_key: p for p in _rows(session, PointRow, c.id, keys) if not p.deleted}
    vecs = [v for v in _rows(session, VectorRow, c.id, keys) if v.item_key in points]
    deleted = [i for i, k in zip(ids, keys, strict=True) if k in points]
    missing = [i for i, k in zip(ids, keys, strict=True) if k not in points]
    if not deleted:
        return deleted, missing, {}
    version = c.stats_version + 1
    new: dict[str, tuple[int, Moments]] = {}
    for m in c.modalities:
        rem = [(unit_of(v).astype(np.float64), v.raw_norm) for v in vecs if v.modality == m]
        _, cur = cache.get(session, c.id, m, c.dim)
        if rem:
            cur = cur.unmerge(_batch_moments(rem, c.dim))
            write_moments(session, c.id, m, cur, version)
        new[m] = (version, cur)
    removed = {m: len([v for v in vecs if v.modality == m]) for m in c.modalities}
    track_freshness(session, cache, c, new, version, set(), removed)
    for v in vecs:
        session.delete(v)
    for p in points.values():
        p.deleted = True
        p.dirty = True
        p.quarantine = None
        p.revision = (p.revision or 0) + 1
    row.stats_version = version
    return deleted, missing, new


__all__ = [
    "BatchReport",
    "Outbox",
    "Rejection",
    "computable",
    "delete",
    "fill_pending",
    "new_freshness",
    "rescore_rows",
    "set_bound",
    "track_freshness",
    "write",
]
