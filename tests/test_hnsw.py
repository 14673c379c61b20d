"""HNSW on the embedded store: built when due, searched approximately (and said so), exact on
request; the candidate plan and filters still hold. Small thresholds stand in for the real
ones (50k vectors, 10 MB segments) so the index is built in seconds."""

import json

import numpy as np
import pytest

import indexer.api
import retrieval.search
from indexer.api import Indexer
from indexer.items import Item
from indexer.store import QdrantLocation
from indexer.store.base import StorePoint
from indexer.store.edge import EdgeStore
from retrieval.options import SearchOptions
from retrieval.search import Searcher
from tests.conftest import ellipsoid_pairs

N, D = 3000, 32


@pytest.fixture(scope="module")
def hnsw_ix(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(EdgeStore, "index_threshold_kb", 1)
    mp.setattr(indexer.api, "INDEX_MIN_VECTORS", 2000)
    mp.setattr(retrieval.search, "CROSS_EXACT_BELOW", 1000)
    root = tmp_path_factory.mktemp("hnsw")
    ix = Indexer(f"sqlite:///{root / 'i.sqlite'}", QdrantLocation(edge_path=str(root / "q")))
    ix.create_collection("c", dim=D, min_count=8)
    img, txt = ellipsoid_pairs(N, D, seed=3)
    ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i, metadata={"g": i % 4}) for i in range(N)])
    yield ix, img, txt
    ix.close()
    mp.undo()


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_index_is_built_when_due_and_searched_approximately(hnsw_ix):
    ix, img, txt = hnsw_ix
    s = Searcher(ix)
    before = s.search("c", img[0], SearchOptions(k=10, query_modality="image"))
    assert before.applied["image_search"] == {"method": "exact"} and "approximate" not in before.applied
    state = ix.index_state("c")
    assert state["optimize_due"] and state["indexed_vectors"] == 0 and state["vectors"] == 2 * N
    out = ix.optimize("c")
    assert out["built"] and out["after"]["indexed_vectors"] == 2 * N and not out["after"]["optimize_due"]
    assert not ix.optimize("c")["built"]  # not due again until 10 % is outside the index
    s = Searcher(ix)
    recall = []
    for i in range(0, 200, 5):
        approx = s.search("c", img[i], SearchOptions(k=10, query_modality="image"))
        assert approx.applied["approximate"] and approx.applied["image_search"]["method"] == "hnsw"
        exact = s.search("c", img[i], SearchOptions(k=10, query_modality="image", exact=True))
        assert "approximate" not in exact.applied
        # the exact answer is brute force: the numpy top 10
        sims = _unit(img) @ _unit(img[i])
        assert [int(r.id) for r in exact.results] == list(np.argsort(-sims)[:10])
        recall.append(len({r.id for r in approx.results} & {r.id for r in exact.results}) / 10)
    assert np.mean(recall) >= 0.95
    # cross-modal queries get the wider beam, and scan instead below CROSS_EXACT_BELOW
    t2i = s.search("c", txt[0], SearchOptions(k=10, query_modality="text"))
    assert t2i.applied["image_search"]["ef"] > approx.applied["image_search"]["ef"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retrieval.search, "CROSS_EXACT_BELOW", 10 * N)
        assert Searcher(ix).search("c", txt[0], SearchOptions(k=10)).applied["image_search"] == {"method": "exact"}


