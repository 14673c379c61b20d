"""The write-side library object: collections, ingestion, deletes, rescoring, statistics."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from indexer import blas, diagnostics, hubness, scoring, writer
from indexer import collections as catalog
from indexer import freshness as fresh_lib
from indexer.collections import EXTERNAL, Collection
from indexer.db.engine import make_engine, read_factory, session_factory, upgrade
from indexer.db.models import CollectionRow, FreshnessRow, PointRow, ScoreBucketRow, VectorRow
from indexer.db.statstore import BASELINE, StatsCache, lock_collection, write_moments
from indexer.errors import ConflictError, InvalidQueryError, StorageError
from indexer.freshness import ZERO, Shift, Tolerance
from indexer.items import (
    MODALITIES,
    OWNED_FIELDS,
    RESERVED_PREFIX,
    SCORE_FIELDS,
    Item,
    UserId,
    check_field_path,
    item_key,
    other_modality,
)
from indexer.moments import Moments
from indexer.payload import unit_of
from indexer.schema import key
from indexer.scoring import drift
from indexer.sketch import Sketch
from indexer.sketch import bounds as sketch_bounds
from indexer.sketch import value as sketch_value
from indexer.store import QdrantLocation, VectorStore, open_store
from indexer.store.base import FIELD_INDEX_TYPES
from indexer.sync import Pushed, push_fresh, push_scores, sync_dirty
from indexer.writer import BatchReport

DEFAULT_BATCH = 1024
#: :meth:`Indexer.score_cut` inside a bucket: values it reads from Qdrant at most …
CUT_READ_MAX = 50_000
#: … after narrowing the interval by at most this many counts, until fewer than …
CUT_COUNTS = 8
#: … values precede the cut
CUT_SCROLL = 64
log = logging.getLogger("inforank")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class RescoreReport:
    """What a rescore did: ``checked`` rows compared with their scores under the baseline
    statistics (``stats_version``), ``rescored`` of them rewritten (payload only; the others
    moved less than half the tolerance), or ``skipped`` because every bound was within tolerance."""

    freshness: dict[str, dict[str, Any]]
    checked: int = 0
    rescored: int = 0
    skipped: bool = False
    stats_version: int = 0
    replayed: int = 0
    #: what the hubness refresh followed (:mod:`indexer.hubness`); None: the collection has no fit
    hubness: dict[str, Any] | None = None


def _quarantined(p: Pushed) -> list[writer.Rejection]:
    return [
        writer.Rejection(None, json.loads(k), f"Qdrant refused the point: {why}") for k, why in p.quarantined.items()
    ]


def _quantiles(rows: list[Any]) -> dict[str, dict[str, float]]:
    """Typical values of the stored scores (from a sample), for choosing filter bounds."""
    out = {}
    for f in ("conformity", "info_gain"):
        v = np.array([getattr(r, f) for r in rows if getattr(r, f) is not None], float)
        if len(v):
            q = np.percentile(v, [1, 5, 25, 50, 75, 95, 99])
            out[f] = {f"p{p}": float(x) for p, x in zip((1, 5, 25, 50, 75, 95, 99), q, strict=True)}
    return out


def storage_error(what: str, exc: SQLAlchemyError) -> StorageError:
    """A database failure as a client may see it: the driver's one-line reason, never the SQL
    statement or its parameters (which carry the caller's data); the full error is logged."""
    log.info("%s: %s", what, exc)  # the full error, for operators (INFO: never on a CLI user's screen)
    orig = getattr(exc, "orig", None) or exc
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:300]
    return StorageError(f"{what} ({type(orig).__name__}: {reason}). Retry; if it persists, check the database.")


def _db(fn: F) -> F:
    """Database errors of a library call become :class:`StorageError` (see :func:`storage_error`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except SQLAlchemyError as exc:
            raise storage_error(f"The database failed during {fn.__name__}", exc) from exc

    return cast(F, wrapper)


def _index_type(t: Any) -> str:
    if t not in FIELD_INDEX_TYPES:
        raise InvalidQueryError(f"An index type is one of {', '.join(FIELD_INDEX_TYPES)}; got {t!r:.40}.")
    return str(t)


#: below this many vectors (all modalities) a full scan is fast enough (≈ 4 ms at 20k × 512-d
#: here) and no HNSW index is built on the embedded store; see BENCHMARKS.md "HNSW"
INDEX_MIN_VECTORS = 50_000
#: the index is rebuilt once this share of the vectors is outside it
INDEX_STALE_SHARE = 0.1


def _unchecked(base: int) -> tuple[Any, Any]:
    """The rows a rescore pass with baseline ``base`` has not checked, as two conditions each
    answered by an index range (``ix_item_vectors_checked``): with an OR of the two the database
    walked the collection's whole index whenever no row matched, the usual case."""
    return VectorRow.checked_version.is_(None), VectorRow.checked_version < base


