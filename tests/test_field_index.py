"""Payload indexes on the user's metadata fields: kept by every store that keeps any, refused
clearly for bad input, reachable from the library, the CLI and HTTP; and on the embedded store,
what they are for: a filter on fields the HNSW graph links stays on the graph, and one on fields
it has no links for is never walked (among the nearest when loose, else scanned)."""

import asyncio
import json

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import indexer.api
import retrieval.search
from indexer.api import Indexer
from indexer.errors import ConflictError, InvalidQueryError, NotFoundError
from indexer.items import Item
from indexer.store import QdrantLocation
from indexer.store.edge import EdgeStore
from retrieval.options import SearchOptions
from retrieval.search import Searcher
from retrieval.service import create_app
from tests.conftest import ellipsoid_pairs
from tests.consistency import assert_consistent
from tests.test_cli import run

D = 16


def _fill(ix: Indexer, n: int = 40, d: int = D) -> tuple[np.ndarray, np.ndarray]:
    ix.create_collection("c", dim=d, min_count=4)
    img, txt = ellipsoid_pairs(n, d, seed=1)
    # "cat" on every item but the last four; "year" an integer on half of them
    meta = [{"cat": f"c{i % 3}", **({"year": 2000 + i % 5} if i % 2 else {})} if i < n - 4 else {} for i in range(n)]
    ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i, metadata=meta[i]) for i in range(n)])
    return img, txt


def test_a_field_index_is_kept_listed_and_dropped_on_every_store(indexer, location):
    img, _ = _fill(indexer)
    keeps = location.local_path is None  # qdrant-client's local mode keeps no payload indexes
    assert indexer.field_indexes("c") == []  # inforank's own score indexes are not listed
    out = indexer.index_field("c", "cat")
    assert out["kept"] is keeps and out["created"] is keeps and not out["graph_without_links"]
    # one point per item (its image and text are two named vectors): 36 items have a "cat"
    assert out["points"] == (36 if keeps else 0)
    assert indexer.field_indexes("c") == (
        [{"field": "cat", "type": "keyword", "points": 36, "linked": True}] if keeps else []
    )
    assert indexer.index_field("c", "cat")["created"] is False  # the same again changes nothing
    indexer.index_field("c", "year", "integer")
    if keeps:
        assert [i["field"] for i in indexer.field_indexes("c")] == ["cat", "year"]
        with pytest.raises(ConflictError, match=r"indexed as keyword already.*--drop"):
            indexer.index_field("c", "cat", "integer")
    # filters answer the same with and without the index
    s = Searcher(indexer)
    flt = {"must": [{"key": "cat", "match": {"value": "c1"}}, {"key": "year", "range": {"gte": 2002}}]}
    got = s.search("c", img[0], SearchOptions(k=5, query_modality="image", filter=flt))
    assert got.results and all(r.payload["cat"] == "c1" and r.payload["year"] >= 2002 for r in got.results)
    assert indexer.drop_field_index("c", "cat")["dropped"] is keeps
    assert indexer.drop_field_index("c", "cat")["dropped"] is False
    after = s.search("c", img[0], SearchOptions(k=5, query_modality="image", filter=flt))
    assert [r.id for r in after.results] == [r.id for r in got.results]
    assert [i["field"] for i in indexer.field_indexes("c")] == (["year"] if keeps else [])


