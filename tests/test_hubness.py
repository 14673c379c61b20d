"""Hubness correction: the stored bias is its definition, and the correction Qdrant applies in
its formula ranks exactly like the numpy definition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from indexer.errors import InvalidQueryError
from retrieval import hubness
from retrieval.cli import app
from retrieval.search import MIX_REACH, Searcher, SearchOptions
from tests.conftest import COCO, coco_pairs_indexer
from tests.consistency import assert_consistent

K, BETA = 4, 0.75


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    ix, feats = coco_pairs_indexer(tmp_path_factory.mktemp("hub"))
    with pytest.raises(InvalidQueryError, match="hubness fit"):
        Searcher(ix).search("c", feats[1][0], SearchOptions(hubness=True))
    out = hubness.fit(ix, "c", k=K, beta=BETA)
    yield ix, feats, out
    ix.close()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)


def test_the_stored_bias_is_its_definition(fitted):
    ix, feats, out = fitted
    img, txt = _unit(feats[0]), _unit(feats[1])
    want = np.sort(img @ txt.T, axis=1)[:, -K:].mean(axis=1)  # each image's k nearest texts
    hits = {int(h.payload["inforank_id"]): h.payload for h in ix.store.scroll("c", None, 600, False).points}
    got = np.array([hits[i]["image_hub_bias"] for i in range(500)])
    assert np.allclose(got, want, atol=1e-9)
    assert out["items"] == 1000 and (out["k"], out["beta"]) == (K, BETA)
    assert_consistent(ix, "c")


def test_the_formula_ranks_like_the_numpy_definition(fitted):
    ix, feats, _ = fitted
    img, txt = _unit(feats[0]), _unit(feats[1])
    bias = np.sort(img @ txt.T, axis=1)[:, -K:].mean(axis=1)
    s = Searcher(ix)
    for qi in range(0, 500, 25):
        q = feats[1][qi] / np.linalg.norm(feats[1][qi])
        res = s.search("c", q, SearchOptions(k=10, depth=100, hubness=True))
        cos = img @ q
        pool = np.argsort(-cos)[:100]  # the prefetch: the 100 most similar
        corrected = cos[pool] - BETA * (bias[pool] - bias.mean())  # around the mean bias: same ranking
        want = pool[np.argsort(-corrected)[:10]]
        assert [int(h.id) for h in res.results] == want.tolist(), qi
        assert [h.score for h in res.results] == pytest.approx(np.sort(corrected)[::-1][:10].tolist(), abs=1e-5)
        assert res.applied["hubness"]["beta"] == BETA


def test_a_mixed_list_scores_the_corrected_similarity_on_one_scale_per_query(fitted):
    """With the correction in a mixed list, each result's score is the *corrected* similarity s
    calibrated from both sides with the running statistics — (s − q·m̂_t)/√(qᵀΣ_t q) + (s −
    v·m̂_q)/√(vᵀΣ_q v) for an item v of modality t and a query of modality q — so the term weighs
    the same as in a single-modality search (it used to be added unscaled, ~10× too light), and
    the list is the top 10 of that score over each modality's MIX_REACH·k best corrected
    similarities among its 100 most similar items."""
    ix, feats, _ = fitted
    vec = {"image": _unit(feats[0]), "text": _unit(feats[1])}
    bank = {"image": vec["text"], "text": vec["image"]}
    mom = {m: ix.moments("c", m)[1] for m in vec}
    s = Searcher(ix)
    seen = set()
    for qi in range(0, 500, 50):
        q = feats[1][qi] / np.linalg.norm(feats[1][qi])
        res = s.search("c", q, SearchOptions(k=10, depth=100, modality="all", hubness=True))
        reach = MIX_REACH * 10  # each modality's list rescored: its reach best after the correction
        want = []
        for m in vec:
            b = np.sort(vec[m] @ bank[m].T, axis=1)[:, -K:].mean(axis=1)
            pool = np.argsort(-(vec[m] @ q))[:100]  # the prefetch: each modality's 100 most similar
            sim = vec[m] @ q - BETA * (b - b.mean())
            pool = pool[np.argsort(-sim[pool])[:reach]]
            v = vec[m][pool]
            z = (sim[pool] - q @ mom[m].mean) / np.sqrt(q @ mom[m].covariance @ q)
            z += (sim[pool] - v @ mom["text"].mean) / np.sqrt(np.einsum("ij,jk,ik->i", v, mom["text"].covariance, v))
            want += [(float(zi), m, int(i)) for zi, i in zip(z, pool, strict=True)]
        want.sort(key=lambda x: -x[0])
        assert [(h.modality, int(h.id)) for h in res.results] == [(m, i) for _, m, i in want[:10]], qi
        assert [h.score for h in res.results] == pytest.approx([z for z, _, _ in want[:10]], abs=1e-4), qi
        seen |= {h.modality for h in res.results}
    assert seen == {"image", "text"}


def test_it_lifts_recall_on_the_pairs_it_was_fitted_on(fitted):
    """Not a held-out figure (that is `evaluate`'s): a check that the correction does what it is for."""
    ix, feats, _ = fitted
    s = Searcher(ix)
    plain = hub = 0
    for qi in range(500):
        plain += int(s.search("c", feats[1][qi], SearchOptions(k=1)).results[0].id) == qi
        hub += int(s.search("c", feats[1][qi], SearchOptions(k=1, hubness=True)).results[0].id) == qi
    assert hub > plain + 25


def _stored(ix, name: str) -> dict[tuple[int, str], tuple[float, float]]:
    """(id, modality) → (hub_bias, hub_kth) in SQL; the payload Qdrant has is checked against it."""
    from sqlalchemy import select

    from indexer.db.models import VectorRow

    c = ix.collection(name)
    with ix.reads() as s:
        rows = s.execute(
            select(VectorRow.item_key, VectorRow.modality, VectorRow.hub_bias, VectorRow.hub_kth).where(
                VectorRow.collection_id == c.id
            )
        ).all()
    out = {(json.loads(k), m): (b, t) for k, m, b, t in rows}
    page = ix.store.scroll(c.qdrant_collection, None, 2000, False).points
    for h in page:
        for m in ("image", "text"):
            if (h.payload["inforank_id"], m) in out:
                assert h.payload.get(f"{m}_hub_bias") == pytest.approx(out[(h.payload["inforank_id"], m)][0], abs=1e-12)
    return out


def _definition(vecs: dict[str, dict[int, np.ndarray]], k: int) -> dict[tuple[int, str], tuple[float, float]]:
    """Every item's mean and k-th of its k highest cosines to the other modality's items now."""
    out = {}
    for m, o in (("image", "text"), ("text", "image")):
        ids, bank = list(vecs[m]), _unit(np.stack(list(vecs[o].values())))
        sims = _unit(np.stack([vecs[m][i] for i in ids])) @ bank.T
        top = np.sort(sims, axis=1)[:, -k:]
        out.update({(i, m): (float(top[j].mean()), float(top[j, 0])) for j, i in enumerate(ids)})
    return out


def test_biases_follow_ingest_delete_and_replace_with_the_stores_own_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """After a fit on 250 pairs: 200 more pairs, texts alone, deletions (some of them the nearest
    texts of many images) and a replaced image. Every write queues its changes, the inline
    rescore follows them with nearest-neighbour queries, and every stored bias (SQL and Qdrant)
    is then its definition against the bank *now*, within the refresh's stated bound — here 0."""
    import indexer.hubness
    from indexer.api import Indexer

    monkeypatch.setattr(indexer.hubness, "REFIT_SHARE", float("inf"))  # change by change, never a refit
    from indexer.items import Item
    from indexer.store import QdrantLocation

    feats = np.load(COCO).astype(np.float64)
    ix = Indexer(f"sqlite:///{tmp_path / 'h.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
    vecs: dict[str, dict[int, np.ndarray]] = {"image": {}, "text": {}}

    def add(items: list[Item]) -> None:
        rep = ix.add("c", items, batch_size=64)
        assert len(rep.ingested) == len(items) and not rep.rescore_due
        for it in items:
            for m, v in it.vectors.items():
                vecs[m][it.id] = v

    try:
        ix.create_collection("c", dim=512)
        add([Item({"image": feats[0][i], "text": feats[1][i]}, id=i) for i in range(250)])
        fit = hubness.fit(ix, "c", k=K, beta=BETA)
        assert fit["items"] == 500
        add([Item({"image": feats[0][i], "text": feats[1][i]}, id=i) for i in range(250, 450)])
        add([Item({"text": feats[1][i]}, id=i) for i in range(450, 500)])  # texts alone: bank only
        before = _stored(ix, "c")
        img = _unit(np.stack(list(vecs["image"].values())))
        # the texts nearest to most images: removing them lowers many biases
        hubs = np.bincount(np.argsort(-(img @ _unit(feats[1][:450]).T), axis=1)[:, :K].ravel()).argsort()[-15:]
        assert ix.delete("c", [int(i) for i in hubs])["deleted"]
        for i in hubs:
            del vecs["text"][int(i)], vecs["image"][int(i)]
        add([Item({"image": feats[0][499]}, id=300)])  # a replaced image
        rep = ix.rescore("c")
        assert rep.hubness is not None and rep.hubness["pending"] == 0
        got, want = _stored(ix, "c"), _definition(vecs, K)
        assert set(got) == set(want)
        err = max(abs(got[i][0] - want[i][0]) for i in want)
        bound = max((ix.collection("c").hub or {})["bound"].values(), default=0.0)
        assert err <= bound + 1e-5 and bound == 0.0
        assert max(abs(got[i][1] - want[i][1]) for i in want) <= 1e-5
        moved = [i for i in want if i in before and abs(before[i][0] - want[i][0]) > 1e-4]
        assert len(moved) > 50  # the bank changes did move old items' biases, and they followed
        stats = ix.stats("c")["hubness"]
        assert stats["pending_changes"] == 0 and stats["bank"] == "collection"
        assert_consistent(ix, "c")
    finally:
        ix.close()


def _far_image_collection(tmp_path: Path):
    """Two texts t1, t2 each with six images nearer to it (cos 0.50–0.55) than image o is (0.45);
    o's other bank texts t3, t4 lie at −0.9 from it. Fitted with k = 2: o's bias is 0.45, and
    removing t1 and t2 takes it to −0.9, while a reach of 4 from t1 or t2 sees only their crowds."""
    from indexer.api import Indexer
    from indexer.items import Item
    from indexer.store import QdrantLocation

    d = 16
    e = np.eye(d)
    rng = np.random.default_rng(0)
    o = 0.45 * e[0] + 0.45 * e[1] + np.sqrt(1 - 2 * 0.45**2) * e[2]
    texts = {1: e[0], 2: e[1], 3: -0.9 * o + np.sqrt(0.19) * e[3], 4: -0.9 * o + np.sqrt(0.19) * e[4]}
    images = {10: o}
    for t, base in ((1, 100), (2, 200)):
        for j in range(6):
            w = rng.normal(size=10)
            w /= np.linalg.norm(w)
            a = 0.5 + 0.01 * j
            images[base + j] = a * e[t - 1] + np.sqrt(1 - a * a) * np.concatenate([np.zeros(6), w])
    data = tmp_path / "data"  # where the CLI looks without configuration (the working directory is tmp_path)
    data.mkdir()
    ix = Indexer(
        f"sqlite:///{data / 'inforank.sqlite'}", QdrantLocation(edge_path=str(data / "qdrant")), auto_rescore=False
    )
    ix.create_collection("c", dim=d)
    ix.add(
        "c", [Item({"text": v}, id=i) for i, v in texts.items()] + [Item({"image": v}, id=i) for i, v in images.items()]
    )
    hubness.fit(ix, "c", k=2, beta=0.5)
    assert abs(_stored(ix, "c")[(10, "image")][0] - 0.45) < 1e-6
    return ix, {"image": images, "text": {i: v for i, v in texts.items() if i not in (1, 2)}}


def test_removals_the_reach_missed_add_up_within_the_reported_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two removed texts were both among image o's k = 2 nearest, and o lies beyond both of their
    reaches (capped at 4 here): o's stored bias stays 0.45 against −0.9 by definition. The error
    (1.35) is more than one missed removal can cause, (s_R + 1)/k ≈ 0.76, which a bound kept as
    the worst single change would report; the reported bound adds the removals up."""
    import indexer.hubness

    monkeypatch.setattr(indexer.hubness, "REFIT_SHARE", float("inf"))
    monkeypatch.setattr(indexer.hubness, "REACH", 4)
    monkeypatch.setattr(indexer.hubness, "MAX_REACH", 4)
    ix, vecs = _far_image_collection(tmp_path)
    try:
        ix.delete("c", [1, 2])
        rep = ix.rescore("c").hubness
        assert rep is not None and rep["followed"] == 2 and rep["pending"] == 0
        got, want = _stored(ix, "c"), _definition(vecs, 2)
        err = abs(got[(10, "image")][0] - want[(10, "image")][0])
        assert err == pytest.approx(1.35, abs=1e-5)
        hub = ix.collection("c").hub
        missed = hub["missed"]["image"]
        assert missed["removed"] == 2 and err > (missed["removed_reach"] + 1) / 2  # one removal's worth
        assert err <= hub["bound"]["image"] + 1e-9
        assert max(abs(got[i][0] - want[i][0]) for i in want) <= hub["bound"]["image"] + 1e-9  # the crowds too
        stats = ix.stats("c")["hubness"]
        assert stats["bound"]["image"] == hub["bound"]["image"] and stats["missed"]["image"]["removed"] == 2
    finally:
        ix.close()
    out = CliRunner().invoke(app, ["stats", "c"])  # what a user reads, and what to do about it
    assert out.exit_code == 0, out.output
    assert f"biases within {hub['bound']['image']:.4f}" in out.output
    assert "inforank hubness fit c --k 2 --beta 0.5" in out.output


def test_the_reach_goes_deeper_until_it_passes_the_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same removals with the reach starting at 4 but allowed to deepen: a reach that still
    ends above the lowest k-th similarity may have missed an item, so it looks four times deeper,
    finds o, and every bias is its definition with the bound 0."""
    import indexer.hubness

    monkeypatch.setattr(indexer.hubness, "REFIT_SHARE", float("inf"))
    monkeypatch.setattr(indexer.hubness, "REACH", 4)
    ix, vecs = _far_image_collection(tmp_path)
    try:
        ix.delete("c", [1, 2])
        ix.rescore("c")
        got, want = _stored(ix, "c"), _definition(vecs, 2)
        assert max(abs(got[i][0] - want[i][0]) for i in want) < 1e-5
        assert ix.collection("c").hub["bound"] == {} and ix.collection("c").hub["missed"] == {}
    finally:
        ix.close()


def test_a_long_queue_is_followed_by_recomputing_every_bias(tmp_path: Path):
    """More queued changes than REFIT_SHARE of the collection: one exact recomputation (cheaper
    than one query per change, BENCHMARKS.md), the bound back to 0, the queue empty."""
    from indexer.api import Indexer
    from indexer.hubness import REFIT_SHARE
    from indexer.items import Item
    from indexer.store import QdrantLocation

    feats = np.load(COCO).astype(np.float64)
    ix = Indexer(
        f"sqlite:///{tmp_path / 'r.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")), auto_rescore=False
    )
    try:
        ix.create_collection("c", dim=512)
        ix.add("c", [Item({"image": feats[0][i], "text": feats[1][i]}, id=i) for i in range(300)])
        hubness.fit(ix, "c", k=K, beta=BETA)
        ix.add("c", [Item({"image": feats[0][i], "text": feats[1][i]}, id=i) for i in range(300, 400)])
        ix.delete("c", [0, 1, 2])
        assert ix.stats("c")["hubness"]["pending_changes"] == 206 > REFIT_SHARE * 794
        rep = ix.rescore("c").hubness
        assert rep["refit"] and rep["followed"] == 206 and rep["pending"] == 0 and rep["recomputed"] == 794
        vecs = {m: {i: feats[j][i] for i in range(3, 400)} for j, m in enumerate(("image", "text"))}
        got, want = _stored(ix, "c"), _definition(vecs, K)
        assert set(got) == set(want)
        assert max(abs(got[i][0] - want[i][0]) for i in want) <= 1e-5
        assert ix.collection("c").hub["bound"] == {}
    finally:
        ix.close()


