"""A small typed client for the inforank HTTP API (sync and async); needs no torch.

>>> with Client("http://localhost:8000", api_key="…") as c:
...     hits = c.search("photos", vector, k=5, exclude_bottom_info_gain_pct=5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from indexer import errors

_BY_STATUS: dict[int, type[errors.InforankError]] = {
    400: errors.InvalidInputError,
    401: errors.UnauthorizedError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    413: errors.InvalidInputError,
    422: errors.InvalidInputError,
}


@dataclass(frozen=True)
class Hit:
    id: Any
    modality: str
    similarity: float
    score: float
    conformity: float | None
    info_gain: float | None
    stats_version: int | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    note: str | None
    applied: dict[str, Any]


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


def _result(d: dict[str, Any]) -> SearchResult:
    return SearchResult([Hit(**h) for h in d["results"]], d.get("note"), d.get("applied", {}))


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


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

    def health(self) -> dict[str, Any]:
        return _raise(self._http.get("/health"))

    def collections(self) -> list[dict[str, Any]]:
        return _raise(self._http.get("/collections"))

    def collection(self, name: str) -> dict[str, Any]:
        return _raise(self._http.get(f"/collections/{name}"))

    def create_collection(self, name: str, dim: int, **kw: Any) -> dict[str, Any]:
        return _raise(self._http.post("/collections", json={"name": name, "dim": dim, **kw}))

    def add(
        self, name: str, items: Sequence[dict[str, Any]], model: str | None = None, pretrained: str = ""
    ) -> dict[str, Any]:
        """``items``: dicts with ``id``, ``image`` and/or ``text`` vectors, ``metadata``.
        ``model``/``pretrained``: what produced the vectors; the service refuses a mismatch."""
        return _raise(self._http.post(f"/collections/{name}/items", json=_items(items, model, pretrained)))

    def delete(self, name: str, ids: Sequence[str | int]) -> dict[str, Any]:
        return _raise(self._http.post(f"/collections/{name}/delete", json={"ids": list(ids)}))

    def search(self, name: str, vector: Any, **options: Any) -> SearchResult:
        return _result(_raise(self._http.post(f"/collections/{name}/search", json={"vector": _vec(vector), **options})))

    def stats(self, name: str) -> dict[str, Any]:
        return _raise(self._http.get(f"/collections/{name}/stats"))

    def drop(self, name: str) -> dict[str, Any]:
        return _raise(self._http.delete(f"/collections/{name}"))

    def rescore(self, name: str, all: bool = False) -> dict[str, Any]:
        params = {"all": str(all).lower()}
        return _raise(self._http.post(f"/collections/{name}/rescore", params=params))

    def align_fit(self, name: str, method: str = "procrustes", force: bool = False) -> dict[str, Any]:
        return _raise(self._http.post(f"/collections/{name}/align", json={"method": method, "force": force}))

    def align_status(self, name: str) -> list[dict[str, Any]]:
        return _raise(self._http.get(f"/collections/{name}/align"))

    def align_off(self, name: str) -> dict[str, Any]:
        return _raise(self._http.delete(f"/collections/{name}/align"))


class AsyncClient:
    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def search(self, name: str, vector: Any, **options: Any) -> SearchResult:
        r = await self._http.post(f"/collections/{name}/search", json={"vector": _vec(vector), **options})
        return _result(_raise(r))

    async def add(
        self, name: str, items: Sequence[dict[str, Any]], model: str | None = None, pretrained: str = ""
    ) -> dict[str, Any]:
        body = _items(items, model, pretrained)
        return _raise(await self._http.post(f"/collections/{name}/items", json=body))

    async def stats(self, name: str) -> dict[str, Any]:
        return _raise(await self._http.get(f"/collections/{name}/stats"))
