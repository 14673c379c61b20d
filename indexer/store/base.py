"""The vector-store interface both backends implement, and the plain records they exchange.

Filters are Qdrant's own JSON filter syntax (``{"must": [{"key": …, "range": {…}}]}``) so users'
payload filters pass straight through; formulas are a tiny linear form (see :class:`Blend`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from indexer.errors import PointRefusedError

T = TypeVar("T")


def qdrant_id(s: str) -> int | str:
    """Qdrant point ids are unsigned integers or UUIDs; we carry them as strings."""
    return int(s) if s.isdigit() else s


@dataclass(frozen=True)
class StorePoint:
    id: str
    vectors: dict[str, list[float]]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]
    vectors: dict[str, list[float]] | None = None


@dataclass(frozen=True)
class Blend:
    """``$score + Σ weight · (field − center)``; a missing field counts as its center (neutral)."""

    terms: tuple[tuple[str, float, float], ...]  # (field, weight, center)


@dataclass(frozen=True)
class IndexInfo:
    """How much of a collection an approximate (HNSW) index covers."""

    points: int
    indexed_vectors: int
    #: the store builds indexes by itself (a Qdrant server); else only :meth:`VectorStore.optimize` does
    automatic: bool
    #: segments the points are in (each has its own graph; a search visits all of them)
    segments: int | None = None


#: the payload index types a user's field may have (Qdrant's names for them)
FieldIndexType = Literal["keyword", "integer", "float", "bool", "datetime", "uuid"]
FIELD_INDEX_TYPES: tuple[str, ...] = get_args(FieldIndexType)


@dataclass(frozen=True)
class FieldIndex:
    """A payload index as the store has it: its type and the points it holds a value of."""

    type: str
    points: int


@dataclass(frozen=True)
class QuerySpec:
    vector: list[float]
    using: str
    limit: int
    filter: dict[str, Any] | None = None
    blend: Blend | None = None
    depth: int = 0  # prefetch depth when blending
    with_vectors: bool = False
    candidates: int = 0  # for query_among_nearest: how many unfiltered nearest neighbours to take
    #: brute force even where an HNSW index exists (the exact answer)
    exact: bool = False
    #: the HNSW search breadth (Qdrant takes at least the query's limit); None: Qdrant's default
    ef: int | None = None

    @property
    def needed(self) -> int:
        """How many filtered neighbours the query consumes: k, or the rerank depth."""
        return self.limit if self.blend is None else max(self.depth, self.limit)


#: Formula offset for candidates that fail the filter in :meth:`VectorStore.query_among_nearest`;
#: far beyond any blended similarity (rerank weights are bounded), so a failing candidate shows.
FAIL_PENALTY = 1e9


def enough_passed(scores: Sequence[float]) -> bool:
    """Whether a candidate query's top scores are all of candidates that passed the filter."""
    return all(abs(s) < FAIL_PENALTY / 2 for s in scores)


@dataclass
class ScrollPage:
    points: list[Hit]
    next_offset: Any = None


def send_each(send: Callable[[Sequence[T]], None], items: Sequence[T], ident: Callable[[T], str]) -> dict[str, str]:
    """Send ``items`` in one request; when the store refuses it for its content, halve it until
    every refused item is found (about log₂ n extra requests per bad item) and send the rest.
    Returns the refused items' ids with Qdrant's reason. Other failures propagate."""
    if not items:
        return {}
    try:
        send(items)
        return {}
    except PointRefusedError as exc:
        if len(items) == 1:
            return {ident(items[0]): str(exc)}
        mid = len(items) // 2
        return {**send_each(send, items[:mid], ident), **send_each(send, items[mid:], ident)}


