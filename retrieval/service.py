"""HTTP JSON API for app backends: a thin adapter over :class:`Indexer` and :class:`Searcher`.

Library errors become 4xx/503 responses in one handler; a failure we did not anticipate is
still reported as JSON. With an API key configured, every route requires it (``X-API-Key: …`` or
``Authorization: Bearer …``), ``/metrics`` included, except ``/health`` and the API's own
documentation (``/docs``, ``/redoc``, ``/openapi.json``), which hold no data; the docs' assets
are served locally, so they work offline, and their "Authorize" button takes the key.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer import errors
from indexer.api import Indexer
from indexer.collections import MAX_DIM
from indexer.items import Item
from indexer.store.base import FieldIndexType
from retrieval.backend import LocalBackend
from retrieval.options import MAX_K, SearchOptions

log = logging.getLogger("inforank.service")

STATUS = {
    errors.InvalidInputError: 400,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.ModelUnavailableError: 503,
    errors.StorageError: 503,
}


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_body_bytes: int = 64 * 1024 * 1024
    max_batch: int = 4096
    max_k: int = MAX_K
    #: searches running at once; the rest wait their turn (first come, first served), which
    #: keeps tail latency under load close to the queue length instead of GIL-convoy luck
    max_concurrent_searches: int = field(default_factory=lambda: os.cpu_count() or 2)


class _Strict(BaseModel):
    """Request bodies: exact JSON types (``true`` and ``1.0`` are not the id 1) and no unknown
    fields (a misspelt option is refused with its name instead of silently doing nothing)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ItemIn(_Strict):
    id: StrictStr | StrictInt | None = None
    image: list[float] | None = None
    text: list[float] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    hashes: dict[Literal["image", "text"], str] = Field(
        default_factory=dict, description="Content hash per modality (e.g. of the image file); default: of the vector."
    )
    sources: dict[Literal["image", "text"], str] = Field(
        default_factory=dict, description="The text itself or the image's path, kept in the payload."
    )


class IngestIn(_Strict):
    items: list[ItemIn]
    model: str | None = Field(
        default=None,
        description="The open_clip model (or 'external') that produced the vectors; a mismatch "
        "with the collection's model is refused (409). Omitted: not checked.",
    )
    pretrained: str = ""


class CollectionIn(_Strict):
    name: str
    dim: int = Field(ge=2, le=MAX_DIM)
    model: str = "external"
    pretrained: str = ""
    min_count: int = Field(default=32, ge=2)
    field_indexes: dict[str, FieldIndexType] = Field(
        default_factory=dict,
        max_length=100,
        description="Metadata fields to index from the start: field → keyword, integer, float, bool, datetime, uuid.",
    )


class FieldIndexIn(_Strict):
    field: str = Field(
        min_length=1, max_length=256, description="A metadata field (a Qdrant JSON path, e.g. 'tags[]')."
    )
    type: FieldIndexType = "keyword"


class DeleteIn(_Strict):
    ids: list[StrictStr | StrictInt] = Field(min_length=1)


def _body_of(cls: type, name: str, **own: Any) -> type[BaseModel]:
    """A request body with one field per field of the dataclass ``cls`` (type, default, help
    as the schema's description) plus ``own``: the API's options are the library's, by construction."""
    hints = get_type_hints(cls)
    derived: dict[str, Any] = {
        f.name: (hints[f.name], Field(default=f.default, description=f.metadata.get("help")))
        for f in dataclasses.fields(cls)
    }
    return create_model(name, __base__=_Strict, **own, **derived)


SearchIn = _body_of(
    SearchOptions, "SearchIn", vector=(list[float], Field(description="The query vector (any norm; it is normalised)."))
)


class EvaluateIn(_Strict):
    folds: int = Field(default=5, ge=2, le=20)
    max_queries: int = Field(default=1000, ge=10, le=100_000)
    queries: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=10_000,
        description="Labelled queries instead of the collection's pairs: each with vector or text, relevant "
        "(ids), and optionally modality and target (as `inforank evaluate --queries` reads them).",
    )


class HubnessIn(_Strict):
    k: int | None = Field(default=None, ge=1, le=1000)
    beta: float | None = Field(default=None, ge=0, le=10)
    bank: list[list[float]] | None = Field(
        default=None, max_length=100_000, description="Your own query vectors instead of the other modality's items."
    )
    bank_modality: Literal["text", "image"] = "text"


class AlignIn(_Strict):
    method: Literal["procrustes", "lstsq"] = "procrustes"
    force: bool = False


