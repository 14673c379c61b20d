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
from retrieval.search import Searcher, SearchOptions
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
        corrected = cos[pool] - BETA * bias[pool]
        want = pool[np.argsort(-corrected)[:10]]
        assert [int(h.id) for h in res.results] == want.tolist(), qi
        assert [h.score for h in res.results] == pytest.approx(np.sort(corrected)[::-1][:10].tolist(), abs=1e-5)
        assert res.applied["hubness"]["beta"] == BETA


def test_it_lifts_recall_on_the_pairs_it_was_fitted_on(fitted):
    """Not a held-out figure (that is `evaluate`'s): a check that the correction does what it is for."""
    ix, feats, _ = fitted
    s = Searcher(ix)
    plain = hub = 0
    for qi in range(500):
        plain += int(s.search("c", feats[1][qi], SearchOptions(k=1)).results[0].id) == qi
        hub += int(s.search("c", feats[1][qi], SearchOptions(k=1, hubness=True)).results[0].id) == qi
    assert hub > plain + 25


def test_new_items_have_no_bias_until_the_next_fit(tmp_path: Path):
    runner = CliRunner()
    feats = np.load(COCO)
    assert runner.invoke(app, ["create", "c", "--dim", "512"]).exit_code == 0
    np.savez(tmp_path / "i.npz", vectors=feats[0][:80], ids=np.arange(80))
    np.savez(tmp_path / "t.npz", vectors=feats[1][:80], ids=np.arange(80))
    for f, m in (("i.npz", "image"), ("t.npz", "text")):
        assert runner.invoke(app, ["ingest", "c", "--vectors", str(tmp_path / f), "--modality", m]).exit_code == 0
    r = runner.invoke(app, ["hubness", "fit", "c", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["items"] == 160
    np.savez(tmp_path / "more.npz", vectors=feats[0][80:90], ids=np.arange(80, 90))
    assert (
        runner.invoke(app, ["ingest", "c", "--vectors", str(tmp_path / "more.npz"), "--modality", "image"]).exit_code
        == 0
    )
    np.save(tmp_path / "q.npy", feats[1][85])
    r = runner.invoke(app, ["search", "c", "--vector", str(tmp_path / "q.npy"), "--hubness", "--k", "20", "--json"])
    res = json.loads(r.stdout)
    assert r.exit_code == 0 and res["applied"]["hubness"]["k"] >= 1
    new = [h for h in res["results"] if h["id"] >= 80]
    assert new and all("image_hub_bias" not in h["payload"] for h in new)
    assert all(h["similarity"] == pytest.approx(h["score"], abs=1e-6) for h in new)  # not corrected


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