class VectorStore(ABC):
    """What inforank needs from Qdrant; both backends pass the same tests."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def create(self, name: str, vectors: dict[str, int], float_indexes: Sequence[str]) -> None:
        """Create a collection with named cosine vectors and float payload indexes."""

    @abstractmethod
    def add_float_indexes(self, name: str, fields: Sequence[str]) -> None: ...

    @abstractmethod
    def field_indexes(self, name: str) -> dict[str, FieldIndex]:
        """Every payload index of the collection (inforank's score fields included)."""

    @abstractmethod
    def add_field_index(self, name: str, field: str, type: str) -> None:
        """Index a payload field (a Qdrant JSON path) as one of :data:`FIELD_INDEX_TYPES`;
        raises :class:`InvalidQueryError` for a path Qdrant cannot take."""

    @abstractmethod
    def drop_field_index(self, name: str, field: str) -> None: ...

    @abstractmethod
    def vector_sizes(self, name: str) -> dict[str, int]: ...

    @abstractmethod
    def drop(self, name: str) -> None: ...

    def upsert(self, name: str, points: Sequence[StorePoint]) -> dict[str, str]:
        """Upsert points; those Qdrant refuses for their content are left out and returned
        (point id → reason) instead of failing the others."""
        return send_each(lambda b: self._upsert(name, b), points, lambda p: p.id)

    def set_payload(self, name: str, items: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, str]:
        """Set payload fields; refused points are returned as by :meth:`upsert`."""
        return send_each(lambda b: self._set_payload(name, b), items, lambda it: it[0])

    @abstractmethod
    def _upsert(self, name: str, points: Sequence[StorePoint]) -> None:
        """One request; raises :class:`PointRefusedError` when Qdrant refuses its content."""

    @abstractmethod
    def _set_payload(self, name: str, items: Sequence[tuple[str, dict[str, Any]]]) -> None: ...

    def claim(self, name: str) -> None:  # noqa: B027 - only the embedded store has something to take
        """Take what a write to ``name`` needs before the database commits anything (the
        embedded store's directory lock); raises :class:`StoreBusyError` when another process
        holds it."""

    @abstractmethod
    def delete(self, name: str, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def delete_payload(self, name: str, ids: Sequence[str], keys: Sequence[str]) -> None:
        """Remove payload fields (used for adopted collections: their points are the user's)."""

    @abstractmethod
    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Hit]: ...

    @abstractmethod
    def scroll(self, name: str, offset: Any, limit: int, with_vectors: bool) -> ScrollPage: ...

    @abstractmethod
    def count(self, name: str, filter: dict[str, Any] | None = None) -> int: ...

    def estimate_count(self, name: str, filter: dict[str, Any]) -> int:
        """Qdrant's estimate of how many points pass ``filter``, from its payload indexes (no
        scan: exact for a field with an index; for one without, Qdrant knows only 0..N and says
        N/2). Stores without an estimate count exactly."""
        return self.count(name, filter)

    @abstractmethod
    def ascending_values(self, name: str, field: str, lo: float, hi: float, limit: int) -> list[float]:
        """The ``limit`` smallest values of the float payload field ``field`` in ``(lo, hi]``,
        ascending, one per point: read in order from the field's range index, starting at
        ``lo``, without reading any payload (O(limit) index entries whatever the collection's
        size, where the field is indexed)."""

    @abstractmethod
    def query(self, name: str, spec: QuerySpec) -> list[Hit]:
        """Filtered nearest neighbours (Qdrant's filtered search), blended by a formula if asked."""

    @abstractmethod
    def query_among_nearest(self, name: str, spec: QuerySpec) -> list[Hit] | None:
        """The same answer as :meth:`query`, from the ``spec.candidates`` unfiltered nearest.

        Qdrant evaluates the filter on those candidates only, as a formula condition, instead of
        scanning the collection under the filter: a sieve stage scores ``similarity −
        FAIL_PENALTY`` for a failing candidate and keeps the best ``spec.needed``. When that many
        passed, they are exactly the filtered nearest ``needed``, so the final stage (limit k)
        equals :meth:`query`'s. Otherwise failing candidates fill the sieve, and the final stage
        lifts them by ``2 · FAIL_PENALTY`` (blend) or leaves them sunk (no blend) so that one of
        them shows among the k returned: then this returns None and the caller runs :meth:`query`.
        """

    def index_info(self, name: str) -> IndexInfo:
        """Points and HNSW-indexed vectors (over all named vectors); stores without an
        approximate index report none."""
        return IndexInfo(self.count(name), 0, automatic=False)

    #: points of the largest segment one :meth:`optimize` builds (None: no bound, or the store
    #: builds by itself); a long write asks for a build each time this many are outside the index
    segment_points: int | None = None

    def optimize(self, name: str) -> bool:
        """Build the HNSW index (and merge segments) where the store needs to be asked; returns
        whether anything was done. A Qdrant server does this in the background by itself."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections."""
