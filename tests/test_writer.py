"""The write path on both Qdrant backends: idempotent, incremental, exact, nothing half-written."""

import numpy as np
import pytest

from indexer.api import Indexer
from indexer.errors import ConflictError, NotFoundError
from indexer.items import Item
from indexer.moments import Moments
from indexer.vectors import normalise
from tests.conftest import ellipsoid_pairs

D = 16


def _pairs(n, seed=0):
    img, txt = ellipsoid_pairs(n, D, seed)
    return [Item({"image": img[i], "text": txt[i]}, id=f"p{i}", metadata={"g": i % 4}) for i in range(n)]


def _scratch(ix: Indexer, name: str, modality: str) -> Moments:
    _, unit, norms = ix.vectors(name, modality)
    return Moments.from_batch(unit.astype(np.float64), norms)


def _assert_exact(ix: Indexer, name: str) -> None:
    for m in ("image", "text"):
        _, got = ix.moments(name, m)
        want = _scratch(ix, name, m)
        assert got.n == want.n
        if want.n:
            assert np.max(np.abs(got.m2 - want.m2)) <= 1e-9 * np.max(np.abs(want.m2))
            assert np.max(np.abs(got.mean - want.mean)) <= 1e-9


def test_ingest_is_idempotent_and_exact(indexer: Indexer):
    indexer.create_collection("c", dim=D, min_count=8)
    items = _pairs(100)
    r1 = indexer.add("c", items, batch_size=30)
    assert len(r1.ingested) == 100 and r1.stats_version == 4
    r2 = indexer.add("c", items, batch_size=30)
    assert r2.ingested == [] and len(r2.unchanged) == 100
    assert indexer.collection("c").stats_version == 4  # re-ingest changes nothing
    assert indexer.store.count("c") == 100
    _assert_exact(indexer, "c")


def test_changed_content_replaces_its_contribution(indexer: Indexer):
    indexer.create_collection("c", dim=D, min_count=8)
    items = _pairs(40)
    indexer.add("c", items)
    new_img = np.random.default_rng(9).normal(size=D)
    indexer.add("c", [Item({"image": new_img}, id="p3")])
    _assert_exact(indexer, "c")
    _, unit, _ = indexer.vectors("c", "image", keys=['"p3"'])
    assert np.allclose(unit[0], normalise(new_img[None])[0])
    payload = indexer.item("c", "p3")
    assert payload is not None and "text_conformity" in payload  # the text stays
    assert payload["g"] == 3 and payload["inforank_id"] == "p3"


def test_other_modality_added_later_keeps_the_point(indexer: Indexer):
    indexer.create_collection("c", dim=D, min_count=4)
    img, txt = ellipsoid_pairs(10, D)
    indexer.add("c", [Item({"image": img[i]}, id=i, metadata={"a": 1}) for i in range(10)])
    p = indexer.item("c", 0)
    assert p is not None and "image_info_gain" not in p  # pending: no texts yet
    indexer.add("c", [Item({"text": txt[i]}, id=i, metadata={"b": 2}) for i in range(10)])
    p = indexer.item("c", 0)
    assert p is not None
    assert {"a", "b", "image_conformity", "image_info_gain", "text_info_gain"} <= set(p)
    assert p["image_stats_version"] == 2  # pending scores filled in when texts arrived
    hit = indexer.store.retrieve("c", [indexer_point(indexer, "c", 0)], with_vectors=True)[0]
    assert set(hit.vectors or {}) == {"image", "text"}


def indexer_point(ix: Indexer, name: str, uid):
    from indexer.items import item_key, point_id

    return point_id(name, item_key(uid))


def test_bad_items_are_rejected_and_good_ones_land(indexer: Indexer):
    indexer.create_collection("c", dim=D, min_count=4)
    good = _pairs(5)
    bad = [
        Item({"image": np.full(D, np.nan)}, id="nan"),
        Item({"image": np.zeros(D)}, id="zero"),
        Item({"image": np.ones(D + 1)}, id="dim"),
        Item({"audio": np.ones(D)}, id="mod"),
        Item({"image": np.ones(D)}, id="meta", metadata={"image_info_gain": 3}),
        Item({}, id="empty"),
        Item({"image": np.ones(D)}, id=True),  # type: ignore[arg-type]
    ]
    rep = indexer.add("c", good[:2] + bad + good[2:])
    assert len(rep.ingested) == 5
    reasons = {r.id: r.reason for r in rep.rejected}
    assert reasons == {
        "nan": "image vector: vector contains NaN or Inf",
        "zero": "image vector: zero vector has no direction",
        "dim": "image vector: wrong dimension 17, the collection expects 16",
        "mod": "collection 'c' has no 'audio' vectors",
        "meta": "metadata uses field names reserved by inforank: ['image_info_gain']",
        "empty": "item has no vector",
        True: "an id must be a string or an integer, got True",
    }
    assert indexer.moments("c", "image")[1].n == 5
    _assert_exact(indexer, "c")