def test_filters_and_the_candidate_plan_on_the_index(hnsw_ix):
    ix, img, _ = hnsw_ix
    if not ix.index_state("c")["indexed_vectors"]:
        ix.optimize("c", force=True)
    s = Searcher(ix)
    flt = {"must": [{"key": "g", "match": {"value": 1}}]}
    for i in (0, 7, 11):
        opts = SearchOptions(k=10, query_modality="image", filter=flt, exclude_bottom_info_gain_pct=5)
        got = s.search("c", img[i], opts)
        exact = s.search("c", img[i], SearchOptions(**{**opts.as_dict(), "exact": True}))
        assert all(r.payload["g"] == 1 for r in got.results) and len(got.results) == 10
        cut = got.applied["image_info_gain_cutoff"]
        assert all(r.info_gain is None or r.info_gain >= cut for r in got.results)
        assert len({r.id for r in got.results} & {r.id for r in exact.results}) >= 8
    # a narrow score filter: the score fields have no graph links (built without them), so it
    # is not walked but scanned, exactly
    for i in (0, 7):
        opts = SearchOptions(k=10, query_modality="image", exclude_bottom_info_gain_pct=90)
        got = s.search("c", img[i], opts)
        exact = s.search("c", img[i], SearchOptions(**{**opts.as_dict(), "exact": True}))
        assert got.applied["image_search"]["method"] == "exact" and "no links" in got.applied["image_search"]["reason"]
        assert [r.id for r in got.results] == [r.id for r in exact.results]


