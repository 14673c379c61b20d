"""Property test: random JSON-able junk through ingest and search, over HTTP and the CLI, on
SQLite and PostgreSQL. Never a 500 or a traceback; afterwards SQL, Qdrant and the statistics agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from indexer.api import Indexer
from indexer.store import QdrantLocation
from retrieval.cli import app
from retrieval.service import create_app
from tests.consistency import assert_consistent

D = 4
runner = CliRunner()

text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["", " ", "a\x00b", "\ud800", "漢" * 90, "image_info_gain", "inforank_x"]
)
number = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e300, -1e300, 0.0, 1e-310])
)
scalar = st.none() | st.booleans() | number | text
json_value = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=12
)
vector = (
    st.lists(number, min_size=D, max_size=D)
    | st.lists(st.floats(-10, 10), min_size=D, max_size=D)
    | st.lists(st.floats(-10, 10), min_size=0, max_size=6)
    | json_value
)
item = st.fixed_dictionaries(
    {},
    optional={
        "id": json_value | text | st.integers(-(2**65), 2**65),
        "image": vector,
        "text": vector,
        "metadata": json_value | st.dictionaries(text, json_value, max_size=4),
        "hashes": st.dictionaries(st.sampled_from(["image", "text", "audio"]), json_value, max_size=2),
        "sources": st.dictionaries(st.sampled_from(["image", "text"]), json_value, max_size=2),
        "junk": json_value,
    },
)
#: items the HTTP schema accepts, with junk in every value the stores will see
valid_item = st.fixed_dictionaries(
    {"image": st.lists(number, min_size=D, max_size=D) | st.lists(st.floats(-10, 10), min_size=D, max_size=D)},
    optional={
        "id": text | st.integers(-(2**65), 2**65),
        "text": st.lists(st.floats(-10, 10), min_size=D, max_size=D),
        "metadata": st.dictionaries(text, json_value, max_size=4),
        "hashes": st.dictionaries(st.just("image"), text, max_size=1),
        "sources": st.dictionaries(st.sampled_from(["image", "text"]), text, max_size=2),
    },
)
search_body = st.fixed_dictionaries(
    {"vector": vector},
    optional={
        "k": json_value,
        "modality": st.sampled_from(["image", "text", "all", "audio"]) | json_value,
        "min_info_gain": number | json_value,
        "max_conformity": number,
        "exclude_bottom_info_gain_pct": number,
        "filter": json_value | st.fixed_dictionaries({"must": st.lists(st.dictionaries(text, json_value), max_size=2)}),
        "rerank_info_gain": number,
        "depth": json_value,
        "oops": json_value,
    },
)


def _dumps(x) -> bytes:
    return json.dumps(x, allow_nan=True).encode("utf-8", "surrogatepass")


def _post(tc: TestClient, path: str, body) -> Any:
    """POST any JSON-able junk (NaN, lone surrogates included) as the body, byte for byte."""
    return tc.post(path, content=_dumps(body), headers={"content-type": "application/json"})


def _no_traceback(r: Result, codes: tuple[int, ...] = (0, 1, 2)) -> None:
    """A CLI run ended with one of ``codes`` and a message, not an exception's traceback."""
    assert r.exit_code in codes and (r.exception is None or isinstance(r.exception, SystemExit)), r.output


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'junk.sqlite'}"


def test_http_junk_never_500_and_stores_agree(db_url: str, tmp_path: Path):
    ix = Indexer(db_url, QdrantLocation(edge_path=str(tmp_path / "edge")))
    ix.create_collection("c", dim=D, min_count=2)
    tc = TestClient(create_app(ix), raise_server_exceptions=False)
    rng = np.random.default_rng(0)
    good = [
        {"id": f"g{i}", "image": rng.normal(size=D).tolist(), "text": rng.normal(size=D).tolist()} for i in range(6)
    ]
    assert tc.post("/collections/c/items", json={"items": good}).status_code == 200

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(items=st.lists(item, max_size=2) | st.lists(valid_item, max_size=5), search=search_body)
    def junk(items, search):
        r = _post(tc, "/collections/c/items", {"items": items})
        assert r.status_code < 500, r.text
        r = _post(tc, "/collections/c/search", search)
        assert r.status_code < 500, (search, r.text)

    try:
        junk()
        assert_consistent(ix, "c")
    finally:
        ix.close()