class Indexer:
    """Owns a database engine and a vector store; every write goes through here.

    >>> ix = Indexer("sqlite:///data/inforank.sqlite", QdrantLocation(edge_path="data/qdrant"))
    """

    #: collections up to this many items are rescored inside the write that makes it due
    RESCORE_INLINE_LIMIT = 20_000

    def __init__(
        self,
        database_url: str,
        qdrant: QdrantLocation,
        *,
        migrate: bool = True,
        rescore_inline_limit: int | None = None,
        fresh_below: int = fresh_lib.FRESH_BELOW,
        auto_rescore: bool = True,
    ):
        self.database_url = database_url
        self.location = qdrant
        self.rescore_inline_limit = self.RESCORE_INLINE_LIMIT if rescore_inline_limit is None else rescore_inline_limit
        self.fresh_below = fresh_below
        self.auto_rescore = auto_rescore
        try:
            if migrate:
                upgrade(database_url)
            self.engine = make_engine(database_url)
        except SQLAlchemyError as exc:
            raise storage_error("Cannot open the database", exc) from exc
        self.sessions = session_factory(self.engine)
        #: read-only work (catalog, statistics, histograms): never waits for a writer
        self.reads = read_factory(self.engine)
        self.store: VectorStore = open_store(qdrant)
        self.cache = StatsCache()

    def close(self) -> None:
        self.store.close()
        self.engine.dispose()

    def __enter__(self) -> Indexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- collections -------------------------------------------------------------------
    @_db
    def create_collection(
        self,
        name: str,
        *,
        dim: int,
        model: str = EXTERNAL,
        pretrained: str = "",
        tau: float = 1.0,
        min_count: int = 32,
        modalities: Sequence[str] = MODALITIES,
        field_indexes: Mapping[str, str] | None = None,
    ) -> Collection:
        """A new collection; ``field_indexes`` (field → type, as :meth:`index_field` takes) are
        created with it, before any point, so every HNSW graph built later links their values."""
        catalog.check_name(name)
        wanted = {check_field_path(f): _index_type(t) for f, t in (field_indexes or {}).items()}
        names = {m: m for m in modalities}
        with self.sessions.begin() as s:
            c = catalog.insert(
                s,
                name=name,
                model=model,
                pretrained=pretrained,
                dim=dim,
                tau=tau,
                min_count=min_count,
                qdrant_collection=name,
                vector_names=names,
                attached=False,
            )
            if self.store.exists(name):
                raise ConflictError(
                    f"A Qdrant collection {name!r} already exists. Adopt it with "
                    f"`inforank attach {name}` or choose another name."
                )
            # Inside the transaction: if Qdrant fails, the catalog row is rolled back.
            self.store.create(name, {m: dim for m in names}, SCORE_FIELDS)
            try:
                for f, t in wanted.items():
                    self.store.add_field_index(name, f, t)
            except BaseException:
                self.store.drop(name)
                raise
            if wanted:  # indexed before any point: every graph built later links them
                c = replace(c, linked_fields=tuple(sorted(wanted)))
                s.execute(
                    update(CollectionRow).where(CollectionRow.id == c.id).values(linked_fields=list(c.linked_fields))
                )
        return c

    @_db
    def collection(self, name: str) -> Collection:
        with self.reads() as s:
            return catalog.get(s, name)

    @_db
    def collections(self) -> list[Collection]:
        with self.reads() as s:
            rows = s.execute(select(CollectionRow).order_by(CollectionRow.name)).scalars()
            return [Collection.of(r) for r in rows]

    @_db
    def set_evaluation(self, name: str, evaluation: dict[str, Any]) -> None:
        """Keep an evaluation's summary (and the defaults chosen from it) with the collection."""
        c = self.collection(name)
        plain = json.loads(json.dumps(evaluation))  # JSON types only (numpy scalars, tuples)
        with self.sessions.begin() as s:
            s.execute(update(CollectionRow).where(CollectionRow.id == c.id).values(evaluation=plain))

    @_db
    def drop_collection(self, name: str) -> None:
        c = self.collection(name)
        if not c.attached:
            self.store.drop(c.qdrant_collection)
        with self.sessions.begin() as s:
            s.delete(s.get(CollectionRow, c.id))
            s.flush()  # the cascade into item_vectors counts the histograms down to zero …
            s.execute(delete(ScoreBucketRow).where(ScoreBucketRow.collection_id == c.id))  # … then they go

    # ---- writes ------------------------------------------------------------------------
    @_db
    def add(
        self,
        name: str,
        items: Iterable[Item | writer.Rejection],
        *,
        batch_size: int = DEFAULT_BATCH,
        model: tuple[str, str] | None = None,
        progress: Callable[[int], None] | None = None,
        index: bool = False,
        on_build: Callable[[dict[str, Any]], None] | None = None,
    ) -> BatchReport:
        """Ingest items in batches; each batch is one commit followed by a Qdrant sync. Once
        the last batch is in, the freshness policy runs (a rescore here, or reported due): every
        batch's commit states the bound of its stored scores, and the call returns them within
        tolerance or says a rescore is due.

        ``model`` is the ``(model, pretrained)`` that produced the vectors; a mismatch with the
        collection's identity is refused before anything is written. ``index``: on a store that
        builds its HNSW index only when asked (the embedded default), build it a segment at a
        time as the write goes (each time a segment's worth of points is outside it), then once
        more at the end where the policy says it is due: every build stays bounded instead of
        one build over everything at the end (``BatchReport.index_builds``). ``on_build`` is
        told each build's :meth:`index_state` before it starts (a build takes minutes at 1M).
        """
        c = self.collection(name)
        if model is not None:
            catalog.check_model(c, *model)
        replay = self._replay(c)
        total = BatchReport(stats_version=c.stats_version, replayed=replay.pushed, quarantined=_quarantined(replay))
        buf: list[Item] = []
        offset = 0
        for it in items:
            if isinstance(it, writer.Rejection):  # a reader could not even build the item
                total.rejected.append(it)
                continue
            buf.append(it)
            if len(buf) >= batch_size:
                total.extend(self._write_batch(c, buf, offset))
                offset += len(buf)
                if progress:
                    progress(len(buf))
                buf = []
                if index and (st := self._segment_due(name, c)):
                    if on_build:
                        on_build(st)
                    total.index_builds.append(self.optimize(name, force=True))
        if buf:
            total.extend(self._write_batch(c, buf, offset))
            if progress:
                progress(len(buf))
        if total.ingested:  # once per call: a rescore after each batch would redo rows the next moves again
            total.rescored, total.rescore_due = self._keep_fresh(c.name)
        if index and total.ingested and (st := self.index_state(name))["optimize_due"]:
            if on_build:
                on_build(st)
            total.index_builds.append(self.optimize(name))
        return total

    def _segment_due(self, name: str, c: Collection) -> dict[str, Any] | None:
        """The index state where a segment's worth of vectors is outside the HNSW index of a
        store that bounds its segments and builds only when asked; None otherwise."""
        per = self.store.segment_points
        if per is None:
            return None
        st = self.index_state(name)
        due = not st["automatic"] and st["vectors"] - st["indexed_vectors"] >= per * len(c.vector_names)
        return st if due else None

    def _write_batch(self, c: Collection, items: Sequence[Item], offset: int) -> BatchReport:
        with blas.one_thread():  # the batch's products are small: a BLAS pool only spins (indexer/blas.py)
            return self._write_batch_now(c, items, offset)

    def _write_batch_now(self, c: Collection, items: Sequence[Item], offset: int) -> BatchReport:
        try:
            with self.sessions.begin() as s:
                report, new, outbox = writer.write(s, self.cache, c, items, offset)
        except SQLAlchemyError as exc:
            raise storage_error("The database failed while writing a batch", exc) from exc
        for m, (v, mom) in new.items():
            self.cache.put(c.id, m, v, mom)
        pushed = push_fresh(self.sessions, self.store, c, outbox.fresh)
        if outbox.others or pushed.pushed + len(pushed.quarantined) < len(outbox.fresh):
            pushed += sync_dirty(self.sessions, self.store, c)
        report.quarantined = _quarantined(pushed)
        return report

    def _keep_fresh(self, name: str) -> tuple[int, bool]:
        """After a write: when the freshness policy says a rescore is due, run it here for a
        collection of at most ``rescore_inline_limit`` items, or report it due (the service
        runs it in the background, ``inforank ingest`` before it returns).
        Returns (scores rewritten here, still due)."""
        if not self.auto_rescore:
            return 0, False
        due, n = self._due(self.collection(name))
        if not due:
            return 0, False
        if n > self.rescore_inline_limit:
            return 0, True
        return self.rescore(name).rescored, False

    def _replay(self, c: Collection) -> Pushed:
        """Every write starts here: take the store (so a busy embedded store is found before the
        database commits anything), then push what an earlier, interrupted write left dirty."""
        self.store.claim(c.qdrant_collection)
        return sync_dirty(self.sessions, self.store, c)

    @_db
    def delete(self, name: str, ids: Sequence[UserId]) -> dict[str, Any]:
        c = self.collection(name)
        replay = self._replay(c)
        with self.sessions.begin() as s:
            deleted, missing, new = writer.delete(s, self.cache, c, list(ids))
        for m, (v, mom) in new.items():
            self.cache.put(c.id, m, v, mom)
        sync_dirty(self.sessions, self.store, c)
        rescored, due = self._keep_fresh(name) if deleted else (0, False)
        return {
            "deleted": deleted,
            "missing": missing,
            "replayed": replay.pushed,
            "rescored": rescored,
            "rescore_due": due,
        }

    @_db
    def sync(self, name: str) -> int:
        """Push points a crash left unsynced; returns how many (refused ones are quarantined:
        see :meth:`quarantined`)."""
        c = self.collection(name)
        self.store.claim(c.qdrant_collection)
        return sync_dirty(self.sessions, self.store, c).pushed

    @_db
    def quarantined(self, name: str, limit: int = 20) -> dict[str, Any]:
        """Points Qdrant refused: how many, and the first ``limit`` with their reasons. Delete
        them, or ingest the item again with corrected data, to clear them."""
        c = self.collection(name)
        where = (PointRow.collection_id == c.id) & PointRow.quarantine.is_not(None)
        with self.reads() as s:
            n = s.execute(select(func.count()).where(where)).scalar_one()
            rows = s.execute(
                select(PointRow.user_id, PointRow.quarantine).where(where).order_by(PointRow.item_key).limit(limit)
            ).all()
        return {"count": n, "items": [{"id": u, "reason": r} for u, r in rows]}

    # ---- statistics --------------------------------------------------------------------
    @_db
    def moments(self, name: str, modality: str, kind: str = "current") -> tuple[int, Moments]:
        c = self.collection(name)
        with self.reads() as s:
            return self.cache.get(s, c.id, modality, c.dim, kind)

    @_db
    def vectors(
        self, name: str, modality: str, keys: Sequence[str] | None = None
    ) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """User ids, float32 unit vectors and raw norms of stored items of one modality."""
        c = self.collection(name)
        with self.reads() as s:
            q = (
                select(PointRow.user_id, VectorRow.vector, VectorRow.raw_norm)
                .join(
                    PointRow,
                    (PointRow.collection_id == VectorRow.collection_id) & (PointRow.item_key == VectorRow.item_key),
                )
                .where(VectorRow.collection_id == c.id, VectorRow.modality == modality)
                .order_by(VectorRow.item_key)
            )
            if keys is not None:
                q = q.where(VectorRow.item_key.in_(list(keys)))
            rows = s.execute(q).all()
        if not rows:
            return [], np.zeros((0, c.dim), np.float32), np.zeros(0)
        ids = [r[0] for r in rows]
        unit = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows])
        return ids, unit, np.array([r[2] for r in rows])

    @_db
    def scores(self, name: str, modality: str) -> dict[str, np.ndarray]:
        """Stored scores of one modality (NaN where pending), with ids, for reports."""
        c = self.collection(name)
        with self.reads() as s:
            rows = s.execute(
                select(
                    PointRow.user_id,
                    VectorRow.conformity,
                    VectorRow.info_gain,
                    VectorRow.scores_version,
                    VectorRow.source,
                    PointRow.meta,
                )
                .join(
                    PointRow,
                    (PointRow.collection_id == VectorRow.collection_id) & (PointRow.item_key == VectorRow.item_key),
                )
                .where(VectorRow.collection_id == c.id, VectorRow.modality == modality)
                .order_by(VectorRow.item_key)
            ).all()
        nan = float("nan")
        return {
            "ids": np.array([r[0] for r in rows], dtype=object),
            "conformity": np.array([nan if r[1] is None else r[1] for r in rows], dtype=float),
            "info_gain": np.array([nan if r[2] is None else r[2] for r in rows], dtype=float),
            "version": np.array([-1 if r[3] is None else r[3] for r in rows]),
            "source": np.array([r[4] for r in rows], dtype=object),
            "meta": np.array([r[5] or {} for r in rows], dtype=object),
        }

    @_db
    def score_sketch(self, name: str, modality: str) -> dict[str, Sketch]:
        """The distribution of the stored conformity and information gain of one modality, as
        the histograms the database keeps exact under every write (:mod:`indexer.sketch`):
        O(buckets) rows read, whatever the collection's size."""
        c = self.collection(name)
        with self.reads() as s:
            rows = s.execute(
                select(ScoreBucketRow.field, ScoreBucketRow.bucket, ScoreBucketRow.n).where(
                    ScoreBucketRow.collection_id == c.id, ScoreBucketRow.modality == modality, ScoreBucketRow.n != 0
                )
            ).all()
        return {f: Sketch.of([(b, n) for g, b, n in rows if g == f]) for f in ("conformity", "info_gain")}

    @_db
    def score_cut(self, name: str, modality: str, share: float, sk: Sketch | None = None) -> float | None:
        """The information gain below which exactly ``⌊share · n⌋`` of the modality's scored
        items lie (ties aside): the histogram finds the bucket and the items below it; inside it,
        Qdrant's range index on the score field (:meth:`_value_at`).

        Exact whenever Qdrant holds the scores the database holds (outside a write in flight or
        a push awaiting ``sync``; Qdrant's copy of a score may differ in the last bit); otherwise
        the bucket's representative (within 0.5 % of the exact value). The database keeps no
        index on score values: random inserts into one made every write slower as the collection
        grew (BENCHMARKS.md, "The score-value index leaves the database")."""
        c = self.collection(name)
        sk = sk if sk is not None else self.score_sketch(name, modality)["info_gain"]
        if not sk.n:
            return None
        rank = min(int(share * sk.n), sk.n - 1)
        k, before, inside = sk.locate(rank)
        got = self._value_at(c.qdrant_collection, key(modality, "info_gain"), *sketch_bounds(k), rank - before, inside)
        return got if got is not None else float(sketch_value(np.array([k]))[0])  # the bucket's representative

    def _value_at(self, coll: str, field: str, lo: float, hi: float, need: int, inside: int) -> float | None:
        """The value of 0-based rank ``need`` among ``field``'s values in ``(lo, hi]`` (about
        ``inside`` of them), from Qdrant's range index: exact counts narrow the interval, each
        guess placed where the rank would fall were the values spread evenly (they nearly are
        inside one 1 %-wide bucket: two or three counts at 1M), until at most
        :data:`CUT_SCROLL` values precede the rank; a scroll ordered by the field reads those.
        A count costs about a millisecond at 1M, a value read 9 µs (one per segment and value):
        reading the whole bucket's 2,000 values took 25 ms. None where Qdrant holds fewer
        values than the histogram says."""
        for _ in range(CUT_COUNTS):
            if need < CUT_SCROLL or inside <= 0:
                break
            x = lo + (hi - lo) * (need + 0.5) / inside
            if not lo < x < hi:  # ties: the interval cannot shrink further
                break
            n = self.store.count(coll, {"must": [{"key": field, "range": {"gt": lo, "lte": x}}]})
            if n > need:
                hi, inside = x, n
            else:
                lo, need, inside = x, need - n, inside - n
        if need >= CUT_READ_MAX:
            return None
        vals = self.store.ascending_values(coll, field, lo, hi, need + 1)
        return vals[need] if len(vals) > need else None

    @_db
    def stats(self, name: str, sample: int = 2000) -> dict[str, Any]:
        """Per modality: count, mean norm, version, drift, diagnostics; and the gap."""
        c = self.collection(name)
        out: dict[str, Any] = {
            "collection": c.name,
            "model": c.model_identity,
            "dim": c.dim,
            "tau": c.tau,
            "stats_version": c.stats_version,
            "qdrant": self.location.describe(),
            "modalities": {},
        }
        moms: dict[str, Moments] = {}
        with self.reads() as s:
            for m in c.modalities:
                v, mom = self.cache.get(s, c.id, m, c.dim)
                _, base = self.cache.get(s, c.id, m, c.dim, BASELINE)
                moms[m] = mom
                pending = s.execute(
                    select(func.count()).where(
                        VectorRow.collection_id == c.id,
                        VectorRow.modality == m,
                        VectorRow.scores_version.is_(None),
                    )
                ).scalar_one()
                info: dict[str, Any] = {
                    "count": mom.n,
                    "mean_norm": float(np.linalg.norm(mom.mean)),
                    "stats_version": v,
                    "drift": drift(mom, base),
                    "pending_scores": pending,
                    "shell": diagnostics.shell(mom).as_dict(),
                }
                out["modalities"][m] = info
        fresh = self.freshness(name)
        for m in c.modalities:
            out["modalities"][m]["freshness"] = fresh[m]
            if moms[m].n < 2:
                continue
            rows = self._sample(c, m, sample)
            unit = np.stack([unit_of(r) for r in rows]).astype(np.float64)
            norms = np.array([r.raw_norm for r in rows])
            iso = diagnostics.isotropy(unit)
            sh = diagnostics.shell(moms[m], unit * norms[:, None])
            info = out["modalities"][m]
            info["isotropy"] = {"i1": iso.i1, "i2": iso.i2}
            info["shell"] = sh.as_dict()
            info["score_quantiles"] = _quantiles(rows)
            if fresh[m].get("tolerance"):
                share = self._share_outside(c, m, rows, unit, moms, fresh[m])
                info["freshness"]["sampled_share_outside_tolerance"] = share
        if all(m in moms and moms[m].n for m in MODALITIES):
            g = diagnostics.modality_gap(moms["image"], moms["text"])
            out["gap"] = {"modality_gap": g.gap, "cos_means": g.cos_means}
        out["quarantined"] = self.quarantined(name)
        out["index"] = self.index_state(name)
        out["field_indexes"] = self.field_indexes(name)
        if c.hub_k is not None:
            with self.reads() as s:
                queued = hubness.pending(s, c)
            hub = c.hub or {}
            out["hubness"] = {
                "k": c.hub_k,
                "beta": c.hub_beta,
                "bank": hub.get("bank"),
                "fitted_at_stats_version": c.hub_version,
                "pending_changes": queued,
                "center": hub.get("center"),
                "bound": hub.get("bound"),
                # what the refresh may have missed past its deepest reach, per modality
                "missed": hub.get("missed"),
            }
        return out

    @_db
    def sample(self, name: str, modality: str, n: int) -> np.ndarray:
        """Up to ``n`` random unit vectors of a modality (float64), drawn by the database."""
        c = self.collection(name)
        rows = self._sample(c, modality, n)
        if not rows:
            return np.zeros((0, c.dim))
        return np.stack([unit_of(r) for r in rows]).astype(np.float64)

    def _sample(self, c: Collection, m: str, n: int) -> list[Any]:
        """Up to ``n`` random rows of a modality, drawn by the database (never all in memory).
        The draw reads keys only (from the primary key's index); the vectors are read for the
        ``n`` drawn (ordering the rows themselves at random read every vector: 7.7× slower)."""
        mine = (VectorRow.collection_id == c.id, VectorRow.modality == m)
        with self.reads() as s:
            drawn = select(VectorRow.item_key).where(*mine).order_by(func.random()).limit(n)
            q = select(VectorRow.vector, VectorRow.raw_norm, VectorRow.conformity, VectorRow.info_gain).where(
                *mine, VectorRow.item_key.in_(drawn)
            )
            return list(s.execute(q).all())

    def _share_outside(
        self, c: Collection, m: str, rows: list[Any], unit: np.ndarray, moms: dict[str, Moments], fresh: dict[str, Any]
    ) -> float:
        """Share of sampled rows (``unit``: their vectors) whose stored score is further than the
        tolerance from its value under the current statistics (the bound is a guarantee; this is
        what it guards)."""
        other = moms.get(other_modality(m), Moments.empty(c.dim))
        sc = scoring.score_members(unit, moms[m], other, c.tau, c.min_count)
        bad = np.zeros(len(rows), bool)
        tol = fresh["tolerance"]
        for f, new in (("conformity", sc.conformity), ("info_gain", sc.info_gain)):
            if new is None:
                continue
            stored = np.array([np.nan if getattr(r, f) is None else getattr(r, f) for r in rows], float)
            bad |= np.isfinite(stored) & (np.abs(stored - new) > tol[f])
        return float(bad.mean()) if len(rows) else 0.0

    @_db
    def rescore(
        self,
        name: str,
        *,
        all: bool = False,
        batch_size: int = 2048,
        progress: Callable[[int], None] | None = None,
    ) -> RescoreReport:
        """Bring every stored score within its tolerance of the current statistics.

        Skipped when every modality's bound is already within tolerance (``all`` rescores
        anyway). A pass takes the statistics of one version as its baseline and checks every row
        against them in batches, rewriting only scores that moved more than half the tolerance,
        as a payload update (no vector is re-sent). Resumable: rows checked at the baseline are
        not read again, and a rerun continues an interrupted pass. Writers may run meanwhile.
        A collection with a hubness fit also gets its biases brought up to date with every change
        since the last rescore (:func:`indexer.hubness.refresh`).
        """
        c = self.collection(name)
        replayed = self._replay(c).pushed  # a crash after an earlier rescore's commit left these
        fresh = self.freshness(name, counts=False)  # nothing unchecked unless a pass is unfinished
        rep = RescoreReport(fresh, stats_version=c.stats_version, replayed=replayed)
        if not all and not self._unfinished_pass(c) and not any(f["outside_tolerance"] for f in fresh.values()):
            rep.skipped = True
        else:
            self._rescore_pass(c, rep, all, batch_size, progress)
            rep.freshness = self.freshness(name)
        if c.hub_k is not None:  # the hubness biases follow the changes since the last refresh
            with self.reads() as s:
                vectors = sum(self.cache.get(s, c.id, m, c.dim)[1].n for m in c.modalities)
            rep.hubness = hubness.refresh(self.sessions, self.store, c, vectors).as_dict()
        return rep

    def _rescore_pass(
        self, c: Collection, rep: RescoreReport, all: bool, batch_size: int, progress: Callable[[int], None] | None
    ) -> None:
        target, snapshot, skip = self._start_pass(c, restart=all)
        rep.stats_version = target
        while True:
            with blas.one_thread(), self.sessions.begin() as s:
                lock_collection(s, c.id)
                rows: list[Any] = []
                for cond in _unchecked(target):  # index range probes, never a walk of the collection
                    q = select(*writer.SCORE_COLS).where(VectorRow.collection_id == c.id, cond)
                    rows += s.execute(q.limit(batch_size - len(rows))).all()
                    if len(rows) >= batch_size:
                        break
                if not rows:
                    self._finish_pass(s, c, rep)
                    break
                changed = writer.rescore_rows(s, c, rows, snapshot, target, skip)
                revisions = writer.mark_dirty(s, c.id, [r["item_key"] for r in changed])
                scores = [
                    (r["item_key"], r["modality"], r["conformity"], r["info_gain"], r["scores_version"])
                    for r in changed
                ]
            rep.checked += len(rows)
            rep.rescored += len(changed)
            if push_scores(self.sessions, self.store, c, scores, revisions).pushed < len(revisions):
                sync_dirty(self.sessions, self.store, c)  # whatever the payload update left dirty
            if progress:
                progress(len(rows))

    def _unfinished_pass(self, c: Collection, s: Any = None) -> bool:
        """Whether some row is not checked against the baseline yet (an interrupted pass)."""
        if s is None:
            with self.reads() as s2:
                return self._unfinished_pass(c, s2)
        b = s.execute(select(func.min(FreshnessRow.baseline_version)).where(FreshnessRow.collection_id == c.id))
        base = b.scalar()
        if base is None:
            return False
        for cond in _unchecked(base):
            q = select(VectorRow.item_key).where(VectorRow.collection_id == c.id, cond).limit(1)
            if s.execute(q).first() is not None:
                return True
        return False

    def _start_pass(self, c: Collection, restart: bool) -> tuple[int, dict[str, Moments], dict[str, Shift]]:
        """The baseline of a pass: continue an unfinished one, or make the current statistics the
        baseline of every modality (the bound of rows not checked yet becomes their pending)."""
        with self.sessions.begin() as s:
            row = lock_collection(s, c.id)
            rows = {
                f.modality: f
                for f in s.execute(select(FreshnessRow).where(FreshnessRow.collection_id == c.id)).scalars()
            }
            bases = {f.baseline_version for f in rows.values()}
            resume = not restart and len(bases) == 1 and self._unfinished_pass(c, s)
            if resume:
                target = bases.pop()
                snap = {m: self.cache.get(s, c.id, m, c.dim, BASELINE)[1] for m in c.modalities}
            else:
                target = row.stats_version
                snap = {m: self.cache.get(s, c.id, m, c.dim)[1] for m in c.modalities}
                for m, mom in snap.items():
                    write_moments(s, c.id, m, mom, target, kind=BASELINE)
                    f = rows.get(m) or writer.new_freshness(s, c.id, m, target)
                    # rows not checked yet are as far from these statistics as the bound says
                    f.pending_conformity, f.pending_info_gain = f.bound_conformity, f.bound_info_gain
                    f.baseline_version = target
                    f.changes = 0
                    tol = self._tolerance(c, snap, m)
                    f.spread_conformity, f.spread_info_gain = tol.skip().conformity, tol.skip().info_gain
                    writer.set_bound(f, c, snap, m, ZERO, target)
            skip = {m: self._tolerance(c, snap, m).skip() for m in c.modalities}
        return target, snap, skip

    def _finish_pass(self, s: Any, c: Collection, rep: RescoreReport) -> None:
        """Every row is checked against the baseline: nothing is pending any more."""
        now = {m: self.cache.get(s, c.id, m, c.dim)[1] for m in c.modalities}
        base = {m: self.cache.get(s, c.id, m, c.dim, BASELINE)[1] for m in c.modalities}
        row = s.get(CollectionRow, c.id)
        for f in s.execute(select(FreshnessRow).where(FreshnessRow.collection_id == c.id)).scalars():
            if f.modality not in now:
                continue
            f.pending_conformity = f.pending_info_gain = 0.0
            f.rescored_at = datetime.now(UTC)
            f.rescored_items = rep.rescored
            sh = fresh_lib.shift(base, now, f.modality, other_modality(f.modality), c.tau)
            writer.set_bound(f, c, now, f.modality, sh, row.stats_version)

    @staticmethod
    def _tolerance(c: Collection, stats: dict[str, Moments], m: str) -> Tolerance:
        other = stats.get(other_modality(m), Moments.empty(c.dim))
        return Tolerance(c.tol_conformity, c.tol_info_gain * fresh_lib.mean_info_gain(stats[m], other, c.tau))

    @_db
    def freshness(self, name: str, *, counts: bool = True) -> dict[str, dict[str, Any]]:
        """Per modality: how far any stored score can be from its current value (``bound``), the
        tolerance, whether it holds, and the rescore state. A modality without a freshness row
        (written before freshness was tracked) has an unknown bound."""
        c = self.collection(name)
        with self.reads() as s:
            rows = {
                f.modality: f
                for f in s.execute(select(FreshnessRow).where(FreshnessRow.collection_id == c.id)).scalars()
            }
            unchecked: Counter[str] = Counter()
            base = min((f.baseline_version for f in rows.values()), default=0)
            for cond in _unchecked(base) if rows and counts else ():
                # counted here: a GROUP BY made SQLite walk an index in modality order instead
                q = select(VectorRow.modality).where(VectorRow.collection_id == c.id, cond)
                unchecked.update(s.execute(q).scalars())
        out: dict[str, dict[str, Any]] = {}
        for m in c.modalities:
            f = rows.get(m)
            if f is None:
                out[m] = {"bound": None, "outside_tolerance": False, "note": "no items yet"}
                continue
            bound = {"conformity": f.bound_conformity, "info_gain": f.bound_info_gain}
            tol = {"conformity": c.tol_conformity, "info_gain": f.tol_info_gain_abs}
            outside = f.bound_conformity > c.tol_conformity or f.bound_info_gain > f.tol_info_gain_abs
            out[m] = {
                "stats_version": f.version,
                "baseline_version": f.baseline_version,
                "bound": bound,
                "tolerance": tol,
                "tolerance_info_gain_share": c.tol_info_gain,
                "outside_tolerance": bool(outside),
                "unchecked_rows": int(unchecked.get(m, 0)) if counts else None,
                "changes_since_baseline": int(f.changes),
                "last_rescore_at": f.rescored_at.isoformat() if f.rescored_at else None,
            }
        return out

    @_db
    def index_state(self, name: str) -> dict[str, Any]:
        """How much of the collection an HNSW index covers, and whether :meth:`optimize` is due."""
        c = self.collection(name)
        info = self.store.index_info(c.qdrant_collection)
        with self.reads() as s:
            vectors = sum(self.cache.get(s, c.id, m, c.dim)[1].n for m in c.modalities)
        unindexed = max(0, vectors - info.indexed_vectors)
        due = (
            not info.automatic
            and vectors >= INDEX_MIN_VECTORS
            and unindexed >= max(INDEX_MIN_VECTORS // 2, INDEX_STALE_SHARE * vectors)
        )
        return {
            "vectors": vectors,
            "indexed_vectors": min(info.indexed_vectors, vectors),
            "automatic": info.automatic,
            "segments": info.segments,
            "optimize_due": due,
        }

    def field_indexes(self, name: str) -> list[dict[str, Any]]:
        """The payload indexes on the user's own fields (inforank indexes its score fields by
        itself; those are left out), with the points each holds a value of and whether every
        HNSW graph links its values (indexed before any graph was built)."""
        c = self.collection(name)
        have = self.store.field_indexes(c.qdrant_collection)
        return [
            {"field": f, "type": i.type, "points": i.points, "linked": f in c.linked_fields}
            for f, i in sorted(have.items())
            if f not in OWNED_FIELDS and not f.startswith(RESERVED_PREFIX)
        ]

    def index_field(self, name: str, field: str, type: str = "keyword") -> dict[str, Any]:
        """Give a metadata field a payload index in Qdrant, so filters on it are planned from
        the index: a selective filter is answered from its matching points alone, and an HNSW
        graph built afterwards links the points of each value (filtered search stays on the
        graph; BENCHMARKS.md "Filters on the graph"). Idempotent for the same type; a
        field already indexed as another type is a :class:`ConflictError` (drop it first).

        On the embedded store, a graph built before the index has no links for the field until
        its segments are rebuilt: index the fields you filter on early (``graph_without_links``
        says when it was too late)."""
        field, type = check_field_path(field), _index_type(type)
        c = self.collection(name)
        self.store.claim(c.qdrant_collection)
        have = self.store.field_indexes(c.qdrant_collection).get(field)
        if have is not None and have.type != type:
            raise ConflictError(
                f"{field!r} of {name!r} is indexed as {have.type} already. Drop that index first "
                f"(`inforank index-field {name} {field} --drop`), then index it as {type}."
            )
        if have is None:
            self.store.add_field_index(c.qdrant_collection, field, type)
        now = self.store.field_indexes(c.qdrant_collection).get(field)
        created = have is None and now is not None
        state = self.index_state(name)
        graph_before = bool(state["indexed_vectors"])
        if created and not graph_before:
            self._link_fields(c, add=field)  # no graph yet: every one built from now on links it
        return {
            "collection": name,
            "field": field,
            "type": type,
            "created": created,
            # qdrant-client's local mode keeps none: its filters scan every point anyway
            "kept": now is not None,
            "points": now.points if now is not None else 0,
            # the embedded store built its HNSW graph before this index: the graph has no links
            # for the field (filters on it are not walked there)
            "graph_without_links": have is None and graph_before and not state["automatic"],
        }

    def drop_field_index(self, name: str, field: str) -> dict[str, Any]:
        """Remove the payload index of one of the user's fields (the values stay in the payload)."""
        field = check_field_path(field)
        c = self.collection(name)
        self.store.claim(c.qdrant_collection)
        had = field in self.store.field_indexes(c.qdrant_collection)
        if had:
            self.store.drop_field_index(c.qdrant_collection, field)
        self._link_fields(c, drop=field)
        return {"collection": name, "field": field, "dropped": had}

    @_db
    def _link_fields(self, c: Collection, *, add: str | None = None, drop: str | None = None) -> None:
        """Record a field as linked in every graph (or no longer). Read and written in one
        transaction; two processes indexing fields at once may lose one record, which only sends
        that field's filters to the candidate route (never a wrong answer)."""
        with self.sessions.begin() as s:
            row = s.get(CollectionRow, c.id)
            if row is None:
                return
            fields = set(row.linked_fields or ()) - {drop} | ({add} if add else set())
            row.linked_fields = sorted(f for f in fields if f)

    def optimize(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Build the HNSW index of an embedded collection when due (or ``force``): a full scan
        serves small collections, an index large ones (``INDEX_MIN_VECTORS`` and up), rebuilt
        once ``INDEX_STALE_SHARE`` of the vectors are outside it. Synchronous (minutes at 1M), and
        qdrant-edge-py holds the GIL while it builds: every thread of the process waits. A Qdrant
        server indexes by itself: nothing to do."""
        c = self.collection(name)
        before = self.index_state(name)
        built = False
        start = time.perf_counter()
        if before["optimize_due"] or (force and not before["automatic"]):
            self.store.claim(c.qdrant_collection)
            built = self.store.optimize(c.qdrant_collection)
        after = self.index_state(name) if built else before
        return {
            "collection": name,
            "built": built,
            "seconds": round(time.perf_counter() - start, 3),
            "before": before,
            "after": after,
        }

    def rescore_due(self, name: str) -> bool:
        """Whether the automatic policy would rescore now: a bound outside its tolerance (or an
        interrupted pass) and enough writes since the baseline to pay for it (amortised O(N))."""
        return self._due(self.collection(name))[0]

    def _due(self, c: Collection) -> tuple[bool, int]:
        """(whether a rescore is due, the collection's item count)."""
        fresh = self.freshness(c.name, counts=False)
        unfinished = self._unfinished_pass(c)
        with self.reads() as s:
            n = sum(self.cache.get(s, c.id, m, c.dim)[1].n for m in c.modalities)
        if unfinished:
            return True, n
        if c.hub_k is not None:
            with self.reads() as s:
                if hubness.any_pending(s, c):
                    return True, n
        if not any(f["outside_tolerance"] for f in fresh.values()):
            return False, n
        changes = sum(f.get("changes_since_baseline", 0) for f in fresh.values())
        return fresh_lib.budget_allows(changes, n, self.fresh_below), n

    @_db
    def item(self, name: str, user_id: UserId) -> dict[str, Any] | None:
        """The stored point of one item, as Qdrant has it."""
        c = self.collection(name)
        with self.reads() as s:
            p = s.get(PointRow, (c.id, item_key(user_id)))
            if p is None or p.deleted:
                return None
            pid = p.point_id
        hits = self.store.retrieve(c.qdrant_collection, [pid])
        return hits[0].payload if hits else None
