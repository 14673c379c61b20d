"""The HTTP API: in-process for every route, and a real `inforank serve` process via the client."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from indexer.api import Indexer
from indexer.errors import ConflictError, InvalidVectorError, NotFoundError, UnauthorizedError
from retrieval.client import Client
from retrieval.service import Limits, create_app
from tests.conftest import ellipsoid_pairs

D = 16


@pytest.fixture
def ix(sqlite_url, tmp_path):
    from indexer.store import QdrantLocation

    i = Indexer(sqlite_url, QdrantLocation(edge_path=str(tmp_path / "edge")))
    yield i
    i.close()


def _items(n, seed=0):
    img, txt = ellipsoid_pairs(n, D, seed)
    return [
        {"id": f"i{k}", "image": img[k].tolist(), "text": txt[k].tolist(), "metadata": {"g": k % 3}} for k in range(n)
    ]


def test_every_route_but_health_and_the_docs_needs_the_key(ix):
    from retrieval.service import PUBLIC

    app = create_app(ix, api_key="s3cret")
    tc = TestClient(app)
    paths = {(r.path, m) for r in app.routes if isinstance(r, Route) for m in (r.methods or []) if m != "HEAD"}
    assert {("/collections/{name}/search", "POST"), ("/openapi.json", "GET"), ("/metrics", "GET")} <= paths
    for path, method in sorted(paths):
        url = path.replace("{name}", "x")
        r = tc.request(method, url)
        if path in PUBLIC:
            assert r.status_code == 200, (method, path)
        else:
            assert r.status_code == 401, (method, path)
    assert tc.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200  # served here, no CDN
    schema = tc.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert tc.get("/collections", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert tc.get("/collections", headers={"X-API-Key": "wrong"}).status_code == 401
    assert tc.get("/metrics").status_code == 401


def test_ingest_search_stats_and_errors_in_process(ix):
    tc = TestClient(create_app(ix, limits=Limits(max_batch=100, max_body_bytes=2_000_000)))
    assert tc.post("/collections", json={"name": "c", "dim": D, "min_count": 4}).status_code == 201
    # Python's JSON writers emit NaN tokens; the item is rejected, the batch still lands
    raw = json.dumps(
        {"items": [*_items(40), {"id": "nan", "image": [float("nan")] * D}, {"id": "zero", "image": [0.0] * D}]}
    )
    r = tc.post("/collections/c/items", content=raw.encode(), headers={"content-type": "application/json"})
    body = r.json()
    assert r.status_code == 200 and len(body["ingested"]) == 40
    assert body["rejected"] == [
        {"index": 40, "id": "nan", "reason": "image vector: vector contains NaN or Inf"},
        {"index": 41, "id": "zero", "reason": "image vector: zero vector has no direction"},
    ]
    q = np.ones(D).tolist()
    r = tc.post("/collections/c/search", json={"vector": q, "k": 5, "rerank_info_gain": 0.1})
    assert r.status_code == 200 and len(r.json()["results"]) == 5
    assert {"similarity", "score", "info_gain", "conformity", "stats_version"} <= set(r.json()["results"][0])
    assert tc.get("/collections/c/stats").json()["modalities"]["image"]["count"] == 40
    cases = [
        ("/collections/nope/search", {"vector": q}, 404),
        ("/collections/c/search", {"vector": q, "k": 0}, 400),
        ("/collections/c/search", {"vector": q, "k": 100000}, 400),
        ("/collections/c/search", {"vector": [1.0, 2.0]}, 400),
        ("/collections/c/search", {"vector": q, "filter": {"bogus": 1}}, 400),
        ("/collections/c/search", {"vector": q, "modality": "audio"}, 422),
        ("/collections/c/items", {"items": _items(101)}, 400),
        ("/collections/c/items", {"items": _items(3), "model": "ViT-B-32", "pretrained": "openai"}, 409),
        ("/collections/c/search", {"vector": q, "rerank_info_gain": 1e6}, 400),
        ("/collections", {"name": "c", "dim": D}, 409),
        ("/collections", {"name": "bad name!", "dim": D}, 400),
    ]
    for url, payload, code in cases:
        r = tc.post(url, json=payload)
        assert r.status_code == code, (url, payload, r.text)
        assert r.json()["detail"]
    nan_query = json.dumps({"vector": [float("nan")] * D}).encode()
    r = tc.post("/collections/c/search", content=nan_query, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "NaN" in r.json()["detail"]
    r = tc.post("/collections/c/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    big = b"x" * 2_000_001
    assert tc.post("/collections/c/items", content=big, headers={"content-type": "application/json"}).status_code == 413
    metrics = tc.get("/metrics").text
    assert 'inforank_ingested_items_total{collection="c"} 40.0' in metrics
    assert 'inforank_rejected_items_total{collection="c"} 2.0' in metrics
    assert "inforank_request_seconds_bucket" in metrics


@pytest.mark.parametrize("slots", [1, 3])
def test_searches_wait_at_the_gate(ix, monkeypatch, slots):
    """At most ``max_concurrent_searches`` searches run at once; the others wait their turn."""
    import threading

    tc = TestClient(create_app(ix, limits=Limits(max_concurrent_searches=slots)))
    tc.post("/collections", json={"name": "c", "dim": D, "min_count": 4})
    tc.post("/collections/c/items", json={"items": _items(20)})
    running, peak, lock = [0], [0], threading.Lock()
    from retrieval.search import Searcher

    search = Searcher.search

    def timed(self, *a, **kw):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        try:
            return search(self, *a, **kw)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(Searcher, "search", timed)
    codes: list[int] = []

    def one() -> None:
        with TestClient(tc.app) as c:
            codes.append(c.post("/collections/c/search", json={"vector": np.ones(D).tolist(), "k": 3}).status_code)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [200] * 6
    assert peak[0] == 1 if slots == 1 else 2 <= peak[0] <= 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serving(env: dict[str, str]) -> Iterator[str]:
    """A real `inforank serve` process on a free port; yields its URL once /health answers."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_running_service_with_the_python_client(tmp_path: Path):
    env = {**os.environ, "INFORANK_DATA_DIR": str(tmp_path / "data"), "INFORANK_API_KEY": "k"}
    with _serving(env) as url:
        with Client(url, api_key="k", timeout=10) as c:
            c.create_collection("c", D, min_count=4)
            rep = c.add("c", _items(30), model="external")
            assert len(rep["ingested"]) == 30
            with pytest.raises(ConflictError, match="HTTP 409"):
                c.add("c", _items(2, seed=1), model="ViT-B-32", pretrained="openai")
            res = c.search("c", np.ones(D), k=3, exclude_bottom_info_gain_pct=10)
            assert len(res.results) == 3 and res.results[0].stats_version == rep["stats_version"]
            assert c.stats("c")["modalities"]["text"]["count"] == 30
            with pytest.raises(NotFoundError):
                c.search("nope", np.ones(D))
            with pytest.raises(InvalidVectorError, match="HTTP 400"):  # the service's own class, rebuilt
                c.search("c", np.ones(3))
            with pytest.raises(InvalidVectorError, match="NaN or Inf, which JSON cannot carry"):
                c.search("c", np.full(D, np.nan))
        with Client(url, api_key="wrong") as c, pytest.raises(UnauthorizedError, match="HTTP 401"):
            c.collections()
        # the CLI's remote mode goes through the same client
        np.save(tmp_path / "q.npy", np.ones(D))
        cli_env = {**env, "INFORANK_URL": url, "INFORANK_DATA_DIR": str(tmp_path / "elsewhere")}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "retrieval.cli",
                "search",
                "c",
                "--vector",
                str(tmp_path / "q.npy"),
                "--k",
                "4",
                "--json",
            ],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert len(json.loads(out.stdout)["results"]) == 4
        out = subprocess.run(
            [sys.executable, "-m", "retrieval.cli", "stats", "c", "--json"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(out.stdout)["modalities"]["image"]["count"] == 30
        # writes too: ingest reads the file here and sends batches; a bad row is reported in place
        rows = np.asarray(ellipsoid_pairs(7, D, seed=5)[0])
        rows[4] = np.nan
        np.savez(tmp_path / "more.npz", vectors=rows, ids=np.array([f"r{k}" for k in range(7)]))

        def cli(*args: str, json_out: bool = True) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "retrieval.cli", *args, *(["--json"] if json_out else [])]
            return subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=60)

        out = cli("ingest", "c", "--vectors", str(tmp_path / "more.npz"), "--modality", "image", "--batch-size", "3")
        got = json.loads(out.stdout)
        assert out.returncode == 1 and got["ingested"] == 6 and got["skipped_duplicates"] == 0
        assert got["rejected"] == [{"index": 4, "id": "r4", "reason": "image vector: vector contains NaN or Inf"}]
        again = json.loads(cli("ingest", "c", "--vectors", str(tmp_path / "more.npz"), "--modality", "image").stdout)
        assert again["ingested"] == 0 and again["skipped_duplicates"] == 6
        out = cli("delete", "c", "--ids", "r0,r1,nope")
        d = json.loads(out.stdout)
        assert out.returncode == 1 and (d["deleted"], d["missing"]) == (["r0", "r1"], ["nope"])
        with Client(url, api_key="k") as c:
            assert c.stats("c")["modalities"]["image"]["count"] == 34
        # the catalog, rescore and alignment commands too
        assert json.loads(cli("create", "d", "--dim", str(D)).stdout)["name"] == "d"
        assert {r["name"] for r in json.loads(cli("collections").stdout)} == {"c", "d"}
        d = json.loads(cli("rescore", "c", "--all").stdout)  # the writes kept the scores fresh already
        assert not d["skipped"] and not any(f["outside_tolerance"] for f in d["freshness"].values())
        assert json.loads(cli("align", "status", "c").stdout) == []
        assert cli("drop", "d", "--yes", json_out=False).stdout.strip() == "dropped d"
        sync = json.loads(cli("sync", "c").stdout)
        assert sync["pushed"] == 0 and sync["quarantined"]["count"] == 0
        # search through the same command: options derived from SearchOptions reach the service
        np.save(tmp_path / "q.npy", rows[0])
        out = cli("search", "c", "--vector", str(tmp_path / "q.npy"), "--query-modality", "image", "--k", "3",
                  "--prefer", "distinctive")  # fmt: skip
        res = json.loads(out.stdout)
        assert out.returncode == 0, out.stderr
        (term,) = res["applied"]["image_rerank"]  # prefer=distinctive: a negative conformity weight
        assert len(res["results"]) == 3 and term["field"] == "image_conformity" and term["weight"] < 0
        with Client(url, api_key="k") as c:
            direct = c.search("c", rows[0], query_modality="image", k=3, prefer="distinctive")
        assert [r["id"] for r in res["results"]] == [r.id for r in direct.results]
        # a command that runs on the engines themselves refuses instead of using a local store
        out = cli("validate", "c", json_out=False)
        assert out.returncode == 2 and "has no remote mode" in out.stderr
        assert not (tmp_path / "elsewhere").exists()  # nothing local was opened


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_docs_render_offline_with_a_key_set(tmp_path: Path):
    """/docs in headless Chromium, with INFORANK_API_KEY set and no network: the Swagger UI
    renders the API's operations from local assets (a blank page before)."""
    env = {**os.environ, "INFORANK_DATA_DIR": str(tmp_path / "data"), "INFORANK_API_KEY": "k"}
    with _serving(env) as base:
        url = base + "/docs"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}"]
        dom = subprocess.run(
            [CHROMIUM, *flags, "--virtual-time-budget=8000", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert "/collections/{name}/search" in dom and "Authorize" in dom, dom[-800:]
        shot = tmp_path / "docs.png"
        subprocess.run(
            [CHROMIUM, *flags, "--virtual-time-budget=8000", f"--screenshot={shot}", "--window-size=1200,900", url],
            capture_output=True,
            timeout=120,
        )
        from PIL import Image

        pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
        assert pixels.std() > 10  # not a blank page


def test_async_client_end_to_end(ix):
    """The AsyncClient against the real app (in-process ASGI transport): typed results, the same
    request code as the sync client, and the library's exception classes back."""
    import asyncio

    from retrieval.client import AsyncClient
    from retrieval.options import Result

    async def main() -> None:
        transport = httpx.ASGITransport(app=create_app(ix))
        async with AsyncClient("http://t", transport=transport) as c:
            await c.create_collection("c", D, min_count=4)
            rep = await c.add("c", _items(12))
            assert len(rep["ingested"]) == 12
            res = await c.search("c", _items(1)[0]["text"], k=3, query_modality="text")
            assert len(res.results) == 3 and all(isinstance(r, Result) for r in res.results)
            assert (await c.sync("c"))["pushed"] == 0
            assert (await c.delete("c", ["i0", "nope"]))["missing"] == ["nope"]
            with pytest.raises(NotFoundError):
                await c.stats("missing")

    asyncio.run(main())


def test_evaluate_over_http_with_labelled_queries(ix):
    tc = TestClient(create_app(ix))
    tc.post("/collections", json={"name": "c", "dim": D, "min_count": 4})
    items = _items(30)
    tc.post("/collections/c/items", json={"items": items})
    queries = [{"vector": it["text"], "relevant": [it["id"]]} for it in items[:10]]
    r = tc.post("/collections/c/evaluate", json={"folds": 2, "queries": queries})
    assert r.status_code == 200, r.text
    got = r.json()["labelled"]["plain"]
    assert 0 <= got["r@10"]["mean"] <= 1 and r.json()["queries"] == 10
    bad = tc.post("/collections/c/evaluate", json={"queries": [*queries[:3], {"vector": [1.0] * D}]})
    assert bad.status_code == 400 and "queries[3]" in bad.json()["detail"]


def test_a_mixed_search_with_the_wrong_query_modality_is_a_400_that_says_what_to_pass(tmp_path):
    from tests.conftest import coco_pairs_indexer

    cix, feats = coco_pairs_indexer(tmp_path)
    try:
        tc = TestClient(create_app(cix))
        body = {"vector": feats[0][3].tolist(), "k": 5, "modality": "all"}
        r = tc.post("/collections/c/search", json=body)
        assert r.status_code == 400 and "query_modality='image'" in r.json()["detail"]
        r = tc.post("/collections/c/search", json={**body, "query_modality": "image"})
        assert r.status_code == 200 and len(r.json()["results"]) == 5
    finally:
        cix.close()