def test_cli_junk_never_a_traceback_and_stores_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert runner.invoke(app, ["create", "c", "--dim", str(D), "--min-count", "2"]).exit_code == 0
    n = 0

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        records=st.lists(
            st.fixed_dictionaries({}, optional={"id": json_value, "vector": vector, "metadata": json_value}), max_size=4
        ),
        flt=json_value,
    )
    def junk(records, flt):
        nonlocal n
        n += 1
        f = tmp_path / f"junk{n}.jsonl"
        f.write_bytes(b"\n".join(_dumps(r) for r in records) + b"\n{bad json\n")
        r = runner.invoke(app, ["ingest", "c", "--vectors", str(f), "--modality", "image", "--json"])
        _no_traceback(r)
        q = tmp_path / "q.npy"
        np.save(q, np.ones(D))
        r = runner.invoke(app, ["search", "c", "--vector", str(q), "--modality", "image", "--filter", json.dumps(flt)])
        _no_traceback(r, (0, 2))

    junk()
    from indexer.settings import Settings

    s = Settings()
    ix = Indexer(s.db_url(), s.qdrant())
    try:
        assert_consistent(ix, "c")
    finally:
        ix.close()


#: a bank of query vectors, with junk where the stores and the numpy fit will see it
bank = st.lists(st.lists(number, min_size=D, max_size=D) | st.lists(st.floats(-10, 10), max_size=6), max_size=5)
#: labelled queries as `evaluate --queries` and the HTTP body take them
labelled = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "vector": vector,
            "text": text | json_value,
            "relevant": st.lists(json_value | text, max_size=3) | json_value,
            "modality": st.sampled_from(["image", "text", "all"]) | json_value,
            "target": st.sampled_from(["image", "text", "all"]) | json_value,
            "oops": json_value,
        },
    ),
    max_size=4,
)


def _pairs_collection(ix: Indexer, n: int = 30) -> None:
    from indexer.items import Item

    rng = np.random.default_rng(1)
    ix.create_collection("c", dim=D, min_count=2)
    ix.add("c", [Item({"image": rng.normal(size=D), "text": rng.normal(size=D)}, id=f"p{i}") for i in range(n)])


def test_http_junk_banks_and_labelled_queries_never_500(db_url: str, tmp_path: Path):
    """`POST …/hubness` with a junk bank, k and β, and `POST …/evaluate` with junk labelled
    queries: a 4xx (or a fit), never a 500; the stores still agree afterwards."""
    ix = Indexer(db_url, QdrantLocation(edge_path=str(tmp_path / "edge")))
    _pairs_collection(ix)
    tc = TestClient(create_app(ix), raise_server_exceptions=False)
    ragged = tc.post("/collections/c/hubness", json={"bank": [[0, 0, 0, 0], []]})  # found by this test once
    assert ragged.status_code == 400 and "bank" in ragged.text.lower(), ragged.text

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        fit=st.fixed_dictionaries(
            {},
            optional={
                "bank": bank | json_value,
                "bank_modality": st.sampled_from(["image", "text"]) | json_value,
                "k": json_value | st.integers(-3, 50),
                "beta": number | json_value,
            },
        ),
        queries=labelled,
        folds=json_value | st.integers(-1, 30),
    )
    def junk(fit, queries, folds):
        r = _post(tc, "/collections/c/hubness", fit)
        assert r.status_code < 500, (fit, r.text)
        body = {"queries": queries, "folds": folds, "max_queries": 20}
        r = _post(tc, "/collections/c/evaluate", body)
        assert r.status_code < 500, (body, r.text)

    try:
        junk()
        assert_consistent(ix, "c")
    finally:
        ix.close()


def test_cli_junk_banks_and_labelled_queries_never_a_traceback(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`hubness fit --bank FILE` with junk arrays and `evaluate --queries FILE` with junk lines:
    exit 0, 1 or 2 with a message, never a traceback."""
    from indexer.settings import Settings

    monkeypatch.setenv("INFORANK_DATABASE_URL", db_url)

    s = Settings()
    ix = Indexer(s.db_url(), s.qdrant())
    try:
        _pairs_collection(ix)
    finally:
        ix.close()
    n = 0
    arrays = st.sampled_from(
        [
            np.full((3, D), np.nan),
            np.full((2, D), 1e300),
            np.zeros((4, D)),
            np.ones((2, D + 1)),
            np.ones(D),
            np.empty((0, D)),
            np.array([["a"] * D]),
            np.ones((3, D), dtype=np.float16),
        ]
    )

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(arr=arrays, queries=labelled, raw=st.binary(max_size=40))
    def junk(arr, queries, raw):
        nonlocal n
        n += 1
        b = tmp_path / f"bank{n}.npy"
        np.save(b, arr)
        r = runner.invoke(app, ["hubness", "fit", "c", "--bank", str(b), "--k", "2", "--beta", "0.5"])
        _no_traceback(r)
        b.write_bytes(raw)  # not an array at all
        r = runner.invoke(app, ["hubness", "fit", "c", "--bank", str(b)])
        _no_traceback(r, (1, 2))
        q = tmp_path / f"q{n}.jsonl"
        q.write_bytes(b"\n".join(_dumps(x) for x in queries) + b"\n" + raw)
        r = runner.invoke(app, ["evaluate", "c", "--queries", str(q), "--folds", "2"])
        _no_traceback(r)

    junk()
    ix = Indexer(s.db_url(), s.qdrant())
    try:
        assert_consistent(ix, "c")
    finally:
        ix.close()
