"""No poison pills: every value a store would refuse is rejected before it commits, with its
reason, and the good items of the same batch land; a point Qdrant refuses anyway is quarantined
instead of blocking the others. On SQLite and PostgreSQL, through the library, the CLI and HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from indexer.api import Indexer
from indexer.db.models import PointRow
from indexer.errors import InvalidQueryError
from indexer.items import Item
from indexer.store import QdrantLocation
from retrieval.cli import app
from retrieval.search import Searcher, SearchOptions
from retrieval.service import Limits, create_app
from tests.consistency import assert_consistent

D = 4
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

#: (what, item fields) that once committed and then failed the push, or failed the whole batch
#: on PostgreSQL; each must now be one rejected item with a reason containing the given text
POISON = [
    ("nan metadata", {"metadata": {"x": float("nan")}}, "only finite numbers"),
    ("inf nested metadata", {"metadata": {"a": [1, {"b": float("inf")}]}}, "only finite numbers"),
    ("surrogate in id", {"id": "bad\ud800id"}, "not valid Unicode"),
    ("surrogate in metadata", {"metadata": {"t": "x\udfffy"}}, "not valid Unicode"),
    ("surrogate in a metadata key", {"metadata": {"k\ud800": 1}}, "not valid Unicode"),
    ("NUL in metadata", {"metadata": {"t": "a\x00b"}}, "NUL character"),
    ("NUL in id", {"id": "a\x00b"}, "NUL character"),
    ("NUL in source", {"sources": {"image": "a\x00b"}}, "NUL character"),
    ("100 CJK characters of id", {"id": "漢" * 100}, "the id is too long"),
    ("65-character hash", {"hashes": {"image": "a" * 65}}, "content hash must be 1 to 64"),
    ("integer beyond 64 bits", {"metadata": {"big": 2**70}}, "64-bit range"),
    ("integer id beyond 64 bits", {"id": 2**64}, "64-bit range"),
    ("huge vector", {"vector": [1e300] * D}, "scale the vectors down"),
    ("object in metadata", {"metadata": {"o": object()}}, "JSON cannot hold"),
]


def _good(i: int) -> Item:
    rng = np.random.default_rng(i)
    return Item({"image": rng.normal(size=D) + 3}, id=f"good{i}", metadata={"i": i})


def _poison(fields: dict) -> Item:
    it = _good(999)
    it.id = fields.get("id", "poison")
    if "vector" in fields:
        it.vectors = {"image": np.array(fields["vector"])}
    it.metadata = fields.get("metadata", {})
    it.hashes = fields.get("hashes", {})
    it.sources = fields.get("sources", {})
    return it


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'bad.sqlite'}"


@pytest.fixture
def ix(db_url: str, tmp_path: Path):
    i = Indexer(db_url, QdrantLocation(edge_path=str(tmp_path / "edge")))
    i.create_collection("c", dim=D, min_count=2)
    yield i
    i.close()


@pytest.mark.parametrize(("what", "fields", "reason"), POISON, ids=[p[0] for p in POISON])
def test_poison_is_rejected_before_commit_and_good_items_land(ix: Indexer, what: str, fields: dict, reason: str):
    rep = ix.add("c", [_good(0), _poison(fields), _good(1)])
    assert rep.ingested == ["good0", "good1"], what
    assert [r.index for r in rep.rejected] == [1] and reason in rep.rejected[0].reason
    rep = ix.add("c", [_good(2)])  # the next write is not blocked by anything
    assert rep.ingested == ["good2"] and not rep.quarantined
    assert_consistent(ix, "c")
    assert ix.store.count("c") == 3


def test_the_issue_repro_ends_with_both_good_items_searchable(tmp_path: Path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"id":"ok","vector":[1,2,3,4]}\n{"id":"nm","vector":[1,2,3,5],"metadata":{"x":NaN}}\n')
    b = tmp_path / "b.jsonl"
    b.write_text('{"id":"ok2","vector":[4,3,2,1]}\n')
    assert runner.invoke(app, ["create", "c", "--dim", "4"]).exit_code == 0
    r = runner.invoke(app, ["ingest", "c", "--vectors", str(a), "--modality", "image", "--json"])
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["ingested"] == 1 and "only finite numbers" in out["rejected"][0]["reason"]
    r = runner.invoke(app, ["ingest", "c", "--vectors", str(b), "--modality", "image", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["ingested"] == 1
    q = tmp_path / "q.npy"
    np.save(q, np.array([1.0, 2, 3, 4]))
    r = runner.invoke(app, ["search", "c", "--vector", str(q), "--modality", "image", "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(h["id"] for h in json.loads(r.stdout)["results"]) == ["ok", "ok2"]


def _poison_committed_by_an_older_version(ix: Indexer, key: str) -> None:
    """What the wedge left in databases written before validation caught it: a committed, dirty
    point whose metadata Qdrant refuses. Only the database is touched; Qdrant never saw it."""
    c = ix.collection("c")
    with ix.sessions.begin() as s:
        s.execute(
            update(PointRow)
            .where(PointRow.collection_id == c.id, PointRow.item_key == key)
            .values(meta={"x": float("nan")}, dirty=True)
        )


@pytest.mark.parametrize("location", ["edge", "server"], indirect=True)  # local mode accepts NaN
def test_a_point_qdrant_refuses_is_quarantined_and_never_blocks_others(sqlite_url: str, location: QdrantLocation):
    ix = Indexer(sqlite_url, location)
    try:
        ix.create_collection("c", dim=D, min_count=2)
        ix.add("c", [_good(i) for i in range(6)])
        _poison_committed_by_an_older_version(ix, '"good3"')
        rep = ix.add("c", [_good(10), _good(11)])  # replays the poisoned point first: it must not block
        assert rep.ingested == ["good10", "good11"]
        assert [q.id for q in rep.quarantined] == ["good3"] and "Qdrant refused" in rep.quarantined[0].reason
        q = ix.quarantined("c")
        assert q["count"] == 1 and q["items"][0]["id"] == "good3"
        assert ix.stats("c")["quarantined"]["count"] == 1
        assert ix.sync("c") == 0  # not dirty: nothing to retry until the item is written again
        assert_consistent(ix, "c", quarantined=1)
        ix.delete("c", ["good3"])  # deleting it clears the quarantine
        assert ix.quarantined("c")["count"] == 0
        assert_consistent(ix, "c")
    finally:
        ix.close()


def test_rewriting_a_quarantined_item_retries_it(sqlite_url: str, tmp_path: Path):
    ix = Indexer(sqlite_url, QdrantLocation(edge_path=str(tmp_path / "e")))
    try:
        ix.create_collection("c", dim=D, min_count=2)
        ix.add("c", [_good(i) for i in range(4)])
        _poison_committed_by_an_older_version(ix, '"good1"')
        assert ix.sync("c") == 0 and ix.quarantined("c")["count"] == 1
        fixed = _good(1)
        fixed.vectors = {"image": fixed.vectors["image"] + 1}  # new content
        fixed.metadata = {"i": 1, "x": 0}  # metadata merges: the corrected value replaces the bad one
        rep = ix.add("c", [fixed])
        assert rep.ingested == ["good1"] and ix.quarantined("c")["count"] == 0
        assert_consistent(ix, "c")
    finally:
        ix.close()


def test_sync_and_stats_show_quarantined_points_in_the_cli(tmp_path: Path):
    assert runner.invoke(app, ["create", "c", "--dim", str(D), "--min-count", "2"]).exit_code == 0
    from indexer.settings import Settings

    s = Settings()
    ix = Indexer(s.db_url(), s.qdrant())
    ix.add("c", [_good(i) for i in range(3)])
    _poison_committed_by_an_older_version(ix, '"good0"')
    ix.close()
    r = runner.invoke(app, ["sync", "c"])
    assert r.exit_code == 0 and "1 quarantined" in r.stdout and "good0" in r.stdout
    r = runner.invoke(app, ["sync", "c", "--json"])
    assert json.loads(r.stdout)["quarantined"]["items"][0]["id"] == "good0"


def test_every_write_replays_what_a_crash_left_first(ix: Indexer):
    """rescore killed between its commit and its push left every point dirty; the rerun found
    nothing stale and pushed nothing. Now rescore, delete and ingest all replay first."""
    ix.add("c", [_good(i) for i in range(8)])
    c = ix.collection("c")
    with ix.sessions.begin() as s:  # as a killed rescore leaves it: committed scores, not pushed
        s.execute(update(PointRow).where(PointRow.collection_id == c.id).values(dirty=True))
    rep = ix.rescore("c")
    assert rep.replayed == 8
    assert_consistent(ix, "c")
    with ix.sessions.begin() as s:
        s.execute(update(PointRow).where(PointRow.collection_id == c.id).values(dirty=True))
    assert ix.delete("c", ["good0"])["replayed"] == 8
    assert_consistent(ix, "c")


def test_a_store_held_by_another_process_is_found_before_anything_is_written(tmp_path: Path):
    data = tmp_path / "data"
    env = {**os.environ, "INFORANK_DATA_DIR": str(data)}
    assert runner.invoke(app, ["create", "c", "--dim", str(D)], env=env).exit_code == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from indexer.settings import Settings\nfrom indexer.api import Indexer\n"
            "s = Settings(); ix = Indexer(s.db_url(), s.qdrant()); ix.store.claim('c')\n"
            "print('held', flush=True); time.sleep(60)",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        f = tmp_path / "v.jsonl"
        f.write_text('{"id":"a","vector":[1,2,3,4]}\n')
        r = runner.invoke(app, ["ingest", "c", "--vectors", str(f), "--modality", "image"], env=env)
        assert r.exit_code == 6
        assert f"in use by another process (pid {holder.pid})" in r.stderr
        assert "Nothing was written" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    after = Indexer(f"sqlite:///{data / 'inforank.sqlite'}", QdrantLocation(edge_path=str(data / "qdrant")))
    try:  # nothing at all was written for item a
        assert after.vectors("c", "image")[0] == [] and after.moments("c", "image")[1].n == 0
    finally:
        after.close()


BAD_FILTERS = [
    {"must": [{"is_empty": "x"}]},
    {"must": [{"key": "i", "range": {"gte": "abc"}}]},
    {"has_id": 5},
    {"must": [{"key": "i", "match": {"any": 5}}]},
    {"must": [{"key": "i", "range": {"gte": float("nan")}}]},
    {"must": [{"key": "i", "values_count": {"gt": 1}}]},
    [1, 2],
]


def test_malformed_filters_and_options_are_4xx_in_every_door(ix: Indexer, tmp_path: Path):
    ix.add("c", [_good(i) for i in range(10)])
    sr = Searcher(ix)
    tc = TestClient(create_app(ix))
    for f in BAD_FILTERS:
        with pytest.raises(InvalidQueryError):
            sr.search("c", [1, 2, 3, 4], SearchOptions(modality="image", filter=f))  # type: ignore[arg-type]
        body = json.dumps({"vector": [1, 2, 3, 4], "modality": "image", "filter": f}, allow_nan=True)
        r = tc.post("/collections/c/search", content=body, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), (f, r.status_code, r.text)
    for opt in ("min_info_gain", "max_conformity"):
        body = '{"vector":[1,2,3,4],"modality":"image","' + opt + '":NaN}'
        r = tc.post("/collections/c/search", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "finite" in r.json()["detail"]
    # a query of 1e300 is a direction like any other, not similarities of 0
    hits = sr.search("c", [1e300, 2e300, 3e300, 4e300], SearchOptions(modality="image", k=3)).results
    ref = sr.search("c", [1, 2, 3, 4], SearchOptions(modality="image", k=3)).results
    assert [h.id for h in hits] == [h.id for h in ref] and hits[0].similarity == pytest.approx(ref[0].similarity)


def test_cli_bad_filters_are_one_line_errors(tmp_path: Path):
    assert runner.invoke(app, ["create", "c", "--dim", str(D)]).exit_code == 0
    q = tmp_path / "q.npy"
    np.save(q, np.ones(D))
    for f in BAD_FILTERS[:4]:
        r = runner.invoke(app, ["search", "c", "--vector", str(q), "--modality", "image", "--filter", json.dumps(f)])
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert r.stderr.startswith("error: The payload filter is not a valid Qdrant filter")


def test_http_types_are_strict_and_unknown_fields_are_named(ix: Indexer):
    tc = TestClient(create_app(ix))
    base = {"image": [1, 2, 3, 4]}
    assert tc.post("/collections/c/items", json={"items": [{**base, "id": 1}]}).status_code == 200
    for bad_id in (True, 1.0):
        r = tc.post("/collections/c/items", json={"items": [{**base, "id": bad_id, "image": [4, 3, 2, 1]}]})
        assert r.status_code == 422, bad_id
    assert ix.stats("c")["modalities"]["image"]["count"] == 1  # item 1 was not overwritten
    r = tc.post("/collections/c/items", json={"items": [{**base, "id": 2, "metdata": {}}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "metdata"
    r = tc.post("/collections/c/search", json={"vector": [1, 2, 3, 4], "exclude_bottom_pct": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "exclude_bottom_pct"
    r = tc.post("/collections", json={"name": "huge", "dim": 65536})
    assert r.status_code == 422
    r = tc.post("/collections", json={"name": "z", "dim": 4, "min_count": 0})
    assert r.status_code == 422


def test_a_chunked_body_is_held_to_the_limit(ix: Indexer):
    tc = TestClient(create_app(ix, limits=Limits(max_body_bytes=50_000)))
    item = json.dumps({"id": "x", "image": [1, 2, 3, 4], "metadata": {"pad": "p" * 1000}})

    def chunks():  # no Content-Length: the size is only known from the bytes read
        yield b'{"items": ['
        for i in range(100):
            yield (item.replace('"x"', f'"x{i}"') + ",").encode()
        yield item.encode() + b"]}"

    r = tc.post("/collections/c/items", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert ix.stats("c")["modalities"]["image"]["count"] == 0


def test_the_cli_gives_one_line_reasons_for_unreadable_files(tmp_path: Path):
    assert runner.invoke(app, ["create", "c", "--dim", str(D)]).exit_code == 0
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    np.savez(tmp_path / "t.npz", vectors=np.random.rand(50, D))
    full = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(full[: len(full) // 2])
    (tmp_path / "trunc.parquet").write_bytes(b"PAR1" + b"\x00" * 20)
    cases = {
        "empty.npy": "is empty (0 bytes)",
        "s.npy": "not real numbers",
        "trunc.npz": "not a readable .npy/.npz array",
        "trunc.parquet": "not a readable parquet file",
    }
    for name, why in cases.items():
        r = runner.invoke(app, ["ingest", "c", "--vectors", str(tmp_path / name), "--modality", "image"])
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (name, r.output)
        assert why in r.stderr and "Traceback" not in r.output
    ok = tmp_path / "ok.npy"
    np.save(ok, np.random.rand(3, D))
    r = runner.invoke(app, ["ingest", "c", "--vectors", str(ok), "--modality", "image", "--ids", "nope.txt"])
    assert r.exit_code == 2 and "Cannot read the ids file" in r.stderr
    for q, why in (("missing.npy", "Cannot read"), ("empty.npy", "is empty"), ("ok.npy", "one 1-D vector")):
        r = runner.invoke(app, ["search", "c", "--vector", str(tmp_path / q)])
        assert r.exit_code == 2 and why in r.stderr, (q, r.output)
    for args, why in ((["--tau", "nan"], "tau"), (["--min-count", "0"], "min_count"), (["--dim", "65536"], "4096")):
        r = runner.invoke(app, ["create", "d", *([] if "--dim" in args else ["--dim", "4"]), *args])
        assert r.exit_code == 2 and why in r.stderr, (args, r.output)


def test_a_line_that_is_not_utf8_loses_only_itself(tmp_path: Path):
    assert runner.invoke(app, ["create", "c", "--dim", str(D)]).exit_code == 0
    f = tmp_path / "v.jsonl"
    f.write_bytes(
        b'{"id":"a","vector":[1,2,3,4]}\n{"id":"b","vector":[1,2,3,5],"metadata":{"x":"\xff\xfe"}}\n'
        b'{"id":"c","vector":[1,2,4,4]}\n'
    )
    r = runner.invoke(app, ["ingest", "c", "--vectors", str(f), "--modality", "image", "--json"])
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["ingested"] == 2
    assert out["rejected"] == [{"index": 1, "id": None, "reason": "line 2: not UTF-8 text"}]


def test_held_store_is_reported_by_the_library_too(tmp_path: Path):
    loc = QdrantLocation(edge_path=str(tmp_path / "e"))
    a = Indexer(f"sqlite:///{tmp_path / 'a.sqlite'}", loc)
    a.create_collection("c", dim=D)
    script = (
        "from indexer.store import QdrantLocation, open_store\n"
        f"s = open_store(QdrantLocation(edge_path={str(tmp_path / 'e')!r}))\n"
        "from indexer.errors import StoreBusyError\n"
        "try:\n    s.claim('c')\nexcept StoreBusyError as e:\n    print(e)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert f"pid {os.getpid()}" in out.stdout, out.stderr
    finally:
        a.close()
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout == "" and out.returncode == 0 and time.monotonic() - start < 60  # released on close


def test_send_each_narrows_a_refusal_down_to_the_bad_items():
    from indexer.errors import PointRefusedError
    from indexer.store.base import send_each

    sent: list[list[int]] = []
    calls = 0

    def send(batch):
        nonlocal calls
        calls += 1
        if {13, 77} & set(batch):
            raise PointRefusedError(f"refused {sorted({13, 77} & set(batch))}")
        sent.append(list(batch))

    refused = send_each(send, list(range(100)), str)
    assert refused == {"13": "refused [13]", "77": "refused [77]"}
    assert sorted(x for b in sent for x in b) == [i for i in range(100) if i not in (13, 77)]
    assert calls <= 2 * 2 * 7 + 1  # about log2(n) requests per bad item, not n


@pytest.mark.postgres
def test_a_database_failure_never_shows_sql_or_parameters(pg_url: str, tmp_path: Path):
    import psycopg

    from indexer.errors import StorageError

    ix = Indexer(pg_url, QdrantLocation(edge_path=str(tmp_path / "e")))
    try:
        ix.create_collection("c", dim=D)
        with psycopg.connect(pg_url, autocommit=True) as conn:  # the database loses a table under us
            conn.execute("ALTER TABLE item_vectors RENAME TO item_vectors_gone")
        secret = Item({"image": np.array([1.0, 2, 3, 4])}, id="secret-id-7", metadata={"token": "s3cr3t"})
        with pytest.raises(StorageError) as err:
            ix.add("c", [secret])
        msg = str(err.value)
        assert "UndefinedTable" in msg and "Retry" in msg
        assert "SELECT" not in msg and "secret-id-7" not in msg and "s3cr3t" not in msg and "[SQL" not in msg
        with pytest.raises(StorageError) as err:
            ix.stats("c")
        assert "SELECT" not in str(err.value)
    finally:
        ix.close()
