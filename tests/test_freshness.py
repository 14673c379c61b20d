"""Scores that stay true while data keeps arriving: the freshness bound is a real bound, writes
keep scores within tolerance by themselves, rescoring touches payloads only and costs O(N)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from indexer import scores, writer
from indexer.api import Indexer
from indexer.freshness import BUDGET, mean_info_gain
from indexer.items import Item
from indexer.store import QdrantLocation
from retrieval.cli import app
from retrieval.search import Searcher, SearchOptions
from retrieval.service import create_app
from tests.conftest import COCO, ellipsoid_pairs
from tests.consistency import assert_consistent

runner = CliRunner()


@pytest.fixture(scope="module")
def coco() -> tuple[np.ndarray, np.ndarray]:
    f = np.load(COCO).astype(np.float64)
    return f[0], f[1]


def errors_now(ix: Indexer, name: str, m: str) -> tuple[float, float, float]:
    """Largest |stored − from scratch| of conformity and information gain, and the mean IG."""
    c = ix.collection(name)
    st = ix.scores(name, m)  # ordered by item key, as the vectors below
    _, unit, _ = ix.vectors(name, m)
    _, own = ix.moments(name, m)
    _, oth = ix.moments(name, "text" if m == "image" else "image")
    u = unit.astype(np.float64)
    # conformity from its definition (mean cosine to the rest), not from the running mean
    conf = ((u @ u.T).sum(axis=1) - 1.0) / (len(u) - 1) if len(u) > 1 else np.full(len(u), np.nan)
    ok = np.isfinite(st["conformity"])
    dc = float(np.max(np.abs(conf[ok] - st["conformity"][ok]))) if ok.any() else 0.0
    dg = 0.0
    if oth.n >= c.min_count:
        ig = scores.info_gain(unit, own.mean, oth.covariance, c.tau, dtype=np.float64)
        okg = np.isfinite(st["info_gain"])
        dg = float(np.max(np.abs(ig[okg] - st["info_gain"][okg]))) if okg.any() else 0.0
    return dc, dg, mean_info_gain(own, oth, c.tau)


def assert_within_tolerance(ix: Indexer, name: str) -> None:
    c = ix.collection(name)
    for m in c.modalities:
        dc, dg, mean_ig = errors_now(ix, name, m)
        assert dc <= c.tol_conformity, (m, dc)
        assert dg <= c.tol_info_gain * mean_ig, (m, dg / mean_ig)


@pytest.fixture
def ix(tmp_path: Path):
    i = Indexer(f"sqlite:///{tmp_path / 'f.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "e")))
    yield i
    i.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ix_both(request: pytest.FixtureRequest, tmp_path: Path):
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'f.sqlite'}"
    i = Indexer(url, QdrantLocation(edge_path=str(tmp_path / "e")))
    yield i
    i.close()


def test_the_bound_holds_for_every_stored_score(ix_both: Indexer, coco):
    """With no rescoring at all, after every write (adds, replacements, deletes, interleaved
    modalities) the largest true error is at most the bound the collection states."""
    ix = ix_both
    img, txt = coco
    ix.auto_rescore = False
    ix.create_collection("c", dim=512)
    rng = np.random.default_rng(0)
    order = rng.permutation(500)
    pos = 0
    for step in range(14):
        size = int(rng.integers(10, 60))
        ids = order[pos : pos + size]
        pos += size
        m = "image" if step % 3 else "text"
        ix.add("c", [Item({m: (img if m == "image" else txt)[i]}, id=int(i)) for i in ids])
        if step == 6:  # replace some images with other content, delete a few items
            ix.add("c", [Item({"image": img[(i + 1) % 500]}, id=int(i)) for i in order[:20]])
            ix.delete("c", [int(i) for i in order[20:30]])
        fresh = ix.freshness("c")
        for mod in ("image", "text"):
            f = fresh[mod]
            if f.get("bound") is None:
                continue
            dc, dg, _ = errors_now(ix, "c", mod)
            assert dc <= f["bound"]["conformity"] + 1e-12, (step, mod, dc, f["bound"])
            assert dg <= f["bound"]["info_gain"] + 1e-12, (step, mod, dg, f["bound"])
    assert any(f["outside_tolerance"] for f in ix.freshness("c").values())  # stale, and it says so
    rep = ix.rescore("c")
    assert not rep.skipped and not any(f["outside_tolerance"] for f in rep.freshness.values())
    assert_within_tolerance(ix, "c")
    assert_consistent(ix, "c")


def test_many_small_batches_over_the_cli_end_within_tolerance(tmp_path: Path, coco):
    img, txt = coco
    assert runner.invoke(app, ["create", "c", "--dim", "512"]).exit_code == 0
    for start in range(0, 300, 25):  # a live stream: image and text batches interleaved
        for m, x in (("image", img), ("text", txt)):
            f = tmp_path / f"{m}{start}.jsonl"
            f.write_text("\n".join(json.dumps({"id": i, "vector": x[i].tolist()}) for i in range(start, start + 25)))
            r = runner.invoke(app, ["ingest", "c", "--vectors", str(f), "--modality", m])
            assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["stats", "c", "--json"])
    st = json.loads(r.stdout)
    assert not any(st["modalities"][m]["freshness"]["outside_tolerance"] for m in ("image", "text"))
    assert all(st["modalities"][m]["freshness"]["sampled_share_outside_tolerance"] == 0 for m in ("image", "text"))
    from indexer.settings import Settings

    s = Settings()
    ix = Indexer(s.db_url(), s.qdrant())
    try:
        assert_within_tolerance(ix, "c")
        assert_consistent(ix, "c")
    finally:
        ix.close()


def test_many_small_http_batches_end_within_tolerance(ix_both: Indexer, coco):
    ix = ix_both
    img, txt = coco
    tc = TestClient(create_app(ix))
    assert tc.post("/collections", json={"name": "c", "dim": 512}).status_code == 201
    for start in range(0, 300, 15):
        for m, x in (("image", img), ("text", txt)):
            items = [{"id": i, m: x[i].tolist()} for i in range(start, start + 15)]
            r = tc.post("/collections/c/items", json={"items": items})
            assert r.status_code == 200 and not r.json()["rescore_due"]
    assert_within_tolerance(ix, "c")
    res = tc.post("/collections/c/search", json={"vector": txt[0].tolist(), "k": 3}).json()
    assert res["applied"]["freshness"]["image"]["within_tolerance"] is True
    assert_consistent(ix, "c")


def test_a_single_modality_collection_keeps_conformity_fresh(ix: Indexer, coco):
    """Texts only: information gain never applies, conformity must still be kept and rescored."""
    _, txt = coco
    ix.create_collection("t", dim=512)
    for start in range(0, 500, 50):
        ix.add("t", [Item({"text": txt[i]}, id=i) for i in range(start, start + 50)])
    assert_within_tolerance(ix, "t")
    assert ix.freshness("t")["text"]["bound"]["conformity"] <= 1e-3
    ix.auto_rescore = False
    ix.add("t", [Item({"text": txt[i] * 1.0 + 0.5 * txt[(i + 7) % 500]}, id=f"x{i}") for i in range(300)])
    assert errors_now(ix, "t", "text")[0] > 1e-3  # stale now
    rep = ix.rescore("t", all=True)
    assert rep.rescored > 0
    assert_within_tolerance(ix, "t")
    from indexer.validate import validate

    out = validate(ix, "t", sample=100)
    assert out["modalities"]["text"]["conformity_fresh"] and "faithful" in out["verdict"]


def test_a_write_of_many_batches_rescores_once_at_its_end(ix: Indexer, coco):
    """One call, many batches: the policy runs once the last batch is in (a rescore after each
    batch would redo the rows the next one moves again), and the call returns within tolerance."""
    img, txt = coco
    ix.create_collection("c", dim=512)
    passes: list[str] = []
    real = ix.rescore

    def counted(name: str, **kw):
        passes.append(name)
        return real(name, **kw)

    ix.rescore = counted  # type: ignore[method-assign]
    rep = ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(400)], batch_size=25)
    assert passes == ["c"] and rep.rescored > 0 and not rep.rescore_due
    assert_within_tolerance(ix, "c")
    assert_consistent(ix, "c")


def test_the_ingest_command_says_what_the_policy_did(tmp_path: Path, coco):
    """`inforank ingest` reports the scores it kept fresh, and says when a rescore is due and
    what to run (it used to say nothing either way)."""
    from retrieval.backend import LocalBackend
    from retrieval.cli.write import _ingest_text

    img, txt = coco
    pairs = [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(300)]
    for limit, due in ((20_000, False), (0, True)):
        ix = Indexer(
            f"sqlite:///{tmp_path / f'{limit}.sqlite'}",
            QdrantLocation(edge_path=str(tmp_path / f"e{limit}")),
            rescore_inline_limit=limit,
        )
        try:
            ix.create_collection("c", dim=512)
            b = LocalBackend(ix)
            b.ingest("c", pairs[:100], batch_size=50, progress=lambda n: None, encoded=False)
            out = b.ingest("c", pairs[100:], batch_size=50, progress=lambda n: None, encoded=False)
            text = _ingest_text(out)
            assert out["rescore_due"] is due
            if due:
                assert out["rescored"] == 0 and "run `inforank rescore c`" in text
            else:
                assert out["rescored"] > 0 and f"rewrote {out['rescored']} stored scores" in text
                assert_within_tolerance(ix, "c")
        finally:
            ix.close()


def test_the_ingest_command_leaves_scores_fresh(tmp_path: Path, coco, monkeypatch: pytest.MonkeyPatch):
    """A CLI ingest whose growth moved the stored scores past their tolerance, beyond what a write
    rescores inside itself, rescores before it returns (nothing else can write to an embedded
    store meanwhile); `--no-rescore` leaves it due and says what to run."""
    monkeypatch.setattr(Indexer, "RESCORE_INLINE_LIMIT", 0)  # every due rescore is too large for a write
    img, txt = coco
    assert runner.invoke(app, ["create", "c", "--dim", "512"]).exit_code == 0
    for start, stop, flag in ((0, 100, "--no-rescore"), (100, 300, "--rescore")):
        files = []
        for m, x in (("image", img), ("text", txt)):
            f = tmp_path / f"{m}{start}.jsonl"
            f.write_text("\n".join(json.dumps({"id": i, "vector": x[i].tolist()}) for i in range(start, stop)))
            files.append((m, f))
        outs = [runner.invoke(app, ["ingest", "c", "--vectors", str(f), "--modality", m, flag]) for m, f in files]
        assert all(r.exit_code == 0 for r in outs), [r.output for r in outs]
        if flag == "--no-rescore":
            assert "run `inforank rescore c`" in outs[-1].stdout
    last = json.loads(
        runner.invoke(app, ["ingest", "c", "--vectors", str(files[0][1]), "--modality", "image", "--json"]).stdout
    )
    assert last["rescore_due"] is False  # nothing new: nothing moved
    from indexer.settings import Settings

    s = Settings()
    ix = Indexer(s.db_url(), s.qdrant())
    try:
        assert not any(f["outside_tolerance"] for f in ix.freshness("c").values())
        assert_within_tolerance(ix, "c")
        assert_consistent(ix, "c")
    finally:
        ix.close()


def test_rescore_updates_payloads_only(ix: Indexer, coco):
    """No vector is re-sent: the store sees payload updates, no upsert."""
    img, txt = coco
    ix.auto_rescore = False
    ix.create_collection("c", dim=512)
    ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(40)])
    ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(40, 400)])
    calls = {"_upsert": 0, "_set_payload": 0}
    for name in calls:
        real = getattr(ix.store, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        setattr(ix.store, name, counted)
    before = ix.store.retrieve("c", [h.id for h in ix.store.scroll("c", None, 5, False).points], with_vectors=True)
    rep = ix.rescore("c")
    assert rep.rescored == 80 and calls == {"_upsert": 0, "_set_payload": calls["_set_payload"]}
    assert calls["_set_payload"] >= 1
    after = {h.id: h for h in ix.store.retrieve("c", [h.id for h in before], with_vectors=True)}
    assert all(after[h.id].vectors == h.vectors for h in before)
    assert_within_tolerance(ix, "c")
    assert_consistent(ix, "c")


def test_growing_a_collection_costs_o_n_rescoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Rows checked by the automatic policy while a collection grows from 0 to N in batches:
    bounded by N·(1+ρ)/ρ plus the always-fresh region's FRESH_BELOW² / (2·batch)."""
    fresh_below, batch, n = 300, 100, 8000
    ix = Indexer(
        f"sqlite:///{tmp_path / 'g.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "e")), fresh_below=fresh_below
    )
    checked: list[int] = []
    real = writer.rescore_rows
    monkeypatch.setattr(
        writer, "rescore_rows", lambda s, c, rows, *a: checked.append(len(rows)) or real(s, c, rows, *a)
    )
    try:
        ix.create_collection("c", dim=16, min_count=8)
        img, txt = ellipsoid_pairs(n // 2, 16, seed=3)
        img = img + np.linspace(0, 3, n // 2)[:, None]  # the data drifts as it arrives: statistics keep moving
        for s in range(0, n // 2, batch // 2):
            ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(s, s + batch // 2)])
        work = sum(checked)  # rows read by pending fills and rescores (a new row is scored on its write)
        limit = n * (1 + BUDGET) / BUDGET + fresh_below**2 / (2 * batch) * 2
        assert 0 < work <= limit, (work, limit)
    finally:
        ix.close()


def test_search_says_whether_scores_are_within_tolerance(ix: Indexer, coco):
    img, txt = coco
    ix.auto_rescore = False
    ix.create_collection("c", dim=512)
    ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(50)])
    ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(50, 500)])
    s = Searcher(ix)
    res = s.search("c", txt[0], SearchOptions(k=3, exclude_bottom_info_gain_pct=5))
    assert res.applied["freshness"]["image"]["within_tolerance"] is False
    ix.rescore("c")
    time.sleep(1.1)  # the freshness shown with results is re-read at most every second
    res = s.search("c", txt[0], SearchOptions(k=3, exclude_bottom_info_gain_pct=5))
    assert res.applied["freshness"]["image"]["within_tolerance"] is True