def test_all_bad_batch_leaves_statistics_untouched(indexer: Indexer):
    indexer.create_collection("c", dim=D)
    indexer.add("c", _pairs(3))
    before = indexer.collection("c").stats_version
    rep = indexer.add("c", [Item({"image": np.full(D, np.inf)}, id="x")])
    assert rep.ingested == [] and len(rep.rejected) == 1
    assert indexer.collection("c").stats_version == before


def test_delete_removes_points_and_contribution(indexer: Indexer):
    indexer.create_collection("c", dim=D, min_count=4)
    indexer.add("c", _pairs(30))
    out = indexer.delete("c", ["p1", "p2", "nope"])
    assert (out["deleted"], out["missing"], out["replayed"]) == (["p1", "p2"], ["nope"], 0)
    assert indexer.store.count("c") == 28
    assert indexer.item("c", "p1") is None
    _assert_exact(indexer, "c")
    rep = indexer.add("c", _pairs(30)[:3])  # re-adding deleted ids brings them back
    assert rep.ingested == ["p1", "p2"] and rep.unchanged == ["p0"]
    assert indexer.store.count("c") == 30
    _assert_exact(indexer, "c")


def test_model_mismatch_and_unknown_collection(indexer: Indexer):
    indexer.create_collection("c", dim=D, model="ViT-B-32", pretrained="openai")
    with pytest.raises(ConflictError, match="holds vectors of model 'ViT-B-32:openai'"):
        indexer.add("c", _pairs(2), model=("ViT-B-16", "openai"))
    with pytest.raises(NotFoundError, match="Collection 'nope' does not exist"):
        indexer.add("nope", _pairs(2))
    with pytest.raises(ConflictError, match="already exists"):
        indexer.create_collection("c", dim=D)


def test_ids_keep_their_type(indexer: Indexer):
    indexer.create_collection("c", dim=D)
    img, _ = ellipsoid_pairs(2, D)
    indexer.add("c", [Item({"image": img[0]}, id=1), Item({"image": img[1]}, id="1")])
    assert indexer.item("c", 1)["inforank_id"] == 1  # type: ignore[index]
    assert indexer.item("c", "1")["inforank_id"] == "1"  # type: ignore[index]
    assert indexer.store.count("c") == 2