def create_app(ix: Indexer, *, api_key: str | None = None, limits: Limits | None = None) -> FastAPI:
    lim = limits or Limits()
    # max_body_size: FastAPI counts the bytes as they arrive, so a chunked body without a
    # Content-Length is held to the limit too (413)
    # docs served from local assets (fastapi-offline), so /docs works with no network; the
    # API-key scheme puts an "Authorize" button on it, so a browser can call the API with a key
    app = FastAPIOffline(
        title="inforank",
        version="0.1.0",
        description=__doc__,
        max_body_size=lim.max_body_bytes,
        dependencies=[Depends(_API_KEY)],
    )
    backend = LocalBackend(ix)
    for c in ix.collections():  # the first request after a restart costs what any other does
        try:
            backend.searcher.warm(c.name)
        except errors.InforankError as exc:  # a collection that cannot be searched yet
            log.info("not warmed: %s: %s", c.name, exc)
    gate = threading.BoundedSemaphore(lim.max_concurrent_searches)
    rescorer = BackgroundRescore(ix)
    reg = CollectorRegistry()
    latency = Histogram("inforank_request_seconds", "Request latency", ["route", "method", "status"], registry=reg)
    ingested = Counter("inforank_ingested_items", "Items ingested", ["collection"], registry=reg)
    rejected = Counter("inforank_rejected_items", "Items rejected", ["collection"], registry=reg)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        route = request.url.path
        if api_key and not _public(route) and not _authorised(request, api_key):
            resp: Response = JSONResponse({"error": "unauthorized", "detail": "Send the API key as X-API-Key."}, 401)
        else:
            try:
                resp = await call_next(request)
            except Exception:  # never a bare 500 page, and never internals in it
                log.exception("unexpected error on %s %s", request.method, route)
                resp = JSONResponse(
                    {"error": "internal", "detail": "An unexpected error occurred; the service logged it."}, 500
                )
        tmpl = getattr(request.scope.get("route"), "path", route)
        latency.labels(tmpl, request.method, str(resp.status_code)).observe(time.perf_counter() - start)
        return resp

    @app.exception_handler(errors.InforankError)
    async def _lib_error(_r: Request, exc: errors.InforankError) -> JSONResponse:
        code = next((c for k, c in STATUS.items() if isinstance(exc, k)), 500)
        return JSONResponse({"error": exc.__class__.__name__, "detail": str(exc)}, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {413: "too_large", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": kind, "detail": exc.detail}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid_request", "detail": _short(exc.errors())}, 422)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict[str, Any]:
        n = len(ix.collections())
        for c in ix.collections():
            ix.store.exists(c.qdrant_collection)
        return {"status": "ready", "collections": n, "qdrant": ix.location.describe()}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)

    @app.get("/collections")
    def collections() -> list[dict[str, Any]]:
        return backend.collections()

    @app.post("/collections", status_code=201)
    def create(body: CollectionIn) -> dict[str, Any]:
        return backend.create(
            body.name,
            dim=body.dim,
            model=body.model,
            pretrained=body.pretrained,
            min_count=body.min_count,
            field_indexes=dict(body.field_indexes),
        )

    @app.get("/collections/{name}")
    def get_collection(name: str) -> dict[str, Any]:
        return backend.collection(name)

    @app.delete("/collections/{name}")
    def drop(name: str) -> dict[str, Any]:
        return backend.drop(name)

    @app.post("/collections/{name}/items")
    async def ingest(name: str, body: IngestIn) -> dict[str, Any]:
        if len(body.items) > lim.max_batch:
            raise errors.InvalidInputError(f"A batch holds at most {lim.max_batch} items, got {len(body.items)}.")
        items = [
            Item(
                {m: np.asarray(v) for m, v in (("image", it.image), ("text", it.text)) if v is not None},
                id=it.id,
                metadata=it.metadata,
                hashes={str(k): v for k, v in it.hashes.items()},
                sources={str(k): v for k, v in it.sources.items()},
            )
            for it in body.items
        ]
        model = (body.model, body.pretrained) if body.model is not None else None
        rep = await run_in_threadpool(ix.add, name, items, batch_size=lim.max_batch, model=model)
        ingested.labels(name).inc(len(rep.ingested))
        rejected.labels(name).inc(len(rep.rejected))
        if rep.rescore_due:
            rescorer.submit(name)
        return {
            "ingested": rep.ingested,
            "skipped_duplicates": rep.unchanged,
            "rejected": [r.as_dict() for r in rep.rejected],
            "quarantined": [{"id": r.as_dict()["id"], "reason": r.reason} for r in rep.quarantined],
            "rescored": rep.rescored,
            "rescore_due": rep.rescore_due,
            "stats_version": rep.stats_version,
        }

    @app.post("/collections/{name}/delete")
    def delete(name: str, body: DeleteIn) -> dict[str, Any]:
        out = backend.delete(name, body.ids)
        if out["rescore_due"]:
            rescorer.submit(name)
        return out

    @app.post("/collections/{name}/search")
    def search(name: str, body: SearchIn) -> dict[str, Any]:  # type: ignore[valid-type]
        opts = SearchOptions(**body.model_dump(exclude={"vector"}))  # type: ignore[attr-defined]
        if not 1 <= opts.k <= lim.max_k:
            raise errors.InvalidQueryError(f"k must be between 1 and {lim.max_k}, got {opts.k}.")
        with gate:
            return backend.search(name, body.vector, opts).as_dict()  # type: ignore[attr-defined]

    @app.get("/collections/{name}/stats")
    def stats(name: str) -> dict[str, Any]:
        return backend.stats(name)

    @app.post("/collections/{name}/rescore")
    def rescore(name: str, all: bool = False) -> dict[str, Any]:
        return backend.rescore(name, all=all, progress=lambda _n: None)

    @app.post("/collections/{name}/optimize")
    def optimize(name: str, force: bool = False) -> dict[str, Any]:
        """Build the embedded store's HNSW index. A maintenance operation: qdrant-edge-py holds
        the GIL while it builds, so the whole service waits (minutes at 1M vectors). A Qdrant
        server indexes in the background by itself."""
        return backend.optimize(name, force=force)

    @app.get("/collections/{name}/field-indexes")
    def field_indexes(name: str) -> list[dict[str, Any]]:
        return backend.field_indexes(name)

    @app.put("/collections/{name}/field-indexes")
    def index_field(name: str, body: FieldIndexIn) -> dict[str, Any]:
        """Index a metadata field so filters on it are planned from the index (idempotent; 409
        when the field is indexed as another type)."""
        return backend.index_field(name, body.field, type=body.type)

    @app.delete("/collections/{name}/field-indexes")
    def drop_field_index(name: str, field: str) -> dict[str, Any]:
        return backend.drop_field_index(name, field)

    @app.post("/collections/{name}/sync")
    def sync(name: str) -> dict[str, Any]:
        return backend.sync(name)

    @app.post("/collections/{name}/evaluate")
    def evaluate(name: str, body: EvaluateIn) -> dict[str, Any]:
        queries = None
        if body.queries is not None:
            from retrieval.evaluate import check_queries

            queries = check_queries([(f"queries[{i}]", q) for i, q in enumerate(body.queries)])
        return backend.evaluate(
            name, folds=body.folds, max_queries=body.max_queries, progress=lambda _n: None, queries=queries
        )

    @app.post("/collections/{name}/hubness")
    def hubness_fit(name: str, body: HubnessIn) -> dict[str, Any]:
        # the library checks the bank (a ragged list of rows is a 400 there, not a 500 here)
        return backend.hubness_fit(name, k=body.k, beta=body.beta, bank=body.bank, bank_modality=body.bank_modality)

    @app.post("/collections/{name}/align")
    def align_fit(name: str, body: AlignIn) -> dict[str, Any]:
        return backend.align_fit(name, method=body.method, force=body.force)

    @app.get("/collections/{name}/align")
    def align_status(name: str) -> list[dict[str, Any]]:
        return backend.align_status(name)

    @app.delete("/collections/{name}/align")
    def align_off(name: str) -> dict[str, str]:
        return backend.align_off(name)

    app.state.rescorer = rescorer
    return app


