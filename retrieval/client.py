"""A small typed client for the inforank HTTP API, sync and async; needs only httpx and numpy.

>>> with Client("http://localhost:8000", api_key="…") as c:
...     res = c.search("photos", vector, k=5, exclude_bottom_info_gain_pct=5)
...     [r.id for r in res.results]

Both clients build each request with the same code (:class:`_Calls`) and differ only in how
they send it. Search options are :class:`retrieval.options.SearchOptions`' fields, given as
keyword arguments or as one object; an unknown name is refused before anything is sent. Errors
come back as the library's own exception classes (the service names them), e.g.
:class:`~indexer.errors.NotFoundError`, :class:`~indexer.errors.UnauthorizedError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx
import numpy as np

from indexer import errors
from retrieval.options import SearchOptions, SearchResponse

_BY_STATUS: dict[int, type[errors.InforankError]] = {
    400: errors.InvalidInputError,
    401: errors.UnauthorizedError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    413: errors.InvalidInputError,
    422: errors.InvalidInputError,
}


class CollectionInfo(TypedDict, total=False):
    id: int
    name: str
    model: str
    pretrained: str
    dim: int
    min_count: int
    qdrant_collection: str
    vector_names: dict[str, str]
    attached: bool
    stats_version: int
    #: metadata fields indexed before any HNSW graph was built (every graph links their values)
    linked_fields: list[str]
    #: on creation: the metadata fields indexed with it ({field, type, points, linked})
    field_indexes: list[dict[str, Any]]


class IngestResult(TypedDict):
    ingested: list[Any]
    skipped_duplicates: list[Any]
    rejected: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    rescored: int
    rescore_due: bool
    stats_version: int


class DeleteResult(TypedDict, total=False):
    deleted: list[Any]
    missing: list[Any]
    stats_version: int
    replayed: int
    rescore_due: bool


class RescoreResult(TypedDict, total=False):
    freshness: dict[str, Any]
    checked: int
    rescored: int
    skipped: bool
    stats_version: int
    replayed: int
    #: the hubness refresh: changes followed, biases recomputed, bound, still pending
    hubness: dict[str, Any] | None


class SyncResult(TypedDict):
    collection: str
    pushed: int
    quarantined: dict[str, Any]


def _raise(r: httpx.Response) -> Any:
    if r.status_code < 400:
        return r.json()
    try:
        body = r.json()
        detail, name = body.get("detail", r.text), body.get("error")
    except (ValueError, AttributeError):
        detail, name = r.text, None
    # the service names the library's exception class: rebuild the same one where it is ours
    named = getattr(errors, name, None) if isinstance(name, str) else None
    if isinstance(named, type) and issubclass(named, errors.InforankError):
        cls = named
    else:
        cls = _BY_STATUS.get(r.status_code, errors.StorageError)
    raise cls(f"HTTP {r.status_code}: {detail}")


def _vec(v: Any) -> list[float]:
    a = np.asarray(v, dtype=np.float64).ravel()
    if not np.all(np.isfinite(a)):
        raise errors.InvalidVectorError("A vector contains NaN or Inf, which JSON cannot carry; nothing was sent.")
    return a.tolist()


def _items(items: Sequence[dict[str, Any]], model: str | None = None, pretrained: str = "") -> dict[str, Any]:
    out = []
    for it in items:
        d = dict(it)
        for m in ("image", "text"):
            if d.get(m) is not None:
                d[m] = _vec(d[m])
        out.append(d)
    return {"items": out, **({"model": model, "pretrained": pretrained} if model is not None else {})}


def _options(options: SearchOptions | None, kw: dict[str, Any]) -> dict[str, Any]:
    if options is not None and kw:
        raise errors.InvalidQueryError("Give search options as one SearchOptions or as keywords, not both.")
    return (options if options is not None else SearchOptions.from_kwargs(**kw)).as_dict()


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None
    parse: Callable[[Any], Any] = lambda d: d


class _Calls:
    """Every request of the API, built once for both clients."""

    @staticmethod
    def search(name: str, vector: Any, options: SearchOptions | None, kw: dict[str, Any]) -> _Call:
        body = {"vector": _vec(vector), **_options(options, kw)}
        return _Call("POST", f"/collections/{name}/search", body, parse=SearchResponse.from_dict)

    @staticmethod
    def add(name: str, items: Sequence[dict[str, Any]], model: str | None, pretrained: str) -> _Call:
        return _Call("POST", f"/collections/{name}/items", _items(items, model, pretrained))

    @staticmethod
    def create(name: str, dim: int, kw: dict[str, Any]) -> _Call:
        return _Call("POST", "/collections", {"name": name, "dim": dim, **kw})

    @staticmethod
    def rescore(name: str, all: bool) -> _Call:
        return _Call("POST", f"/collections/{name}/rescore", params={"all": str(all).lower()})

    @staticmethod
    def hubness(name: str, k: int | None, beta: float | None, bank: Any, bank_modality: str) -> _Call:
        body: dict[str, Any] = {"k": k, "beta": beta}
        if bank is not None:
            body |= {"bank": [_vec(v) for v in bank], "bank_modality": bank_modality}
        return _Call("POST", f"/collections/{name}/hubness", body)

    @staticmethod
    def optimize(name: str, force: bool) -> _Call:
        return _Call("POST", f"/collections/{name}/optimize", params={"force": str(force).lower()})

    @staticmethod
    def field_indexes(name: str) -> _Call:
        return _Call("GET", f"/collections/{name}/field-indexes")

    @staticmethod
    def index_field(name: str, field: str, type: str) -> _Call:
        return _Call("PUT", f"/collections/{name}/field-indexes", {"field": field, "type": type})

    @staticmethod
    def drop_field_index(name: str, field: str) -> _Call:
        return _Call("DELETE", f"/collections/{name}/field-indexes", params={"field": field})

    @staticmethod
    def evaluate(name: str, folds: int, max_queries: int, queries: list[dict[str, Any]] | None) -> _Call:
        body: dict[str, Any] = {"folds": folds, "max_queries": max_queries}
        if queries is not None:
            body["queries"] = queries
        return _Call("POST", f"/collections/{name}/evaluate", body)


class Client:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, c: _Call) -> Any:
        return c.parse(_raise(self._http.request(c.method, c.path, json=c.json, params=c.params)))

    def health(self) -> dict[str, Any]:
        return self._send(_Call("GET", "/health"))

    def collections(self) -> list[CollectionInfo]:
        return self._send(_Call("GET", "/collections"))

    def collection(self, name: str) -> CollectionInfo:
        return self._send(_Call("GET", f"/collections/{name}"))

    def create_collection(self, name: str, dim: int, **kw: Any) -> CollectionInfo:
        """``kw``: ``model``, ``pretrained``, ``min_count``, ``field_indexes`` (field → type)."""
        return self._send(_Calls.create(name, dim, kw))

    def add(
        self, name: str, items: Sequence[dict[str, Any]], model: str | None = None, pretrained: str = ""
    ) -> IngestResult:
        """``items``: dicts with ``id``, ``image`` and/or ``text`` vectors, ``metadata``.
        ``model``/``pretrained``: what produced the vectors; the service refuses a mismatch."""
        return self._send(_Calls.add(name, items, model, pretrained))

    def delete(self, name: str, ids: Sequence[str | int]) -> DeleteResult:
        return self._send(_Call("POST", f"/collections/{name}/delete", {"ids": list(ids)}))

    def search(self, name: str, vector: Any, options: SearchOptions | None = None, **kw: Any) -> SearchResponse:
        return self._send(_Calls.search(name, vector, options, kw))

    def stats(self, name: str) -> dict[str, Any]:
        return self._send(_Call("GET", f"/collections/{name}/stats"))

    def drop(self, name: str) -> dict[str, str]:
        return self._send(_Call("DELETE", f"/collections/{name}"))

    def rescore(self, name: str, all: bool = False) -> RescoreResult:
        return self._send(_Calls.rescore(name, all))

    def sync(self, name: str) -> SyncResult:
        return self._send(_Call("POST", f"/collections/{name}/sync"))

    def optimize(self, name: str, force: bool = False) -> dict[str, Any]:
        return self._send(_Calls.optimize(name, force))

    def field_indexes(self, name: str) -> list[dict[str, Any]]:
        """The payload indexes on the collection's metadata fields."""
        return self._send(_Calls.field_indexes(name))

    def index_field(self, name: str, field: str, type: str = "keyword") -> dict[str, Any]:
        """Index a metadata field (keyword, integer, float, bool, datetime or uuid) for filters."""
        return self._send(_Calls.index_field(name, field, type))

    def drop_field_index(self, name: str, field: str) -> dict[str, Any]:
        return self._send(_Calls.drop_field_index(name, field))

    def evaluate(
        self, name: str, folds: int = 5, max_queries: int = 1000, queries: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """On the collection's own pairs, or on ``queries`` (labelled, as ``read_queries`` gives)."""
        return self._send(_Calls.evaluate(name, folds, max_queries, queries))

    def hubness_fit(
        self, name: str, k: int | None = None, beta: float | None = None, bank: Any = None, bank_modality: str = "text"
    ) -> dict[str, Any]:
        """``bank``: your own query vectors (rows) instead of the collection's other modality."""
        return self._send(_Calls.hubness(name, k, beta, bank, bank_modality))

    def align_fit(self, name: str, method: str = "procrustes", force: bool = False) -> dict[str, Any]:
        return self._send(_Call("POST", f"/collections/{name}/align", {"method": method, "force": force}))

    def align_status(self, name: str) -> list[dict[str, Any]]:
        return self._send(_Call("GET", f"/collections/{name}/align"))

    def align_off(self, name: str) -> dict[str, str]:
        return self._send(_Call("DELETE", f"/collections/{name}/align"))


class AsyncClient:
    """The same API as :class:`Client`, every method awaitable."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _asend(self, c: _Call) -> Any:
        r = await self._http.request(c.method, c.path, json=c.json, params=c.params)
        return c.parse(_raise(r))

    async def health(self) -> dict[str, Any]:
        return await self._asend(_Call("GET", "/health"))

    async def collections(self) -> list[CollectionInfo]:
        return await self._asend(_Call("GET", "/collections"))

    async def collection(self, name: str) -> CollectionInfo:
        return await self._asend(_Call("GET", f"/collections/{name}"))

    async def create_collection(self, name: str, dim: int, **kw: Any) -> CollectionInfo:
        return await self._asend(_Calls.create(name, dim, kw))

    async def add(
        self, name: str, items: Sequence[dict[str, Any]], model: str | None = None, pretrained: str = ""
    ) -> IngestResult:
        return await self._asend(_Calls.add(name, items, model, pretrained))

    async def delete(self, name: str, ids: Sequence[str | int]) -> DeleteResult:
        return await self._asend(_Call("POST", f"/collections/{name}/delete", {"ids": list(ids)}))

    async def search(self, name: str, vector: Any, options: SearchOptions | None = None, **kw: Any) -> SearchResponse:
        return await self._asend(_Calls.search(name, vector, options, kw))

    async def stats(self, name: str) -> dict[str, Any]:
        return await self._asend(_Call("GET", f"/collections/{name}/stats"))

    async def drop(self, name: str) -> dict[str, str]:
        return await self._asend(_Call("DELETE", f"/collections/{name}"))

    async def rescore(self, name: str, all: bool = False) -> RescoreResult:
        return await self._asend(_Calls.rescore(name, all))

    async def sync(self, name: str) -> SyncResult:
        return await self._asend(_Call("POST", f"/collections/{name}/sync"))

    async def optimize(self, name: str, force: bool = False) -> dict[str, Any]:
        return await self._asend(_Calls.optimize(name, force))

    async def field_indexes(self, name: str) -> list[dict[str, Any]]:
        return await self._asend(_Calls.field_indexes(name))

    async def index_field(self, name: str, field: str, type: str = "keyword") -> dict[str, Any]:
        return await self._asend(_Calls.index_field(name, field, type))

    async def drop_field_index(self, name: str, field: str) -> dict[str, Any]:
        return await self._asend(_Calls.drop_field_index(name, field))

    async def evaluate(
        self, name: str, folds: int = 5, max_queries: int = 1000, queries: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        return await self._asend(_Calls.evaluate(name, folds, max_queries, queries))

    async def hubness_fit(
        self, name: str, k: int | None = None, beta: float | None = None, bank: Any = None, bank_modality: str = "text"
    ) -> dict[str, Any]:
        return await self._asend(_Calls.hubness(name, k, beta, bank, bank_modality))

    async def align_fit(self, name: str, method: str = "procrustes", force: bool = False) -> dict[str, Any]:
        return await self._asend(_Call("POST", f"/collections/{name}/align", {"method": method, "force": force}))

    async def align_status(self, name: str) -> list[dict[str, Any]]:
        return await self._asend(_Call("GET", f"/collections/{name}/align"))

    async def align_off(self, name: str) -> dict[str, str]:
        return await self._asend(_Call("DELETE", f"/collections/{name}/align"))