def test_the_service_rescores_large_collections_in_the_background(tmp_path: Path, coco):
    img, txt = coco
    ix = Indexer(
        f"sqlite:///{tmp_path / 's.sqlite'}",
        QdrantLocation(edge_path=str(tmp_path / "e")),
        fresh_below=0,
        rescore_inline_limit=0,  # every collection counts as large here
    )
    try:
        tc = TestClient(create_app(ix))
        assert tc.post("/collections", json={"name": "c", "dim": 512}).status_code == 201
        first = [{"id": i, "image": img[i].tolist(), "text": txt[i].tolist()} for i in range(40)]
        assert tc.post("/collections/c/items", json={"items": first}).status_code == 200
        more = [{"id": i, "image": img[i].tolist(), "text": txt[i].tolist()} for i in range(40, 300)]
        r = tc.post("/collections/c/items", json={"items": more}).json()
        assert r["rescore_due"] is True and r["rescored"] == 0  # not inside the request
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(f["outside_tolerance"] for f in ix.freshness("c").values()):
            time.sleep(0.2)
        assert not any(f["outside_tolerance"] for f in ix.freshness("c").values())
        assert "c" in tc.app.state.rescorer.done  # type: ignore[attr-defined]
        assert_within_tolerance(ix, "c")
    finally:
        ix.close()
