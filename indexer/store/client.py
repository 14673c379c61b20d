"""qdrant-client backend: a Qdrant server, or qdrant-client's local mode (tests, small data)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from indexer.errors import InvalidQueryError, NotFoundError, PointRefusedError, StorageError
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


def _filter(f: dict[str, Any] | None) -> models.Filter | None:
    if not f:
        return None
    try:
        return models.Filter.model_validate(f)
    except ValueError as exc:
        raise InvalidQueryError(f"The payload filter is not a valid Qdrant filter: {exc}") from exc


def _formula(blend: Blend, lift: models.Filter | None = None) -> models.FormulaQuery:
    """The blend; with ``lift``, candidates matching it score ``FAIL_PENALTY`` higher still."""
    terms: list[Any] = ["$score"]
    if lift is not None:
        terms.append(models.MultExpression(mult=[2 * FAIL_PENALTY, lift]))
    defaults: dict[str, Any] = {}
    for key, weight, center in blend.terms:
        terms.append(models.MultExpression(mult=[weight, models.SumExpression(sum=[key, -center])]))
        defaults[key] = center
    return models.FormulaQuery(formula=models.SumExpression(sum=terms), defaults=defaults)


def _hit(p: Any) -> Hit:
    vec = p.vector if isinstance(p.vector, dict) else ({"": p.vector} if p.vector else None)
    return Hit(str(p.id), float(getattr(p, "score", 0.0) or 0.0), dict(p.payload or {}), vec)


@contextmanager
def _refusals() -> Iterator[None]:
    """A write refused for its content (HTTP 400/422 from a server; a value local mode or the
    request's JSON encoding cannot take) is a :class:`PointRefusedError`; the rest is unchanged."""
    try:
        yield
    except InvalidQueryError as exc:
        raise PointRefusedError(str(exc)) from exc
    except StorageError as exc:
        if isinstance(exc.__cause__, UnexpectedResponse) and exc.__cause__.status_code == 422:
            raise PointRefusedError(str(exc)) from exc
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # building the request (pydantic, JSON)
        raise PointRefusedError(f"Qdrant cannot take this point: {exc}") from exc


def _params(spec: QuerySpec) -> models.SearchParams | None:
    return models.SearchParams(hnsw_ef=spec.ef, exact=spec.exact) if (spec.exact or spec.ef) else None


class ClientStore(VectorStore):
    def __init__(self, client: QdrantClient) -> None:
        self.client = client

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                raise NotFoundError(f"Qdrant says: {exc.content!r}") from exc
            if exc.status_code == 400:
                raise InvalidQueryError(f"Qdrant rejected the request: {exc.content!r}") from exc
            raise StorageError(f"Qdrant failed: {exc}") from exc
        except ValidationError as exc:  # qdrant-client's own request models refused a value
            raise InvalidQueryError(f"Qdrant rejected the request: {exc.errors()[0].get('msg')}") from exc
        except Exception as exc:  # the request was ours and valid: whatever failed is the store's
            raise StorageError(f"Qdrant could not be reached or failed: {exc}") from exc

    def exists(self, name: str) -> bool:
        return bool(self._call(self.client.collection_exists, name))

    def create(self, name: str, vectors: dict[str, int], float_indexes: Sequence[str]) -> None:
        cfg = {k: models.VectorParams(size=v, distance=models.Distance.COSINE) for k, v in vectors.items()}
        self._call(self.client.create_collection, name, vectors_config=cfg)
        self.add_float_indexes(name, float_indexes)

    def add_float_indexes(self, name: str, fields: Sequence[str]) -> None:
        for f in fields:
            self.add_field_index(name, f, "float")

    @property
    def _local(self) -> bool:
        """qdrant-client's local mode (no server behind it)."""
        return getattr(self.client, "_client", None).__class__.__name__.startswith("QdrantLocal")

    def field_indexes(self, name: str) -> dict[str, FieldIndex]:
        schema = self._call(self.client.get_collection, name).payload_schema or {}
        return {
            f: FieldIndex(str(getattr(i.data_type, "value", i.data_type)), int(i.points or 0))
            for f, i in schema.items()
        }

    def add_field_index(self, name: str, field: str, type: str) -> None:
        if self._local:  # it keeps none (qdrant-client warns and does nothing): filters scan there
            return
        kind = models.PayloadSchemaType(type)
        self._call(self.client.create_payload_index, name, field, field_schema=kind, wait=True)

    def drop_field_index(self, name: str, field: str) -> None:
        if not self._local:
            self._call(self.client.delete_payload_index, name, field, wait=True)

    def vector_sizes(self, name: str) -> dict[str, int]:
        info = self._call(self.client.get_collection, name)
        v = info.config.params.vectors
        if isinstance(v, models.VectorParams):
            return {"": v.size}
        return {k: p.size for k, p in (v or {}).items()}

    def drop(self, name: str) -> None:
        self._call(self.client.delete_collection, name)

    def _upsert(self, name: str, points: Sequence[StorePoint]) -> None:
        with _refusals():
            pts = [models.PointStruct(id=qdrant_id(p.id), vector=dict(p.vectors), payload=p.payload) for p in points]
            self._call(self.client.upsert, name, pts, wait=True)

    def _set_payload(self, name: str, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        with _refusals():
            ops = [
                models.SetPayloadOperation(set_payload=models.SetPayload(payload=pl, points=[qdrant_id(pid)]))
                for pid, pl in items
            ]
            self._call(self.client.batch_update_points, name, ops, wait=True)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        if ids:
            sel = models.PointIdsList(points=[qdrant_id(i) for i in ids])
            self._call(self.client.delete, name, points_selector=sel, wait=True)

    def delete_payload(self, name: str, ids: Sequence[str], keys: Sequence[str]) -> None:
        if ids:
            sel = models.PointIdsList(points=[qdrant_id(i) for i in ids])
            self._call(self.client.delete_payload, name, list(keys), sel, wait=True)

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[Hit]:
        pts = self._call(
            self.client.retrieve, name, [qdrant_id(i) for i in ids], with_payload=True, with_vectors=with_vectors
        )
        return [_hit(p) for p in pts]

    def scroll(self, name: str, offset: Any, limit: int, with_vectors: bool) -> ScrollPage:
        pts, nxt = self._call(
            self.client.scroll,
            name,
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=with_vectors,
        )
        return ScrollPage([_hit(p) for p in pts], nxt)

    def count(self, name: str, filter: dict[str, Any] | None = None) -> int:
        return int(self._call(self.client.count, name, count_filter=_filter(filter), exact=True).count)

    def estimate_count(self, name: str, filter: dict[str, Any]) -> int:
        return int(self._call(self.client.count, name, count_filter=_filter(filter), exact=False).count)

    def ascending_values(self, name: str, field: str, lo: float, hi: float, limit: int) -> list[float]:
        pts, _ = self._call(
            self.client.scroll,
            name,
            scroll_filter=models.Filter(must=[models.FieldCondition(key=field, range=models.Range(gt=lo, lte=hi))]),
            limit=limit,
            order_by=models.OrderBy(key=field, direction=models.Direction.ASC, start_from=lo),
            with_payload=False,  # the index hands the value over: no payload read at all
            with_vectors=False,
        )
        return [float(p.order_value) for p in pts if p.order_value is not None]

    def query(self, name: str, spec: QuerySpec) -> list[Hit]:
        flt = _filter(spec.filter)
        if spec.blend is None:
            return self._run(
                name, spec, query=spec.vector, using=spec.using or None, query_filter=flt, search_params=_params(spec)
            )
        pre = models.Prefetch(
            query=spec.vector, using=spec.using or None, filter=flt, limit=spec.needed, params=_params(spec)
        )
        return self._run(name, spec, prefetch=pre, query=_formula(spec.blend))

    def query_among_nearest(self, name: str, spec: QuerySpec) -> list[Hit] | None:
        flt = _filter(spec.filter)
        if flt is None:
            return self.query(name, spec)
        fails = models.Filter(must_not=[flt])
        sieve = models.FormulaQuery(
            formula=models.SumExpression(sum=["$score", models.MultExpression(mult=[-FAIL_PENALTY, fails])])
        )
        pool = models.Prefetch(query=spec.vector, using=spec.using or None, limit=spec.candidates, params=_params(spec))
        if spec.blend is None:
            hits = self._run(name, spec, prefetch=pool, query=sieve)
        else:
            passed = models.Prefetch(prefetch=pool, query=sieve, limit=spec.needed)
            hits = self._run(name, spec, prefetch=passed, query=_formula(spec.blend, fails))
        return hits if enough_passed([h.score for h in hits]) else None

    def _run(self, name: str, spec: QuerySpec, **request: Any) -> list[Hit]:
        request.setdefault("limit", spec.limit)
        res = self._call(self.client.query_points, name, with_payload=True, with_vectors=spec.with_vectors, **request)
        return [_hit(p) for p in res.points]

    def index_info(self, name: str) -> IndexInfo:
        info = self._call(self.client.get_collection, name)
        # a server indexes in the background by itself; qdrant-client's local mode never does
        server = not self._local
        points, indexed = int(info.points_count or 0), int(info.indexed_vectors_count or 0)
        return IndexInfo(points, indexed, automatic=server, segments=info.segments_count)

    def close(self) -> None:
        self.client.close()