def test_an_item_the_refresh_has_not_reached_counts_as_the_mean_bias(tmp_path: Path):
    """Neutral, not favoured: a new item without a bias scores its plain similarity minus β times
    nothing, while every other item is corrected around the modality's mean bias."""
    from indexer.api import Indexer
    from indexer.items import Item
    from indexer.store import QdrantLocation

    feats = np.load(COCO).astype(np.float64)
    db, edge = f"sqlite:///{tmp_path / 'n.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q"))
    ix = Indexer(db, edge, auto_rescore=False)
    try:
        ix.create_collection("c", dim=512)
        ix.add("c", [Item({"image": feats[0][i], "text": feats[1][i]}, id=i) for i in range(200)])
        hubness.fit(ix, "c", k=K, beta=BETA)
        center = ix.collection("c").hub["center"]["image"]
        img, txt = _unit(feats[0][:200]), _unit(feats[1][:200])
        assert center == pytest.approx(np.sort(img @ txt.T, axis=1)[:, -K:].mean(axis=1).mean(), abs=1e-9)
        ix.add("c", [Item({"image": feats[0][i]}, id=i) for i in range(200, 210)])
        assert ix.stats("c")["hubness"]["pending_changes"] == 10
        q = feats[1][205] / np.linalg.norm(feats[1][205])
        res = Searcher(ix).search("c", q, SearchOptions(k=30, hubness=True))
        assert res.applied["hubness"]["center"] == pytest.approx(center)
        new = [h for h in res.results if int(h.id) >= 200]
        assert new and all(h.score == pytest.approx(h.similarity, abs=1e-5) for h in new)
        old = [h for h in res.results if int(h.id) < 200]
        bias = np.sort(img @ txt.T, axis=1)[:, -K:].mean(axis=1)
        for h in old:
            assert h.score == pytest.approx(h.similarity - BETA * (bias[int(h.id)] - center), abs=1e-5)
        assert ix.rescore("c").hubness["followed"] == 10
        assert ix.stats("c")["hubness"]["pending_changes"] == 0
    finally:
        ix.close()


