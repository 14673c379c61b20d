"""Persisting :class:`Moments` rows, versioned, with a read cache keyed by version.

Concurrency design (see docs/DESIGN.md): every writer of a collection's statistics first locks
the collection row (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), then
reads, merges and writes the one current row per modality and bumps the collection's
``stats_version`` in the same transaction. Writers serialise for the few milliseconds of a merge;
no update is lost, and storage stays one O(d²) row per modality (plus one drift baseline).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from indexer.db.models import CollectionRow, StatsRow
from indexer.errors import NotFoundError
from indexer.moments import Moments

CURRENT = "current"
BASELINE = "baseline"


def to_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def from_bytes(b: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(b, dtype="<f8").reshape(shape).copy()


def row_to_moments(row: StatsRow) -> Moments:
    d = row.dim
    return Moments(
        n=int(row.n),
        mean=from_bytes(row.mean, (d,)),
        m2=from_bytes(row.m2, (d, d)),
        raw_mean=from_bytes(row.raw_mean, (d,)),
        norm_sum=float(row.norm_sum),
        norm_sq_sum=float(row.norm_sq_sum),
    )


def lock_collection(session: Session, collection_id: int) -> CollectionRow:
    """Take the collection's write lock for the rest of the transaction."""
    row = session.execute(
        select(CollectionRow).where(CollectionRow.id == collection_id).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"Collection id {collection_id} does not exist.")
    return row


def write_moments(
    session: Session,
    collection_id: int,
    modality: str,
    m: Moments,
    version: int,
    kind: str = CURRENT,
) -> None:
    """Overwrite (or create) one statistics row without reading the old 2 MB blob first."""
    values = {
        "version": version,
        "n": m.n,
        "dim": m.dim,
        "mean": to_bytes(m.mean),
        "m2": to_bytes(m.m2),
        "raw_mean": to_bytes(m.raw_mean),
        "norm_sum": m.norm_sum,
        "norm_sq_sum": m.norm_sq_sum,
        "updated_at": datetime.now(UTC),
    }
    key = (StatsRow.collection_id == collection_id, StatsRow.modality == modality, StatsRow.kind == kind)
    res: Any = session.execute(update(StatsRow).where(*key).values(**values))
    if res.rowcount == 0:
        session.execute(insert(StatsRow).values(collection_id=collection_id, modality=modality, kind=kind, **values))


class StatsCache:
    """Current statistics per (collection, modality), re-read only when the version moved.

    A read costs one indexed ``SELECT version``; the 2 MB matrix of a 512-d modality is loaded
    only after a change. Thread-safe; one instance per process is enough.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[tuple[int, str, str], tuple[int, Moments]] = {}

    def get(
        self,
        session: Session,
        collection_id: int,
        modality: str,
        dim: int,
        kind: str = CURRENT,
    ) -> tuple[int, Moments]:
        key = (collection_id, modality, kind)
        version = session.execute(
            select(StatsRow.version).where(
                StatsRow.collection_id == collection_id,
                StatsRow.modality == modality,
                StatsRow.kind == kind,
            )
        ).scalar_one_or_none()
        if version is None:
            return 0, Moments.empty(dim)
        with self._lock:
            hit = self._data.get(key)
        if hit is not None and hit[0] == version:
            return hit
        row = session.get(StatsRow, (collection_id, modality, kind), populate_existing=True)
        assert row is not None
        value = (int(row.version), row_to_moments(row))
        with self._lock:
            self._data[key] = value
        return value

    def put(self, collection_id: int, modality: str, version: int, m: Moments) -> None:
        with self._lock:
            self._data[(collection_id, modality, CURRENT)] = (version, m)
