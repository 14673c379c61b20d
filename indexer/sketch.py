"""Score distributions without scans: a log-bucketed histogram (the DDSketch mapping) kept exact
under inserts, updates and deletes by database triggers.

Each stored score ``x`` (conformity or information gain of one item and modality) counts in
bucket ``key(x)``: ``0`` for ``|x| ≤ MIN``, else ``sign(x) · ⌈log_γ(|x| / MIN)⌉`` with
``γ = (1 + α)/(1 − α)``. The ``score_buckets`` table holds the count per (collection, modality,
field, bucket), kept in the same transaction as any write, so the histogram is exact at every
statistics version, deletes and rescores included, on SQLite and PostgreSQL alike: triggers on
``item_vectors`` count deletes and score updates (migration 0004); inserted rows, which enter in
one place (the writer), are counted there per bucket and batch (:func:`count_inserts`, migration
0007), one upsert per bucket instead of two per row.

**Error.** Every value in bucket ``i`` lies within relative error ``α`` of the bucket's
representative ``MIN · 2γ^i/(γ + 1)``. So a quantile read from the histogram is within ``α``
(0.5 %) *relative value error* of the exact quantile (rank is exact up to the items tied within
one bucket), and the mean and standard deviation are within ``α`` relative error as well. Reading
costs O(buckets): a few hundred rows whatever the collection's size.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from indexer.db.models import ScoreBucketRow

#: relative value accuracy of every bucket
ALPHA = 0.005
GAMMA = (1 + ALPHA) / (1 - ALPHA)
#: magnitudes at or below this count in bucket 0 (scores are far above it)
MIN = 1e-12
_LOG_GAMMA = math.log(GAMMA)
#: the score fields with a histogram
FIELDS = ("conformity", "info_gain")


def key(x: float | None) -> int | None:
    """The bucket of ``x`` (None stays None); the SQL triggers compute the same function."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if abs(x) <= MIN:
        return 0
    i = math.ceil(math.log(abs(x) / MIN) / _LOG_GAMMA)
    return i if x > 0 else -i


def count_inserts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Count the scores of rows being inserted into ``item_vectors`` (their column dicts)."""
    counts: Counter[tuple[int, str, str, int]] = Counter()
    for r in rows:
        for f in FIELDS:
            b = key(r[f])
            if b is not None:
                counts[(r["collection_id"], r["modality"], f, b)] += 1
    if not counts:
        return
    table = cast(Table, ScoreBucketRow.__table__)
    ins = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)
    stmt = ins.on_conflict_do_update(
        index_elements=["collection_id", "modality", "field", "bucket"], set_={"n": table.c.n + ins.excluded.n}
    )
    session.execute(
        stmt,
        [{"collection_id": c, "modality": m, "field": f, "bucket": b, "n": n} for (c, m, f, b), n in counts.items()],
    )


def value(keys: np.ndarray) -> np.ndarray:
    """The representative value of each bucket (within α of every value counted in it)."""
    k = np.asarray(keys, dtype=np.float64)
    mag = MIN * 2.0 * np.power(GAMMA, np.abs(k)) / (GAMMA + 1.0)
    return np.where(k == 0, 0.0, np.sign(k) * mag)


def bounds(k: int) -> tuple[float, float]:
    """The values bucket ``k`` holds: (lo, hi], widened by a relative 1e-9 so a value on the
    edge, assigned by the database's own arithmetic, is never lost to rounding."""
    if k == 0:
        return (-MIN * (1 + 1e-9), MIN * (1 + 1e-9))
    lo, hi = MIN * GAMMA ** (abs(k) - 1), MIN * GAMMA ** abs(k)
    lo, hi = lo * (1 - 1e-9), hi * (1 + 1e-9)
    return (lo, hi) if k > 0 else (-hi, -lo)


@dataclass(frozen=True)
class Sketch:
    """One field's histogram: bucket keys (ascending) and their counts."""

    keys: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, rows: list[tuple[int, int]]) -> Sketch:
        rows = sorted((int(k), int(n)) for k, n in rows if n)
        if not rows:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        a = np.array(rows, dtype=np.int64)
        return cls(a[:, 0], a[:, 1])

    @classmethod
    def exact(cls, values: np.ndarray) -> Sketch:
        """The histogram of ``values`` computed directly (tests; a from-scratch recount)."""
        ks = [key(float(v)) for v in np.asarray(values, dtype=np.float64) if np.isfinite(v)]
        u, c = np.unique(np.array(ks, dtype=np.int64), return_counts=True)
        return cls(u, c)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def _values(self) -> np.ndarray:
        return value(self.keys)

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` ∈ [0, 1] (lower: the smallest bucket whose cumulative
        count reaches ``q · n``), or None when empty."""
        if not self.n:
            return None
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, max(q * self.n, 1e-9), side="left"))
        return float(self._values()[min(i, len(cum) - 1)])

    def locate(self, rank: int) -> tuple[int, int, int]:
        """The bucket holding the value of 0-based ``rank`` in ascending order, how many smaller
        values lie in earlier buckets, and how many values the bucket holds."""
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, rank, side="right"))
        i = min(i, len(cum) - 1)
        return int(self.keys[i]), int(cum[i] - self.counts[i]), int(self.counts[i])

    def fraction_between(self, lo: float | None, hi: float | None) -> float:
        """Share of the counted values in [lo, hi] (by bucket representative)."""
        if not self.n:
            return 1.0
        v = self._values()
        inside = np.ones(len(v), dtype=bool)
        if lo is not None:
            inside &= v >= lo
        if hi is not None:
            inside &= v <= hi
        return float(self.counts[inside].sum() / self.n)

    def moments(self) -> tuple[float, float]:
        """(mean, standard deviation); (0, 1) when fewer than two values."""
        if self.n < 2:
            return (0.0, 1.0)
        v, w = self._values(), self.counts / self.n
        mean = float(v @ w)
        sd = math.sqrt(max(float(((v - mean) ** 2) @ w), 0.0))
        return mean, (sd if sd > 0 else 1.0)