#: rows per transaction of a background rescore (each holds the collection's write lock)
BACKGROUND_BATCH = 256


class BackgroundRescore:
    """Rescores that are too large to run inside a write, one at a time on a thread of their
    own; searches never wait for them (their results say whether scores are within tolerance).
    A rescore is resumable, so one cut short by a shutdown continues at the next."""

    def __init__(self, ix: Indexer) -> None:
        self.ix = ix
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inforank-rescore")
        self.queued: set[str] = set()
        self.lock = threading.Lock()
        self.done: list[str] = []

    def submit(self, name: str) -> None:
        with self.lock:
            if name in self.queued:
                return
            self.queued.add(name)
        self.pool.submit(self._run, name)

    def _run(self, name: str) -> None:
        with self.lock:
            self.queued.discard(name)
        try:
            if self.ix.rescore_due(name):
                # small batches: each holds the collection lock briefly, so writers interleave
                self.ix.rescore(name, batch_size=BACKGROUND_BATCH)
                self.done.append(name)

        except Exception:  # a background task must not die silently, nor take the service down
            log.exception("background rescore of %s failed; the next write will retry", name)


#: documents the key in the OpenAPI schema (the check itself is the middleware's, on every route)
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service's INFORANK_API_KEY.")
#: readable without the key: health, and the API's own documentation (no data in either)
PUBLIC = ("/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def _public(route: str) -> bool:
    return route in PUBLIC or route.startswith("/static-offline-docs/")


def _authorised(request: Request, key: str) -> bool:
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:]
    return hmac.compare_digest(given.encode(), key.encode())


def _short(errs: Any) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in errs][:20]