def test_the_cli_ingest_gives_new_items_their_bias(tmp_path: Path):
    runner = CliRunner()
    feats = np.load(COCO)
    assert runner.invoke(app, ["create", "c", "--dim", "512"]).exit_code == 0
    np.savez(tmp_path / "i.npz", vectors=feats[0][:80], ids=np.arange(80))
    np.savez(tmp_path / "t.npz", vectors=feats[1][:80], ids=np.arange(80))
    for f, m in (("i.npz", "image"), ("t.npz", "text")):
        assert runner.invoke(app, ["ingest", "c", "--vectors", str(tmp_path / f), "--modality", m]).exit_code == 0
    r = runner.invoke(app, ["hubness", "fit", "c", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["items"] == 160
    k = json.loads(r.stdout)["k"]
    np.savez(tmp_path / "more.npz", vectors=feats[0][80:90], ids=np.arange(80, 90))
    r = runner.invoke(app, ["ingest", "c", "--vectors", str(tmp_path / "more.npz"), "--modality", "image"])
    assert r.exit_code == 0
    np.save(tmp_path / "q.npy", feats[1][85])
    r = runner.invoke(app, ["search", "c", "--vector", str(tmp_path / "q.npy"), "--hubness", "--k", "20", "--json"])
    res = json.loads(r.stdout)
    assert r.exit_code == 0 and res["applied"]["hubness"]["k"] == k
    new = [h for h in res["results"] if h["id"] >= 80]
    want = np.sort(_unit(feats[0][80:90]) @ _unit(feats[1][:80]).T, axis=1)[:, -k:].mean(axis=1)
    assert new and all(h["payload"]["image_hub_bias"] == pytest.approx(want[h["id"] - 80], abs=1e-5) for h in new)
    r = runner.invoke(app, ["stats", "c"])
    assert r.exit_code == 0 and "hubness correction" in r.stdout and "not followed" not in r.stdout


def test_a_user_bank_corrects_an_image_only_collection(tmp_path: Path):
    """No texts in the collection: the bank is the user's own query vectors (here 250 COCO
    captions), given with k and β; the bias is its definition against that bank, and text
    searches rank like the numpy definition."""
    from indexer.api import Indexer
    from indexer.errors import InvalidInputError
    from indexer.items import Item
    from indexer.store import QdrantLocation

    feats = np.load(COCO).astype(np.float64)
    ix = Indexer(f"sqlite:///{tmp_path / 'u.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
    try:
        ix.create_collection("pics", dim=512)
        ix.add("pics", [Item({"image": feats[0][i]}, id=i) for i in range(500)])
        with pytest.raises(InvalidInputError, match="bank"):
            hubness.fit(ix, "pics")  # one modality, no bank
        with pytest.raises(InvalidInputError, match="give k and beta"):
            hubness.fit(ix, "pics", bank=feats[1][250:])
        huge = feats[1][250:].copy()
        huge[3] *= 1e300  # its norm overflows: a silent zero vector unless refused
        with pytest.raises(InvalidInputError, match="Bank row 3: vector norm"):
            hubness.fit(ix, "pics", k=K, beta=BETA, bank=huge)
        with pytest.raises(InvalidInputError, match=r"Bank row 0: .*512"):
            hubness.fit(ix, "pics", k=K, beta=BETA, bank=feats[1][250:, :100])
        out = hubness.fit(ix, "pics", k=K, beta=BETA, bank=feats[1][250:], bank_modality="text")
        assert out["user_bank"] and out["bank"] == {"image": 250} and out["items"] == 500
        img, bank = _unit(feats[0]), feats[1][250:] / np.linalg.norm(feats[1][250:], axis=1, keepdims=True)
        bias = np.sort(img @ bank.T, axis=1)[:, -K:].mean(axis=1)
        page = ix.store.scroll(ix.collection("pics").qdrant_collection, None, 600, False)
        hits = {int(h.payload["inforank_id"]): h.payload for h in page.points}
        assert np.allclose([hits[i]["image_hub_bias"] for i in range(500)], bias, atol=1e-6)
        s = Searcher(ix)
        for qi in range(0, 250, 50):  # held-out captions query the images
            q = feats[1][qi] / np.linalg.norm(feats[1][qi])
            res = s.search("pics", q, SearchOptions(k=10, depth=100, hubness=True))
            cos = img @ q
            pool = np.argsort(-cos)[:100]
            want = pool[np.argsort(-(cos[pool] - BETA * bias[pool]))[:10]]
            assert [int(h.id) for h in res.results] == want.tolist(), qi
    finally:
        ix.close()
