"""Adopting an existing Qdrant collection: scores added, vectors and user payload untouched."""

import numpy as np
import pytest

from indexer.api import Indexer
from indexer.attach import attach
from indexer.errors import InvalidInputError
from indexer.items import Item
from indexer.store.base import StorePoint
from retrieval.search import Searcher, SearchOptions
from tests.conftest import ellipsoid_pairs

D = 16


def test_attach_named_vectors_keeps_vectors_and_payload(indexer: Indexer):
    img, txt = ellipsoid_pairs(60, D)
    indexer.store.create("legacy", {"clip_img": D, "clip_txt": D}, [])
    pts = [
        StorePoint(str(1000 + i), {"clip_img": img[i].tolist(), "clip_txt": txt[i].tolist()}, {"sku": f"s{i}"})
        for i in range(60)
    ]
    indexer.store.upsert("legacy", pts)
    before = {h.id: h.vectors for h in indexer.store.retrieve("legacy", [p.id for p in pts], with_vectors=True)}
    rep = attach(indexer, "legacy", image_vector="clip_img", text_vector="clip_txt", min_count=8)
    assert len(rep.ingested) == 60 and not rep.rejected
    after = indexer.store.retrieve("legacy", [p.id for p in pts], with_vectors=True)
    for h in after:
        assert h.vectors == before[h.id]  # never touched
        assert h.payload["sku"] == f"s{int(h.id) - 1000}"
        assert {"image_info_gain", "text_info_gain", "image_conformity"} <= set(h.payload)
    assert indexer.moments("legacy", "image")[1].n == 60
    res = Searcher(indexer).search("legacy", txt[0], SearchOptions(k=3, exclude_bottom_info_gain_pct=20))
    assert len(res.results) == 3 and isinstance(res.results[0].id, int)
    again = attach(indexer, "legacy", image_vector="clip_img", text_vector="clip_txt")
    assert again.ingested == [] and len(again.unchanged) == 60  # idempotent


def test_attach_unnamed_vector_needs_a_modality(indexer: Indexer, location):
    if location.edge_path:
        pytest.skip("the embedded Edge backend creates named vectors only")
    from qdrant_client import models

    store = indexer.store
    store.client.create_collection("plain", vectors_config=models.VectorParams(size=D, distance=models.Distance.COSINE))  # type: ignore[attr-defined]
    img, _ = ellipsoid_pairs(20, D)
    store.upsert("plain", [StorePoint(str(i), {"": img[i].tolist()}, {}) for i in range(20)])
    with pytest.raises(InvalidInputError, match="say which modality it is with --modality"):
        attach(indexer, "plain")
    rep = attach(indexer, "plain", modality="image")
    assert len(rep.ingested) == 20
    assert "image_conformity" in store.retrieve("plain", ["3"])[0].payload
    assert np.isfinite(indexer.scores("plain", "image")["conformity"]).all()


def test_delete_on_an_adopted_collection_keeps_the_users_point(indexer: Indexer):
    img, txt = ellipsoid_pairs(20, D)
    indexer.store.create("legacy2", {"image": D, "text": D}, [])
    indexer.store.upsert(
        "legacy2",
        [StorePoint(str(i), {"image": img[i].tolist(), "text": txt[i].tolist()}, {"sku": i}) for i in range(20)],
    )
    attach(indexer, "legacy2", min_count=4)
    out = indexer.delete("legacy2", [3])
    assert out["deleted"] == [3]
    assert indexer.store.count("legacy2") == 20  # the point stays in the user's collection
    p = indexer.store.retrieve("legacy2", ["3"])[0].payload
    assert p == {"sku": 3}  # only inforank's fields are gone
    assert indexer.moments("legacy2", "image")[1].n == 19


def test_rescore_is_not_stopped_by_rows_that_are_still_pending(indexer: Indexer):
    """Image rows sort first by key and stay pending (4 texts < min_count 5); the stale text rows,
    which are computable, must still be rescored."""
    indexer.auto_rescore = False  # the writes would keep the texts fresh themselves
    indexer.create_collection("p", dim=D, min_count=5)
    img, txt = ellipsoid_pairs(40, D)
    indexer.add("p", [Item({"image": img[i]}, id=f"a{i:02d}") for i in range(40)])  # version 1
    indexer.add("p", [Item({"text": txt[i]}, id=f"z{i}") for i in range(3)])  # version 2
    indexer.add("p", [Item({"text": txt[3]}, id="z3")])  # version 3: z0..z2 are stale
    rep = indexer.rescore("p", all=True, batch_size=8)
    assert rep.rescored == 3
    texts = indexer.scores("p", "text")
    assert (texts["version"] == 3).all()
    assert (indexer.scores("p", "image")["version"] == -1).all()  # still pending, not zero