def _fresh_scores(ix: Indexer, name: str, m: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored and from-scratch scores of one modality (same item order), and the mean IG."""
    from indexer import scores
    from indexer.freshness import mean_info_gain

    c = ix.collection(name)
    st = ix.scores(name, m)
    _, unit, _ = ix.vectors(name, m)
    _, own = ix.moments(name, m)
    _, oth = ix.moments(name, "text" if m == "image" else "image")
    conf = scores.conformity(unit.astype(np.float64), own.mean, own.n)
    ig = scores.info_gain(unit, own.mean, oth.covariance, c.tau, dtype=np.float64)
    return np.abs(conf - st["conformity"]), np.abs(ig - st["info_gain"]), np.array(mean_info_gain(own, oth, c.tau))


def test_rescore_brings_stale_scores_within_tolerance(indexer: Indexer):
    indexer.auto_rescore = False  # stale on purpose
    indexer.create_collection("c", dim=D, min_count=4)
    indexer.add("c", _pairs(10))
    indexer.add("c", _pairs(200, seed=1)[10:])
    assert all(f["outside_tolerance"] for f in indexer.freshness("c").values())
    assert max(_fresh_scores(indexer, "c", "image")[0]) > 1e-3  # the 10 early pairs are stale
    rep = indexer.rescore("c")
    # the baseline is version 2: rows scored there are exact already, so only the 10 pairs scored at
    # version 1 are read, and they moved
    assert not rep.skipped and rep.checked == 20 and rep.rescored == 20
    assert not any(f["outside_tolerance"] for f in rep.freshness.values())
    for m in ("image", "text"):
        dc, dg, mean_ig = _fresh_scores(indexer, "c", m)
        assert dc.max() <= 1e-3 and dg.max() <= 0.01 * mean_ig
    assert indexer.rescore("c").skipped
    assert indexer.sync("c") == 0


def test_interrupted_rescore_resumes(indexer: Indexer):
    indexer.auto_rescore = False
    indexer.create_collection("c", dim=D, min_count=4)
    for k in range(4):  # four commits: early rows are scored with young statistics
        indexer.add("c", _pairs(200, seed=k)[k * 50 : (k + 1) * 50])
    calls = []

    def stop_after_first(n: int) -> None:
        calls.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        indexer.rescore("c", all=True, batch_size=64, progress=stop_after_first)
    assert calls == [64]
    # 300 rows were scored before the last commit (the baseline); 64 of them are checked
    fresh = indexer.freshness("c")
    assert fresh["image"]["unchecked_rows"] + fresh["text"]["unchecked_rows"] == 236
    rep = indexer.rescore("c", batch_size=64)  # continues the pass: the first 64 are not read again
    assert rep.checked == 236
    for m in ("image", "text"):
        dc, dg, mean_ig = _fresh_scores(indexer, "c", m)
        assert dc.max() <= 1e-3 and dg.max() <= 0.01 * mean_ig
    assert indexer.sync("c") == 0


def test_pending_rows_are_not_reloaded_while_still_uncomputable(indexer: Indexer, monkeypatch):
    """Images before any text: every batch stays pending, and writes must not rescan them."""
    from indexer import writer

    indexer.auto_rescore = False  # counts the pending fills alone
    indexer.create_collection("c", dim=D, min_count=8)
    img, txt = ellipsoid_pairs(60, D)
    scored: list[int] = []
    real = writer.rescore_rows
    monkeypatch.setattr(writer, "rescore_rows", lambda s, c, rows, *a: scored.append(len(rows)) or real(s, c, rows, *a))
    for k in range(6):
        indexer.add("c", [Item({"image": img[i]}, id=i) for i in range(k * 10, (k + 1) * 10)])
    assert scored == []  # no text yet: nothing to (re)score, nothing reloaded
    indexer.add("c", [Item({"text": txt[i]}, id=i) for i in range(8)])
    assert sum(scored) == 60  # the 60 pending images scored once (new texts are scored on write)
    assert np.isfinite(indexer.scores("c", "image")["info_gain"]).all()


def test_points_pushed_from_memory_equal_the_replay_from_the_database(indexer: Indexer):
    """New points are pushed from the write's own rows; a crash replays them from the database.
    Both must put the same vectors and payload into Qdrant."""
    from sqlalchemy import update

    from indexer.db.models import PointRow

    indexer.create_collection("c", dim=D, min_count=8)
    items = _pairs(40)
    items[0].metadata = {"tags": ("a", "b"), 7: "int key", "nested": {"x": [1, 2.5]}}
    items.append(Item({"image": np.arange(1.0, D + 1)}, id=9))  # an integer id, one modality
    indexer.add("c", items, batch_size=16)
    c = indexer.collection("c")
    ids = [indexer.item("c", it.id)["inforank_id"] for it in items]  # type: ignore[index]
    keys = sorted({str(h.id) for h in indexer.store.scroll(c.qdrant_collection, None, 100, False).points})
    pushed = {h.id: h for h in indexer.store.retrieve(c.qdrant_collection, keys, with_vectors=True)}
    with indexer.sessions.begin() as s:
        s.execute(update(PointRow).where(PointRow.collection_id == c.id).values(dirty=True))
    assert indexer.sync("c") == 41
    replayed = {h.id: h for h in indexer.store.retrieve(c.qdrant_collection, keys, with_vectors=True)}
    assert ids == [it.id for it in items] and len(pushed) == 41
    for k in keys:
        assert pushed[k].payload == replayed[k].payload
        a, b = pushed[k].vectors or {}, replayed[k].vectors or {}
        assert a.keys() == b.keys()
        for name in a:  # qdrant-client's local mode re-normalises on every upsert, at 1e-8
            assert np.allclose(a[name], b[name], rtol=0, atol=1e-7)
    assert pushed[keys[0]].payload.keys() >= {"inforank_id", "image_hash", "image_conformity"}
    first = indexer.item("c", "p0")
    assert first is not None and first["tags"] == ["a", "b"] and first["7"] == "int key"


#: tables that grow with the collection; a statement on the write or search path must reach
#: their rows through an index bounded by what it touches, never by the collection id alone
#: (``hub_pending`` is a queue the refresh drains: its rows are the work to do)
_GROWING = ("points", "item_vectors")


def test_writes_and_searches_read_no_more_rows_than_they_touch(tmp_path):
    """Every statement an add, a replacement, a delete, a sync round, a rescore (with the hubness
    refresh following the changes), the quarantine listing and filtered, reranked, mixed and
    hubness-corrected searches issue, explained by SQLite (the embedded
    default): none walks a growing table over the whole collection (a ``SCAN``, or an index other
    than a partial one searched by ``collection_id`` alone). The sync round's dirty-point query
    did, on every write, until migration 0008 (2.5 ms at 20k points, O(N)); a rescore pass's last
    batch and the unchecked-row count walked the checked-version index."""
    import re

    from sqlalchemy import event

    from indexer.store import QdrantLocation
    from retrieval import hubness
    from retrieval.options import SearchOptions
    from retrieval.search import Searcher

    ix = Indexer(f"sqlite:///{tmp_path / 'p.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
    try:
        ix.create_collection("c", dim=D, min_count=8)
        items = _pairs(300)
        ix.add("c", items[:250])
        hubness.fit(ix, "c", k=4, beta=0.5)  # writes now queue changes for the refresh to follow
        seen: list[tuple[str, object]] = []
        engine = ix.sessions.kw["bind"]

        @event.listens_for(engine, "before_cursor_execute")
        def _capture(conn, cursor, stmt, params, context, executemany):
            seen.append((stmt, params[0] if executemany and params else params))

        ix.add("c", items[250:])
        ix.add("c", [Item({"image": np.ones(D)}, id="p3")])  # a replaced vector
        ix.delete("c", ["p5", "p6"])
        ix.sync("c")
        ix.rescore("c", all=True)
        ix.quarantined("c")
        ix.freshness("c")  # with the count of unchecked rows
        s = Searcher(ix)
        q = items[7].vectors["text"]
        s.search("c", q, SearchOptions(k=5, exclude_bottom_info_gain_pct=5.0, rerank_info_gain=0.25))
        s.search("c", q, SearchOptions(k=5, modality="all"))
        s.search("c", q, SearchOptions(k=5, hubness=True))
        event.remove(engine, "before_cursor_execute", _capture)
        walks = []
        raw = engine.raw_connection()  # inforank's own SQL functions are registered on it
        try:
            explained = set()
            for stmt, params in seen:
                if stmt in explained or not stmt.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
                    continue
                explained.add(stmt)
                plan = raw.cursor().execute("EXPLAIN QUERY PLAN " + stmt, params or ()).fetchall()
                for row in plan:
                    detail = row[3]
                    table = re.match(r"(?:SCAN|SEARCH) (\w+)", detail)
                    # partial indexes: they hold the quarantined or the dirty points only
                    partial = "ix_points_quarantined" in detail or "ix_points_dirty" in detail
                    if (
                        table
                        and table.group(1) in _GROWING
                        and not partial
                        and (detail.startswith("SCAN") or detail.endswith("(collection_id=?)"))
                    ):
                        walks.append((" ".join(stmt.split())[:160], detail))
        finally:
            raw.close()
        assert len(explained) > 30  # the capture saw the paths above
        assert walks == [], "\n".join(map(str, walks))
    finally:
        ix.close()


def test_sqlite_checkpoints_its_wal_after_hundreds_of_megabytes_not_sixteen(tmp_path):
    """A bulk write into a large collection dirties pages all over the score index; SQLite's
    default checkpoint (every 1,000 pages, 16 MiB here) wrote them back after nearly every
    commit. Here commits of 24 MiB in all stay in the WAL."""
    from sqlalchemy import text

    from indexer.db.engine import SQLITE_WAL_BYTES, make_engine

    db = tmp_path / "w.sqlite"
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as c:
        page = c.exec_driver_sql("PRAGMA page_size").scalar_one()
        assert c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == SQLITE_WAL_BYTES // page
        assert c.exec_driver_sql("PRAGMA journal_size_limit").scalar_one() == SQLITE_WAL_BYTES
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (b BLOB)"))
    blob = bytes(1 << 20)
    for _ in range(24):  # 24 commits of 1 MiB: past the default's 16 MiB
        with engine.begin() as c:
            c.execute(text("INSERT INTO t VALUES (:b)"), {"b": blob})
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 20 * (1 << 20)  # not checkpointed (and reset) at 16 MiB
    engine.dispose()