@pytest.mark.parametrize(
    ("field", "type", "message"),
    [
        ("image_info_gain", "float", "inforank owns"),
        ("inforank_id", "keyword", "inforank owns"),
        ("", "keyword", "non-empty"),
        ("x" * 300, "keyword", "at most 256"),
        ("bad\ud800", "keyword", "lone surrogate"),
        ("nul\x00", "keyword", "NUL"),
        ("cat", "text", "one of keyword, integer"),
        ("cat", "geo", "one of keyword"),
        (7, "keyword", "non-empty string"),
    ],
)
def test_bad_field_index_requests_are_refused_before_the_store_sees_them(tmp_path, field, type, message):
    ix = Indexer(f"sqlite:///{tmp_path / 'i.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
    try:
        _fill(ix)
        with pytest.raises(InvalidQueryError, match=message):
            ix.index_field("c", field, type)
        assert ix.field_indexes("c") == []
        with pytest.raises(NotFoundError):
            ix.index_field("missing", "cat")
    finally:
        ix.close()


def test_a_path_qdrant_cannot_parse_is_a_clear_error(tmp_path):
    ix = Indexer(f"sqlite:///{tmp_path / 'i.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
    try:
        _fill(ix)
        with pytest.raises(InvalidQueryError, match="not a payload field path"):
            ix.index_field("c", "tags[")
        ix.index_field("c", "tags[]")  # an array field's values: a path Qdrant takes
        assert [i["field"] for i in ix.field_indexes("c")] == ["tags[]"]
    finally:
        ix.close()


def test_an_indexed_field_keeps_a_selective_filter_on_the_graph(tmp_path):
    """Without a payload index, a filter that 1 % pass strands Qdrant's walk (1 result of 10;
    the searcher then scans). With the field indexed before the graph is built, Qdrant plans the
    filter from the index and the graph search answers in full: no scan needed. Indexed after the
    build, the result says the graph lacks the field's links."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EdgeStore, "index_threshold_kb", 1)
        mp.setattr(indexer.api, "INDEX_MIN_VECTORS", 2000)
        mp.setattr(retrieval.search, "CROSS_EXACT_BELOW", 1000)
        n, d = 3000, 32
        ix = Indexer(f"sqlite:///{tmp_path / 'i.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
        try:
            ix.create_collection("c", dim=d, min_count=8)
            img, txt = ellipsoid_pairs(n, d, seed=3)
            meta = [{"g": i % 100, "late": i % 100, "u": i % 2} for i in range(n)]
            ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i, metadata=meta[i]) for i in range(n)])
            assert ix.index_field("c", "g", "integer")["graph_without_links"] is False
            ix.optimize("c", force=True)
            late = ix.index_field("c", "late", "integer")
            assert late["created"] and late["graph_without_links"] and late["points"] == n
            # only the field indexed before the graph is linked in it
            assert ix.collection("c").linked_fields == ("g",)
            s = Searcher(ix)
            rare = {"must": [{"key": "g", "match": {"value": 1}}]}
            for i in (0, 7, 11):
                got = s.search("c", img[i], SearchOptions(k=10, query_modality="image", filter=rare))
                exact = s.search("c", img[i], SearchOptions(k=10, query_modality="image", filter=rare, exact=True))
                assert got.applied["image_search"]["method"] == "hnsw" and got.applied["approximate"]
                assert [r.id for r in got.results] == [r.id for r in exact.results]
            # on a field the graph links, a filter most points pass is left to Qdrant's walk
            linked = {"must": [{"key": "g", "range": {"lt": 50}}]}
            got = s.search("c", img[5], SearchOptions(k=10, query_modality="image", filter=linked))
            exact = s.search("c", img[5], SearchOptions(k=10, query_modality="image", filter=linked, exact=True))
            assert got.applied["image_filter_plan"] == "filtered search"
            assert got.applied["image_filter_pass_estimate"].startswith("left to Qdrant")
            assert [r.id for r in got.results] == [r.id for r in exact.results]
            # on one indexed after the graph: Qdrant's estimate from the index (no scan) sends
            # it to the unfiltered nearest candidates, as a score filter, instead of the walk
            half = {"must": [{"key": "late", "range": {"lt": 50}}]}
            for i in (0, 7):
                got = s.search("c", img[i], SearchOptions(k=10, query_modality="image", filter=half))
                exact = s.search("c", img[i], SearchOptions(k=10, query_modality="image", filter=half, exact=True))
                assert got.applied["image_filter_plan"].startswith("among the ")
                assert got.applied["image_filter_pass_estimate"] == pytest.approx(0.5, abs=0.02)  # a histogram
                assert "image_filter_pass_estimate" not in exact.applied  # a scan needs no estimate
                assert [r.id for r in got.results] == [r.id for r in exact.results]
            # a narrow filter on a field the graph has no links for is not walked: it scans
            # (exact; Qdrant reads the matching points from the payload index)
            narrow = {"must": [{"key": "late", "range": {"lt": 5}}]}
            got = s.search("c", img[2], SearchOptions(k=10, query_modality="image", filter=narrow))
            exact = s.search("c", img[2], SearchOptions(k=10, query_modality="image", filter=narrow, exact=True))
            assert got.applied["image_search"] == {
                "method": "exact",
                "reason": "the graph has no links for the filter's fields",
            }
            assert got.applied["image_filter_pass_estimate"] == pytest.approx(0.05, abs=0.01)
            assert [r.id for r in got.results] == [r.id for r in exact.results] and "approximate" not in got.applied
            assert "hint" not in got.applied  # the field has its payload index
            # a field without a payload index: Qdrant's estimate says nothing, so the plan takes
            # the narrowest share the candidate route serves (25 %) and the sieve checks it
            unindexed = {"must": [{"key": "u", "match": {"value": 1}}, half]}
            got = s.search("c", img[3], SearchOptions(k=10, query_modality="image", filter=unindexed))
            exact = s.search("c", img[3], SearchOptions(k=10, query_modality="image", filter=unindexed, exact=True))
            assert got.applied["image_filter_pass_estimate"] == "unknown: no payload index on u"
            assert "`inforank index-field c u`" in got.applied["hint"]
            assert got.applied["image_filter_plan"] == "among the 82 nearest"  # 10 / 0.25 × 1.25 + 32
            assert [r.id for r in got.results] == [r.id for r in exact.results]
            text = "\n".join(json.dumps(i) for i in ix.field_indexes("c"))
            assert '"field": "g"' in text and '"field": "late"' in text
        finally:
            ix.close()


def test_index_field_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("INFORANK_DATA_DIR", str(tmp_path / "data"))
    img, _ = ellipsoid_pairs(6, D)
    (tmp_path / "v.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "vector": img[i].tolist(), "metadata": {"cat": f"c{i % 2}"}}) for i in range(6))
    )
    assert run("create", "p", "--dim", str(D))[0] == 0
    assert run("ingest", "p", "--vectors", str(tmp_path / "v.jsonl"), "--modality", "image")[0] == 0
    code, out = run("index-field", "p")
    assert code == 0 and "no metadata field is indexed" in out
    code, out = run("index-field", "p", "cat")
    assert code == 0 and "cat indexed as keyword (6 points with a value)" in out
    code, out = run("index-field", "p", "--json")
    assert code == 0 and json.loads(out)["field_indexes"] == [
        {"field": "cat", "type": "keyword", "points": 6, "linked": True}
    ]
    code, out = run("stats", "p")
    assert code == 0 and "indexed metadata fields: cat (keyword)" in out
    for args, want in [
        (("cat", "--type", "integer"), "--drop"),
        (("image_info_gain",), "inforank owns"),
        (("cat", "--type", "nope"), "one of keyword"),
        (("tags[",), "not a payload field path"),
    ]:
        code, out = run("index-field", "p", *args)
        assert code != 0 and want in out and "Traceback" not in out, args
    code, out = run("index-field", "p", "cat", "--drop")
    assert code == 0 and "cat index dropped" in out
    assert json.loads(run("index-field", "p", "--json")[1])["field_indexes"] == []


def test_index_field_over_http_and_the_client(tmp_path):
    from retrieval.client import Client

    ix = Indexer(f"sqlite:///{tmp_path / 'i.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
    try:
        _fill(ix)
        tc = TestClient(create_app(ix))
        r = tc.put("/collections/c/field-indexes", json={"field": "year", "type": "integer"})
        assert r.status_code == 200 and r.json()["created"] and r.json()["points"] == 18
        assert tc.get("/collections/c/field-indexes").json() == [
            {"field": "year", "type": "integer", "points": 18, "linked": True}
        ]
        assert tc.put("/collections/c/field-indexes", json={"field": "year", "type": "keyword"}).status_code == 409
        for body, code in [
            ({"field": "image_info_gain"}, 400),
            ({"field": "cat", "type": "nope"}, 422),
            ({"field": ""}, 422),
            ({"field": 3}, 422),
            ({"field": "cat", "extra": 1}, 422),
            ({"field": "tags["}, 400),
        ]:
            assert tc.put("/collections/c/field-indexes", json=body).status_code == code, body
        assert tc.put("/collections/missing/field-indexes", json={"field": "cat"}).status_code == 404

        def relay(req: httpx.Request) -> httpx.Response:
            r = tc.request(
                req.method,
                str(req.url.copy_with(scheme="http", host="testserver")),
                content=req.content,
                headers=req.headers,
            )
            return httpx.Response(r.status_code, content=r.content, headers=r.headers)

        cl = Client("http://t", transport=httpx.MockTransport(relay))
        assert cl.index_field("c", "cat")["type"] == "keyword"
        assert [i["field"] for i in cl.field_indexes("c")] == ["cat", "year"]
        with pytest.raises(ConflictError):
            cl.index_field("c", "cat", "integer")
        assert cl.drop_field_index("c", "cat")["dropped"] is True
        assert tc.delete("/collections/c/field-indexes", params={"field": "year"}).json()["dropped"] is True
        assert cl.field_indexes("c") == []

        async def with_async() -> None:
            from retrieval.client import AsyncClient

            async with AsyncClient("http://t", transport=httpx.ASGITransport(app=create_app(ix))) as ac:
                assert (await ac.index_field("c", "cat"))["created"] is True
                assert [i["field"] for i in await ac.field_indexes("c")] == ["cat"]
                assert (await ac.drop_field_index("c", "cat"))["dropped"] is True

        asyncio.run(with_async())
    finally:
        ix.close()


def test_fields_indexed_at_creation_on_every_door(tmp_path, monkeypatch):
    """`create --index-field` / ``create_collection(field_indexes=…)`` / the POST body index the
    fields before any point; a bad one refuses the whole creation and leaves nothing behind."""
    ix = Indexer(f"sqlite:///{tmp_path / 'i.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
    try:
        made = ix.create_collection("a", dim=D, field_indexes={"year": "integer", "cat": "keyword"})
        assert [(i["field"], i["type"]) for i in ix.field_indexes("a")] == [("cat", "keyword"), ("year", "integer")]
        assert made.linked_fields == ix.collection("a").linked_fields == ("cat", "year")
        ix.index_field("a", "lang")  # no graph yet: linked too; dropping one unlinks it
        ix.drop_field_index("a", "cat")
        assert ix.collection("a").linked_fields == ("lang", "year")
        for bad, message in [({"cat": "nope"}, "one of keyword"), ({"image_info_gain": "float"}, "inforank owns")]:
            with pytest.raises(InvalidQueryError, match=message):
                ix.create_collection("b", dim=D, field_indexes=bad)
        with pytest.raises(InvalidQueryError, match="not a payload field path"):  # found by Qdrant itself
            ix.create_collection("b", dim=D, field_indexes={"ok": "keyword", "tags[": "keyword"})
        assert [c.name for c in ix.collections()] == ["a"] and not ix.store.exists("b")
        ix.create_collection("b", dim=D)  # the name is free again
        tc = TestClient(create_app(ix))
        r = tc.post("/collections", json={"name": "h", "dim": D, "field_indexes": {"lang": "keyword"}})
        assert r.status_code == 201 and r.json()["field_indexes"] == [
            {"field": "lang", "type": "keyword", "points": 0, "linked": True}
        ]
        assert tc.post("/collections", json={"name": "h2", "dim": D, "field_indexes": {"x": "text"}}).status_code == 422
        assert (
            tc.post("/collections", json={"name": "h2", "dim": D, "field_indexes": {"": "keyword"}}).status_code == 400
        )
        assert tc.get("/collections/h2").status_code == 404
    finally:
        ix.close()
    monkeypatch.setenv("INFORANK_DATA_DIR", str(tmp_path / "data"))
    code, out = run("create", "p", "--dim", str(D), "--index-field", "cat", "--index-field", "year:integer")
    assert code == 0 and "cat indexed as keyword, year indexed as integer" in out
    code, out = run("create", "p2", "--dim", str(D), "--index-field", "year:int")
    assert code == 2 and "one of keyword" in out and "Traceback" not in out
    assert "p2" not in run("collections", "--json")[1]


def test_filter_keys_reads_every_nesting():
    from retrieval.search import filter_keys

    f = {
        "must": [{"key": "a", "match": {"value": "x"}}, {"should": [{"key": "b.c", "range": {"gte": 1}}]}],
        "must_not": [{"is_empty": {"key": "d"}}, {"has_id": [1, 2]}],
        "min_should": {"conditions": [{"key": "e", "match": {"any": ["k"]}}], "min_count": 1},
        "should": {"nested": {"key": "f", "filter": {"must": [{"key": "g", "match": {"value": 1}}]}}},
    }
    assert filter_keys(f) == {"a", "b.c", "d", "e", "f", "g"}
    assert filter_keys(None) == set() and filter_keys({"must": []}) == set()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_junk_index_requests_change_nothing_on_either_database(request, tmp_path, db):
    """Junk on every field-index door of the library (creation included), on SQLite and
    PostgreSQL: each refused with a clear error, and afterwards SQL, Qdrant and the statistics
    agree, the recorded links are untouched, and no half-made collection is left."""
    url = request.getfixturevalue("pg_url") if db == "postgres" else f"sqlite:///{tmp_path / 'i.sqlite'}"
    ix = Indexer(url, QdrantLocation(edge_path=str(tmp_path / "q")))
    try:
        _fill(ix)
        ix.index_field("c", "cat")
        junk = [("", "keyword"), ("bad\ud800", "keyword"), ("nul\x00", "keyword"), ("x" * 300, "keyword")]
        junk += [("image_conformity", "float"), ("cat", "nope"), ("tags[", "keyword"), (None, "keyword")]
        for field, kind in junk:
            with pytest.raises(InvalidQueryError):
                ix.index_field("c", field, kind)
            with pytest.raises(InvalidQueryError):
                ix.create_collection("d", dim=D, field_indexes={"ok": "keyword", field: kind})
        with pytest.raises(ConflictError):
            ix.index_field("c", "cat", "integer")
        assert [c.name for c in ix.collections()] == ["c"] and not ix.store.exists("d")
        assert ix.collection("c").linked_fields == ("cat",)
        assert [(i["field"], i["type"]) for i in ix.field_indexes("c")] == [("cat", "keyword")]
        assert_consistent(ix, "c")
    finally:
        ix.close()
