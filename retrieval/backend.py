"""One interface, two backends: the CLI's commands are written once against :class:`Backend`
and run either on the engines in this process (:class:`LocalBackend`: the
:class:`~indexer.api.Indexer` and :class:`~retrieval.search.Searcher`) or against an
``inforank serve`` (:class:`RemoteBackend`: the HTTP client). Every method returns the same
JSON-able shape either way, which is what ``--json`` prints.

Only :func:`open_backend` reads configuration (the edge passes it in); the CLI picks the backend
once per command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from indexer import errors
from retrieval.options import SearchOptions, SearchResponse

if TYPE_CHECKING:
    from indexer.api import Indexer
    from indexer.items import Item
    from indexer.writer import Rejection
    from retrieval.client import Client

Progress = Callable[[int], Any]


class Backend(Protocol):
    #: where the commands run, for messages (a URL or the stores' description)
    where: str

    def collections(self) -> list[dict[str, Any]]: ...
    def collection(self, name: str) -> dict[str, Any]: ...
    def create(
        self,
        name: str,
        *,
        dim: int,
        model: str,
        pretrained: str,
        min_count: int,
        field_indexes: dict[str, str] | None = None,
    ) -> dict[str, Any]: ...
    def ingest(
        self,
        name: str,
        reads: Iterable[Item | Rejection],
        *,
        batch_size: int,
        progress: Progress,
        encoded: bool,
        on_build: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]: ...
    def delete(self, name: str, ids: Sequence[str | int]) -> dict[str, Any]: ...
    def rescore(self, name: str, *, all: bool, progress: Progress) -> dict[str, Any]: ...
    def sync(self, name: str) -> dict[str, Any]: ...
    def drop(self, name: str) -> dict[str, Any]: ...
    def stats(self, name: str) -> dict[str, Any]: ...
    def optimize(self, name: str, *, force: bool) -> dict[str, Any]: ...
    def field_indexes(self, name: str) -> list[dict[str, Any]]: ...
    def index_field(self, name: str, field: str, *, type: str) -> dict[str, Any]: ...
    def drop_field_index(self, name: str, field: str) -> dict[str, Any]: ...
    def search(self, name: str, vector: Any, options: SearchOptions) -> SearchResponse: ...
    def evaluate(
        self,
        name: str,
        *,
        folds: int,
        max_queries: int,
        progress: Progress,
        queries: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]: ...
    def hubness_fit(
        self, name: str, *, k: int | None, beta: float | None, bank: Any = None, bank_modality: str = "text"
    ) -> dict[str, Any]: ...
    def align_fit(self, name: str, *, method: str, force: bool) -> dict[str, Any]: ...
    def align_status(self, name: str) -> list[dict[str, Any]]: ...
    def align_off(self, name: str) -> dict[str, Any]: ...


def ingest_summary(
    name: str,
    ingested: int,
    unchanged: int,
    rejected: list[dict[str, Any]],
    version: int,
    quarantined: list[dict[str, Any]] | None = None,
    replayed: int = 0,
    rescored: int = 0,
    rescore_due: bool = False,
) -> dict[str, Any]:
    return {
        "collection": name,
        "ingested": ingested,
        "skipped_duplicates": unchanged,
        "rejected": rejected,
        "quarantined": quarantined or [],
        "replayed": replayed,
        "stats_version": version,
        "rescored": rescored,
        "rescore_due": rescore_due,
    }


class LocalBackend:
    def __init__(self, ix: Indexer) -> None:
        from retrieval.search import Searcher

        self.ix = ix
        self.searcher = Searcher(ix)
        self.where = ix.location.describe()

    def collections(self) -> list[dict[str, Any]]:
        return [c.__dict__ for c in self.ix.collections()]

    def collection(self, name: str) -> dict[str, Any]:
        return self.ix.collection(name).__dict__

    def create(
        self,
        name: str,
        *,
        dim: int,
        model: str,
        pretrained: str,
        min_count: int,
        field_indexes: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        c = self.ix.create_collection(
            name, dim=dim, model=model, pretrained=pretrained, min_count=min_count, field_indexes=field_indexes
        )
        return {**c.__dict__, "field_indexes": self.ix.field_indexes(name)}

    def ingest(
        self,
        name: str,
        reads: Iterable[Item | Rejection],
        *,
        batch_size: int,
        progress: Progress,
        encoded: bool,
        on_build: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        # the embedded store's HNSW index is built a segment at a time as the ingest goes (a
        # service leaves it to POST …/optimize: the build holds its process)
        rep = self.ix.add(name, reads, batch_size=batch_size, progress=progress, index=True, on_build=on_build)
        out = ingest_summary(
            name,
            len(rep.ingested),
            len(rep.unchanged),
            [r.as_dict() for r in rep.rejected],
            rep.stats_version,
            [{"id": r.id, "reason": r.reason} for r in rep.quarantined],
            rep.replayed,
            rep.rescored,
            rep.rescore_due,
        )
        if rep.index_builds:
            out["index_builds"] = rep.index_builds
        return out

    def delete(self, name: str, ids: Sequence[str | int]) -> dict[str, Any]:
        return self.ix.delete(name, ids)

    def rescore(self, name: str, *, all: bool, progress: Progress) -> dict[str, Any]:
        return self.ix.rescore(name, all=all, progress=progress).__dict__

    def sync(self, name: str) -> dict[str, Any]:
        return {"collection": name, "pushed": self.ix.sync(name), "quarantined": self.ix.quarantined(name)}

    def drop(self, name: str) -> dict[str, Any]:
        self.ix.drop_collection(name)
        return {"dropped": name}

    def stats(self, name: str) -> dict[str, Any]:
        return self.ix.stats(name)

    def optimize(self, name: str, *, force: bool) -> dict[str, Any]:
        return self.ix.optimize(name, force=force)

    def field_indexes(self, name: str) -> list[dict[str, Any]]:
        return self.ix.field_indexes(name)

    def index_field(self, name: str, field: str, *, type: str) -> dict[str, Any]:
        return self.ix.index_field(name, field, type)

    def drop_field_index(self, name: str, field: str) -> dict[str, Any]:
        return self.ix.drop_field_index(name, field)

    def search(self, name: str, vector: Any, options: SearchOptions) -> SearchResponse:
        return self.searcher.search(name, vector, options)

    def evaluate(
        self,
        name: str,
        *,
        folds: int,
        max_queries: int,
        progress: Progress,
        queries: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        from retrieval.evaluate import evaluate, evaluate_queries

        if queries is not None:
            return evaluate_queries(self.ix, name, queries, folds=folds, progress=progress)
        return evaluate(self.ix, name, folds=folds, max_queries=max_queries, progress=progress)

    def hubness_fit(
        self, name: str, *, k: int | None, beta: float | None, bank: Any = None, bank_modality: str = "text"
    ) -> dict[str, Any]:
        from retrieval import hubness

        out = hubness.fit(self.ix, name, k=k, beta=beta, bank=bank, bank_modality=bank_modality)
        out.pop("grid", None)
        return out

    def align_fit(self, name: str, *, method: str, force: bool) -> dict[str, Any]:
        from retrieval import align

        m = align.fit(self.ix, name, method, force)
        return {"version": m.version, "method": m.method, "active": m.active, **m.metrics}

    def align_status(self, name: str) -> list[dict[str, Any]]:
        from retrieval import align

        return align.status(self.ix, name)

    def align_off(self, name: str) -> dict[str, Any]:
        from retrieval import align

        align.off(self.ix, name)
        return {"collection": name, "alignment": "off"}


class RemoteBackend:
    """The same commands against ``inforank serve``; files are read (and texts/images encoded
    with the collection's model) here, and only vectors travel."""

    def __init__(self, client: Client, url: str) -> None:
        self.cl = client
        self.where = url

    def collections(self) -> list[dict[str, Any]]:
        return list(self.cl.collections())  # type: ignore[arg-type]

    def collection(self, name: str) -> dict[str, Any]:
        return dict(self.cl.collection(name))

    def create(
        self,
        name: str,
        *,
        dim: int,
        model: str,
        pretrained: str,
        min_count: int,
        field_indexes: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": model, "pretrained": pretrained, "min_count": min_count}
        if field_indexes:
            kw["field_indexes"] = field_indexes
        return dict(self.cl.create_collection(name, dim, **kw))

    def ingest(
        self,
        name: str,
        reads: Iterable[Item | Rejection],
        *,
        batch_size: int,
        progress: Progress,
        encoded: bool,
        on_build: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        """Batches over HTTP (a service never builds its index inside a request: ``on_build``
        is not called). Unusable vectors (NaN/Inf, which JSON cannot carry, zero, wrong
        dimension) are rejected here with the reasons the service gives, so the good items of a
        batch still land; ``encoded``: the vectors come from the collection's model (checked)."""
        from indexer.vectors import problem
        from indexer.writer import Rejection

        info = self.cl.collection(name)
        model = (info["model"], info["pretrained"]) if encoded else (None, "")
        rejected: list[dict[str, Any]] = []
        totals = {"ingested": 0, "unchanged": 0, "version": info["stats_version"], "rescored": 0, "due": 0}
        buf: list[tuple[int, Item]] = []  # (position among the items read, item)

        def send() -> None:
            rep = self.cl.add(name, [_wire(it) for _, it in buf], *model)
            totals["ingested"] += len(rep["ingested"])
            totals["unchanged"] += len(rep["skipped_duplicates"])
            rejected.extend({**r, "index": buf[r["index"]][0]} for r in rep["rejected"])
            totals["version"] = max(totals["version"], rep["stats_version"])
            totals["rescored"] += rep.get("rescored", 0)
            totals["due"] = int(bool(rep.get("rescore_due")))  # the last request's word: the service rescores by itself
            progress(len(buf))
            buf.clear()

        pos = -1
        for it in reads:
            if isinstance(it, Rejection):  # a reader could not even build the item
                rejected.append(it.as_dict())
                continue
            pos = it.position if it.position is not None else pos + 1  # where it stands in the input
            why = next((f"{m} vector: {w}" for m, v in it.vectors.items() if (w := problem(v, info["dim"]))), None)
            if why is not None:  # the service's own reasons, found before sending
                rejected.append(Rejection(pos, it.id, why).as_dict())
                continue
            buf.append((pos, it))
            if len(buf) >= batch_size:
                send()
        if buf:
            send()
        return ingest_summary(
            name,
            totals["ingested"],
            totals["unchanged"],
            rejected,
            totals["version"],
            rescored=totals["rescored"],
            rescore_due=bool(totals["due"]),
        )

    def delete(self, name: str, ids: Sequence[str | int]) -> dict[str, Any]:
        return dict(self.cl.delete(name, ids))

    def rescore(self, name: str, *, all: bool, progress: Progress) -> dict[str, Any]:
        return dict(self.cl.rescore(name, all=all))

    def sync(self, name: str) -> dict[str, Any]:
        return dict(self.cl.sync(name))

    def drop(self, name: str) -> dict[str, Any]:
        return self.cl.drop(name)

    def stats(self, name: str) -> dict[str, Any]:
        return self.cl.stats(name)

    def optimize(self, name: str, *, force: bool) -> dict[str, Any]:
        return self.cl.optimize(name, force=force)

    def field_indexes(self, name: str) -> list[dict[str, Any]]:
        return self.cl.field_indexes(name)

    def index_field(self, name: str, field: str, *, type: str) -> dict[str, Any]:
        return self.cl.index_field(name, field, type)

    def drop_field_index(self, name: str, field: str) -> dict[str, Any]:
        return self.cl.drop_field_index(name, field)

    def search(self, name: str, vector: Any, options: SearchOptions) -> SearchResponse:
        return self.cl.search(name, vector, options)

    def evaluate(
        self,
        name: str,
        *,
        folds: int,
        max_queries: int,
        progress: Progress,
        queries: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return self.cl.evaluate(name, folds=folds, max_queries=max_queries, queries=queries)

    def hubness_fit(
        self, name: str, *, k: int | None, beta: float | None, bank: Any = None, bank_modality: str = "text"
    ) -> dict[str, Any]:
        return self.cl.hubness_fit(name, k=k, beta=beta, bank=bank, bank_modality=bank_modality)

    def align_fit(self, name: str, *, method: str, force: bool) -> dict[str, Any]:
        return self.cl.align_fit(name, method, force)

    def align_status(self, name: str) -> list[dict[str, Any]]:
        return self.cl.align_status(name)

    def align_off(self, name: str) -> dict[str, Any]:
        self.cl.align_off(name)
        return {"collection": name, "alignment": "off"}


def _wire(it: Item) -> dict[str, Any]:
    return {"id": it.id, **it.vectors, "metadata": it.metadata, "hashes": it.hashes, "sources": it.sources}


@contextmanager
def open_backend(
    *, url: str | None, api_key: str | None = None, database_url: str = "", qdrant: Any = None
) -> Iterator[LocalBackend | RemoteBackend]:
    """The remote backend when ``url`` (INFORANK_URL) is set, else the local one on the given
    engines; closed on exit. A service that cannot be reached is a :class:`StorageError`."""
    if url:
        import httpx

        from retrieval.client import Client

        try:
            with Client(url, api_key=api_key) as cl:
                yield RemoteBackend(cl, url)
        except httpx.HTTPError as exc:
            raise errors.StorageError(f"Cannot reach the inforank service at {url}: {exc}") from None
        return
    from indexer.api import Indexer

    ix = Indexer(database_url, qdrant)
    try:
        yield LocalBackend(ix)
    finally:
        ix.close()


def query_vector(
    backend: Backend,
    name: str,
    *,
    text: str | None = None,
    image: Path | None = None,
    vector: np.ndarray | None = None,
    vector_modality: str = "text",
) -> tuple[np.ndarray, str]:
    """The query as a vector and its modality: ``vector`` as given, or ``text``/``image`` encoded
    here with the collection's own model (read from either backend)."""
    if sum(x is not None for x in (text, image, vector)) != 1:
        raise errors.InvalidQueryError("Give exactly one of --text, --image or --vector.")
    if vector is not None:
        return vector, vector_modality
    from indexer.encoders import encode_query

    info = backend.collection(name)
    if info["model"] == "external":
        raise errors.InvalidQueryError(f"Collection {name!r} holds external vectors: query with --vector.")
    return encode_query(info["model"], info["pretrained"], text=text, image=image)
