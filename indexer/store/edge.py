"""Embedded backend: Qdrant Edge, Qdrant's in-process engine, one shard directory per collection.

Chosen as the embedded default because, on a 2-core machine with 100k × 512-d points, it
upserts in ~14 s and answers an exact filtered + formula query in ~0.1 s, where qdrant-client's
local mode needs ~5 minutes and 2.6 s (figures in BENCHMARKS.md). Its WAL makes each update
durable when ``update`` returns. Single process: a shard directory is not shared between
processes; run a Qdrant server for concurrent writers.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from indexer.errors import InvalidQueryError, NotFoundError, PointRefusedError, StorageError, StoreBusyError
from indexer.store.base import (
    FAIL_PENALTY,
    Blend,
    FieldIndex,
    Hit,
    IndexInfo,
    QuerySpec,
    ScrollPage,
    StorePoint,
    VectorStore,
    enough_passed,
    qdrant_id,
)
from indexer.store.edge_filters import to_edge_filter

_META = "inforank-vectors.json"
_OWNER = ".inforank-owner"


#: Edge's parameters for each payload index type a user's field may have, at Qdrant's defaults
#: (an HNSW graph built after the index links the points of each of the field's values)
_INDEX_PARAMS: dict[str, Any] = {
    "keyword": qe.KeywordIndexParams,
    "integer": qe.IntegerIndexParams,
    "float": qe.FloatIndexParams,
    "bool": qe.BoolIndexParams,
    "datetime": qe.DatetimeIndexParams,
    "uuid": qe.UuidIndexParams,
}
_INDEX_TYPES = {cls: t for t, cls in _INDEX_PARAMS.items()}


def _pid(s: str) -> int | uuid.UUID:
    q = qdrant_id(s)
    return q if isinstance(q, int) else uuid.UUID(q)


def _hit(p: Any, score: float = 0.0) -> Hit:
    vec = p.vector
    if vec is not None and not isinstance(vec, dict):
        vec = {"": vec}
    return Hit(str(p.id), score, dict(p.payload or {}), vec)


def _nearest(spec: QuerySpec) -> Any:
    return qe.Query.Nearest(list(map(float, spec.vector)), using=spec.using)


def _params(spec: QuerySpec) -> Any:
    return qe.SearchParams(hnsw_ef=spec.ef, exact=spec.exact) if (spec.exact or spec.ef) else None


def _formula(blend: Blend, lift: qe.Filter | None = None) -> qe.Formula:
    """The blend; with ``lift``, candidates matching it score ``FAIL_PENALTY`` higher still."""
    E = qe.Expression
    terms = [E.Variable("$score")]
    if lift is not None:
        terms.append(E.Mult([E.Constant(2 * FAIL_PENALTY), E.Condition(lift)]))
    defaults: dict[str, Any] = {}
    for key, weight, center in blend.terms:
        terms.append(E.Mult([E.Constant(weight), E.Sum([E.Variable(key), E.Constant(-center)])]))
        defaults[key] = center
    return qe.Formula(E.Sum(terms), defaults=defaults)


@contextmanager
def _refusals() -> Iterator[None]:
    """Converting a point to Edge's types fails on values Qdrant cannot hold (NaN in a payload,
    a lone surrogate, an integer beyond 64 bits): a refusal of that point, not a storage fault."""
    try:
        yield
    except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
        raise PointRefusedError(f"Qdrant cannot take this point: {' '.join(str(exc).split())}") from exc


class EdgeStore(VectorStore):
    #: KB of vectors in a segment above which optimize() builds HNSW (Qdrant's default)
    index_threshold_kb = 10_000
    #: points (vectors per name) of the largest segment the optimizer may build or merge into: each
    #: HNSW build stays bounded (≈ 5 min on 2 cores) however large the collection grows, and a
    #: growing collection is indexed a segment at a time. Without it Edge merges everything into
    #: one segment whose build grows faster than N (2 cores: 100k → 109 s, 300k → 502 s; 1M
    #: unfinished after an hour). BENCHMARKS.md, "HNSW at 1M".
    segment_points = 200_000
    #: seconds between flushes of a shard's segments while it is written to (a Qdrant server's
    #: ``flush_interval_sec``): Edge has no background thread to do it
    flush_every_s: float | None = 5.0

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock = threading.RLock()
        self._flushed: dict[str, float] = {}
        self._owner: Any = None  # the directory lock file, held from the first shard opened on

    def _take_directory(self) -> None:
        """Edge shards are single-process. Hold an advisory lock on the directory (with our pid
        in it) before opening any, so a second process learns at once, before it writes
        anything anywhere, that the store is busy and who holds it."""
        if self._owner is not None:
            return
        f = open(self.root / _OWNER, "a+")  # noqa: SIM115 - held open for the store's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise StoreBusyError(
                f"The embedded store {self.root} is in use by another process (pid {holder}), e.g. a running "
                "`inforank serve`. Send the request to that service (set INFORANK_URL), stop it, or point "
                "INFORANK_DATA_DIR elsewhere. Nothing was written."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._owner = f

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise InvalidQueryError(f"{name!r} is not a valid collection name.")
        return self.root / name

    def _shard(self, name: str) -> qe.EdgeShard:
        with self._lock:
            s = self._shards.get(name)
            if s is None:
                if not self.exists(name):
                    raise NotFoundError(f"Qdrant Edge collection {name!r} does not exist.")
                self._take_directory()
                path = str(self._path(name))
                try:
                    # today's settings (the segment bound) written over an older shard's; where
                    # Edge finds them incompatible, the shard opens as it was
                    s = qe.EdgeShard.load(path, self._config(self.vector_sizes(name)))
                except Exception:
                    try:
                        s = qe.EdgeShard.load(path)
                    except Exception as exc:
                        raise StorageError(f"Cannot open Qdrant Edge shard {name!r}: {exc}") from exc
                self._shards[name] = s
                self._drop_field_graphs(name, s)
            return s

    def _drop_field_graphs(self, name: str, shard: qe.EdgeShard) -> None:
        """A shard made before float indexes were created without extra HNSW edges (every
        float index of an inforank shard is a score field) gets them re-created so: its next
        build would otherwise add one subgraph per field (3.8× the build, BENCHMARKS.md)."""
        try:
            schema = shard.info().payload_schema
        except Exception:  # an old shard Edge cannot describe: left as it is
            return
        old = [
            f
            for f, i in schema.items()
            if isinstance(i.params, qe.FloatIndexParams) and i.params.enable_hnsw is not False
        ]
        if old:
            self.add_float_indexes(name, old)

    def _update(self, name: str, op: Any) -> None:
        try:
            shard = self._shard(name)
            shard.update(op)
            if self.flush_every_s is not None and time.monotonic() - self._flushed.get(name, 0.0) > self.flush_every_s:
                shard.flush()
                self._flushed[name] = time.monotonic()
        except (NotFoundError, InvalidQueryError):
            raise
        except Exception as exc:
            raise StorageError(f"Qdrant Edge update failed on {name!r}: {exc}") from exc

    def exists(self, name: str) -> bool:
        return (self._path(name) / _META).exists()

    def _config(self, vectors: dict[str, int]) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={k: qe.EdgeVectorParams(size=v, distance=qe.Distance.Cosine) for k, v in vectors.items()},
            # Qdrant's defaults, written down: optimize() builds an index for segments over the
            # threshold (KB of vectors), searched instead of a full scan above it
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=self.index_threshold_kb),
            optimizers=qe.EdgeOptimizersConfig(
                indexing_threshold=self.index_threshold_kb,
                # Qdrant's unit: KB of one vector name's storage (1 KB = one 256-d float32 vector)
                max_segment_size=None
                if self.segment_points is None
                else max(self.index_threshold_kb, self.segment_points * max(vectors.values()) * 4 // 1024),
            ),
        )

    def create(self, name: str, vectors: dict[str, int], float_indexes: Sequence[str]) -> None:
        path = self._path(name)
        cfg = self._config(vectors)
        with self._lock:
            self._take_directory()
            if path.exists():
                shutil.rmtree(path)  # an unfinished create: no metadata file was written
            try:
                self._shards[name] = qe.EdgeShard.create(str(path), cfg)
            except Exception as exc:
                raise StorageError(f"Cannot create Qdrant Edge shard at {path}: {exc}") from exc
            self.add_float_indexes(name, float_indexes)
            (path / _META).write_text(json.dumps(vectors))

    def add_float_indexes(self, name: str, fields: Sequence[str]) -> None:
        for f in fields:
            # no extra HNSW edges per field: Qdrant's default builds them for every indexed field
            # (measured: 4 score fields made a build 3.8× slower, 30k pairs 77 s against 20 s);
            # score filters pass most items, and a narrow one is answered from the payload index
            params = qe.FloatIndexParams(enable_hnsw=False)
            self._field_op(name, functools.partial(qe.UpdateOperation.create_field_index, f, params), f)

    def field_indexes(self, name: str) -> dict[str, FieldIndex]:
        schema = self._shard(name).info().payload_schema
        return {
            f: FieldIndex(
                _INDEX_TYPES.get(type(i.params), type(i.params).__name__.removesuffix("IndexParams").lower()),
                int(i.points),
            )
            for f, i in schema.items()
        }

    def add_field_index(self, name: str, field: str, type: str) -> None:
        self._field_op(name, lambda: qe.UpdateOperation.create_field_index(field, _INDEX_PARAMS[type]()), field)

    def drop_field_index(self, name: str, field: str) -> None:
        self._field_op(name, lambda: qe.UpdateOperation.delete_field_index(field), field)

    def _field_op(self, name: str, op: Callable[[], Any], field: str) -> None:
        with self._lock:
            shard = self._shard(name)
            try:
                shard.update(op())
            except Exception as exc:
                if "JSON path" in str(exc):
                    raise InvalidQueryError(f"{field!r} is not a payload field path Qdrant can index: {exc}") from exc
                raise StorageError(f"Qdrant Edge could not change the index of {field!r} on {name!r}: {exc}") from exc

    def vector_sizes(self, name: str) -> dict[str, int]:
        meta = self._path(name) / _META
        if not meta.exists():
            raise NotFoundError(f"Qdrant Edge collection {name!r} does not exist.")
        return {k: int(v) for k, v in json.loads(meta.read_text()).items()}

    def drop(self, name: str) -> None:
        with self._lock:
            s = self._shards.pop(name, None)
            if s is not None:
                s.close()
            shutil.rmtree(self._path(name), ignore_errors=True)

    def _upsert(self, name: str, points: Sequence[StorePoint]) -> None:
        with _refusals():
            pts = [qe.Point(_pid(p.id), dict(p.vectors), p.payload) for p in points]
        self._update(name, qe.UpdateOperation.upsert_points(pts))

    def _set_payload(self, name: str, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        with _refusals():
            ops = [qe.UpdateOperation.set_payload([_pid(pid)], payload) for pid, payload in items]
        for op in ops:
            self._update(name, op)

    def claim(self, name: str) -> None:
        self._shard(name)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        if ids:
            self._update(name, qe.UpdateOperation.delete_points([_pid(i) for i in ids]))

    def delete_payload(self, name: str, ids: Sequence[str], keys: Sequence[str]) -> None:
        if ids:
            self._update(name, qe.UpdateOperation.delete_payload([_pid(i) for i in ids], list(keys)))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Hit]:
        recs = self._shard(name).retrieve([_pid(i) for i in ids], True, with_vectors)
        return [_hit(r) for r in recs]

    def scroll(self, name: str, offset: Any, limit: int, with_vectors: bool) -> ScrollPage:
        req = qe.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=with_vectors)
        recs, nxt = self._shard(name).scroll(req)
        return ScrollPage([_hit(r) for r in recs], nxt)

    def count(self, name: str, filter: dict[str, Any] | None = None) -> int:
        return int(self._shard(name).count(qe.CountRequest(exact=True, filter=to_edge_filter(filter))))

    def estimate_count(self, name: str, filter: dict[str, Any]) -> int:
        return int(self._shard(name).count(qe.CountRequest(exact=False, filter=to_edge_filter(filter))))

    def ascending_values(self, name: str, field: str, lo: float, hi: float, limit: int) -> list[float]:
        req = qe.ScrollRequest(
            limit=limit,
            filter=to_edge_filter({"must": [{"key": field, "range": {"gt": lo, "lte": hi}}]}),
            with_payload=False,  # the index hands the value over: no payload read at all
            with_vector=False,
            order_by=qe.OrderBy(field, qe.Direction.Asc, lo),
        )
        recs, _ = self._shard(name).scroll(req)
        return [float(r.order_value) for r in recs if r.order_value is not None]

    def query(self, name: str, spec: QuerySpec) -> list[Hit]:
        flt = to_edge_filter(spec.filter)
        nearest = _nearest(spec)
        if spec.blend is None:
            res = self._run(name, spec, limit=spec.limit, query=nearest, filter=flt, params=_params(spec))
        else:
            pre = qe.Prefetch(limit=spec.needed, query=nearest, filter=flt, params=_params(spec))
            res = self._run(name, spec, limit=spec.limit, prefetches=[pre], query=_formula(spec.blend))
        return [_hit(p, float(p.score)) for p in res]

    def query_among_nearest(self, name: str, spec: QuerySpec) -> list[Hit] | None:
        flt = to_edge_filter(spec.filter)
        if flt is None:
            return self.query(name, spec)
        E = qe.Expression
        fails = qe.Filter(must_not=[flt])
        sieve = qe.Formula(E.Sum([E.Variable("$score"), E.Mult([E.Constant(-FAIL_PENALTY), E.Condition(fails)])]))
        pool = qe.Prefetch(limit=spec.candidates, query=_nearest(spec), params=_params(spec))
        if spec.blend is None:
            res = self._run(name, spec, limit=spec.limit, prefetches=[pool], query=sieve)
        else:
            passed = qe.Prefetch(limit=spec.needed, prefetches=[pool], query=sieve)
            res = self._run(name, spec, limit=spec.limit, prefetches=[passed], query=_formula(spec.blend, fails))
        if not enough_passed([p.score for p in res]):
            return None
        return [_hit(p, float(p.score)) for p in res]

    def _run(self, name: str, spec: QuerySpec, **request: Any) -> list[Any]:
        req = qe.QueryRequest(with_payload=True, with_vector=spec.with_vectors, **request)
        try:
            return list(self._shard(name).query(req))
        except (NotFoundError, InvalidQueryError):
            raise
        except Exception as exc:  # filters are validated before they get here: this is the store's failure
            raise StorageError(f"Qdrant Edge failed to run a query on {name!r}: {exc}") from exc

    def index_info(self, name: str) -> IndexInfo:
        info = self._shard(name).info()
        return IndexInfo(
            int(info.points_count), int(info.indexed_vectors_count), automatic=False, segments=int(info.segments_count)
        )

    def optimize(self, name: str) -> bool:
        """Edge builds HNSW only when asked, synchronously, holding the GIL (measured: a query
        thread waits for the whole build)."""
        self._take_directory()
        try:
            return bool(self._shard(name).optimize())
        except Exception as exc:
            raise StorageError(f"Qdrant Edge could not optimize {name!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            for s in self._shards.values():
                s.close()
            self._shards.clear()
            if self._owner is not None:
                self._owner.close()  # releases the lock
                self._owner = None