def _grow(root, segment_points):
    """N pairs ingested with ``index=True`` into a store whose segments hold at most
    ``segment_points`` points (None: Edge's own behaviour, no bound)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EdgeStore, "index_threshold_kb", 1)
        mp.setattr(EdgeStore, "segment_points", segment_points)
        mp.setattr(indexer.api, "INDEX_MIN_VECTORS", 2000)
        ix = Indexer(f"sqlite:///{root / 'i.sqlite'}", QdrantLocation(edge_path=str(root / "q")))
        ix.create_collection("c", dim=D, min_count=8)
        img, txt = ellipsoid_pairs(N, D, seed=5)
        told: list[dict] = []
        rep = ix.add(
            "c",
            [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(N)],
            batch_size=250,
            index=True,
            on_build=told.append,
        )
        assert told == [b["before"] for b in rep.index_builds]  # each build announced, before it starts
        return ix, rep, img


def test_a_growing_collection_is_indexed_a_bounded_segment_at_a_time(tmp_path):
    """Edge merges every segment into one unless told a maximum, so each build would index the
    whole collection again (an hour at 1M on 2 cores). With the bound, ``add(index=True)`` builds
    as the collection grows, segments stay apart, and searches over them stay right."""
    ix, rep, img = _grow(tmp_path / "bounded", 250)
    try:
        # builds during the write, each once a segment's worth was outside the index
        assert len(rep.index_builds) >= 3
        assert all(b["built"] and b["after"]["indexed_vectors"] == b["after"]["vectors"] for b in rep.index_builds)
        state = ix.index_state("c")
        assert state["indexed_vectors"] == 2 * N and not state["optimize_due"]
        bounded = state["segments"]
        s = Searcher(ix)
        for i in range(0, 100, 10):
            approx = s.search("c", img[i], SearchOptions(k=10, query_modality="image"))
            assert approx.applied["image_search"]["method"] == "hnsw"
            sims = _unit(img) @ _unit(img[i])
            assert len({int(r.id) for r in approx.results} & set(np.argsort(-sims)[:10].tolist())) >= 9
    finally:
        ix.close()
    # the same write without the bound: one build at the end, everything merged into one segment
    ix, rep, _ = _grow(tmp_path / "unbounded", None)
    try:
        assert len(rep.index_builds) == 1
        assert ix.index_state("c")["segments"] < bounded
    finally:
        ix.close()


def test_a_shard_made_before_the_bound_gets_it_when_opened(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EdgeStore, "index_threshold_kb", 1)
        mp.setattr(EdgeStore, "segment_points", None)
        old = EdgeStore(tmp_path)
        old.create("c", {"image": 32, "text": 32}, [])
        old.close()
        conf = json.loads((tmp_path / "c" / "edge_config.json").read_text())
        assert conf["optimizers"]["max_segment_size"] is None
        mp.setattr(EdgeStore, "segment_points", 250)
        new = EdgeStore(tmp_path)
        assert new.count("c") == 0  # opens the shard, with today's settings written over the old
        new.close()
        conf = json.loads((tmp_path / "c" / "edge_config.json").read_text())
        assert conf["optimizers"]["max_segment_size"] == 250 * 32 * 4 // 1024


def test_a_shard_whose_score_indexes_have_graphs_gets_them_without_when_opened(tmp_path):
    """Score fields indexed the old way (Qdrant's default: an HNSW subgraph per field) are
    re-created without extra edges when the shard is opened, and filters on them still work."""
    import qdrant_edge as qe

    old = EdgeStore(tmp_path)
    old.create("c", {"image": 4}, [])
    shard = old._shard("c")
    shard.update(qe.UpdateOperation.create_field_index("image_info_gain", qe.FloatIndexParams()))
    old.upsert(
        "c",
        [StorePoint(str(i), {"image": [1.0, 0.5, 0.2, float(i)]}, {"image_info_gain": i / 10}) for i in range(1, 41)],
    )
    assert shard.info().payload_schema["image_info_gain"].params.enable_hnsw is not False
    old.close()
    new = EdgeStore(tmp_path)
    try:
        assert new.count("c", {"must": [{"key": "image_info_gain", "range": {"gte": 3.0}}]}) == 11
        info = new._shard("c").info().payload_schema["image_info_gain"]
        assert info.params.enable_hnsw is False and info.points == 40
    finally:
        new.close()


def test_a_filtered_graph_search_that_comes_back_short_scans_instead(tmp_path):
    """Qdrant walks the graph through passing points only: a filter that 1 % pass, on a field
    without a payload index, stranded the walk and returned 1 result of 10 on every build.
    Such a filter is no longer walked at all (the graph has no links for its field): the
    candidate route fails its sieve and the searcher scans. Where a walk does run (a filter
    left to Qdrant, here made so), a short answer is not trusted either: it scans, and says so."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EdgeStore, "index_threshold_kb", 1)
        mp.setattr(indexer.api, "INDEX_MIN_VECTORS", 2000)
        ix = Indexer(f"sqlite:///{tmp_path / 'i.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
        try:
            ix.create_collection("c", dim=D, min_count=8)
            img, txt = ellipsoid_pairs(N, D, seed=3)
            ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i, metadata={"g": i % 100}) for i in range(N)])
            ix.optimize("c", force=True)
            s = Searcher(ix)
            rare = {"must": [{"key": "g", "match": {"value": 1}}]}
            for i in (0, 7, 11):
                got = s.search("c", img[i], SearchOptions(k=10, query_modality="image", filter=rare))
                exact = s.search("c", img[i], SearchOptions(k=10, query_modality="image", filter=rare, exact=True))
                assert [r.id for r in got.results] == [r.id for r in exact.results] and len(got.results) == 10
                assert (
                    got.applied["image_search"]["method"] == "exact"
                    and "no links" in got.applied["image_search"]["reason"]
                )
                assert "approximate" not in got.applied
            mp.setattr(Searcher, "_user_fraction", lambda *_a: None)  # as for a field the graph links
            for i in (0, 7):
                got = s.search("c", img[i], SearchOptions(k=10, query_modality="image", filter=rare))
                exact = s.search("c", img[i], SearchOptions(k=10, query_modality="image", filter=rare, exact=True))
                assert [r.id for r in got.results] == [r.id for r in exact.results] and len(got.results) == 10
                assert got.applied["image_search"]["method"] == "exact" and got.applied["image_search"]["wanted"] == 10
                assert got.applied["image_search"]["hnsw_returned"] < 10 and "approximate" not in got.applied
            # an unfiltered search on the same index stays on the graph
            plain = s.search("c", img[0], SearchOptions(k=10, query_modality="image"))
            assert plain.applied["image_search"]["method"] == "hnsw" and plain.applied["approximate"]
        finally:
            ix.close()
