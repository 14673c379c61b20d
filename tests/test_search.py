"""Search: filters inside Qdrant, exact k, percentile cut-offs, server-side rerank, mixed search."""

import numpy as np
import pytest

from indexer.api import Indexer
from indexer.errors import InvalidQueryError, InvalidVectorError, NotFoundError
from indexer.items import Item
from retrieval import align
from retrieval.search import Searcher, SearchOptions
from tests.conftest import COCO


@pytest.fixture(scope="module", params=["edge", "client-local", "server"])
def location(request, tmp_path_factory):
    """Module-scoped: one COCO collection per backend serves every test here."""
    from indexer.store import QdrantLocation

    if request.param == "edge":
        return QdrantLocation(edge_path=str(tmp_path_factory.mktemp("edge")))
    if request.param == "server":
        return QdrantLocation(url=request.getfixturevalue("qdrant_server"))
    return QdrantLocation(local_path=":memory:")


@pytest.fixture(scope="module")
def coco_ix(location, coco, tmp_path_factory):
    indexer = Indexer(f"sqlite:///{tmp_path_factory.mktemp('db') / 'db.sqlite'}", location)
    img, txt = coco
    indexer.create_collection("c", dim=512)
    indexer.add(
        "c",
        [
            Item(
                {"image": img[i], "text": txt[i]},
                id=i,
                metadata={"parity": "even" if i % 2 == 0 else "odd", "flag": i % 2 == 0},
            )
            for i in range(500)
        ],
        batch_size=250,
    )
    indexer.rescore("c", all=True)  # everything scored with the final statistics
    yield indexer
    indexer.close()


def test_plain_search_finds_the_paired_image(coco_ix: Indexer, coco):
    _, txt = coco
    hits = Searcher(coco_ix).search("c", txt[3], SearchOptions(k=5)).results
    assert len(hits) == 5 and all(h.modality == "image" for h in hits)
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    sims = coco_ix.vectors("c", "image")[1] @ (txt[3] / np.linalg.norm(txt[3]))
    assert hits[0].similarity == pytest.approx(np.sort(sims)[-1], abs=1e-5)


def test_filters_run_in_qdrant_and_return_exactly_k(coco_ix: Indexer, coco):
    s = Searcher(coco_ix)
    _, txt = coco
    scores = coco_ix.scores("c", "image")
    lo = float(np.median(scores["info_gain"]))
    res = s.search(
        "c",
        txt[0],
        SearchOptions(k=20, min_info_gain=lo, filter={"must": [{"key": "parity", "match": {"value": "even"}}]}),
    )
    assert len(res.results) == 20 and res.note is None
    assert all(h.info_gain >= lo and h.payload["parity"] == "even" for h in res.results)
    few = s.search("c", txt[0], SearchOptions(k=20, min_info_gain=float(np.sort(scores["info_gain"])[-3])))
    assert len(few.results) == 3
    assert few.note == "only 3 items match the filters (asked for 20)."


def test_percentile_cutoff_drops_the_bottom(coco_ix: Indexer, coco):
    _, txt = coco
    res = Searcher(coco_ix).search("c", txt[0], SearchOptions(k=500, exclude_bottom_info_gain_pct=10))
    cut = res.applied["image_info_gain_cutoff"]
    ig = coco_ix.scores("c", "image")["info_gain"]
    # exact: the first value kept (Qdrant's copy of a score may differ in the last bit)
    assert cut == pytest.approx(np.sort(ig)[int(0.1 * len(ig))], rel=1e-15, abs=0)
    assert len(res.results) == len(ig) - int(0.1 * len(ig))
    assert all(r.info_gain >= cut for r in res.results)


def test_rerank_is_computed_server_side_as_documented(coco_ix: Indexer, coco):
    """score = cos(q, v) + Σ w · s_q · (score − μ)/σ, checked against cosines and statistics
    computed here from the raw vectors, not against the search's own terms."""
    img, txt = coco
    s = Searcher(coco_ix)
    w = 0.25
    res = s.search("c", txt[9], SearchOptions(k=10, rerank_info_gain=w, rerank_conformity=-w, depth=50))
    q = txt[9] / np.linalg.norm(txt[9])
    unit = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
    s_q = float(np.sqrt(q @ np.cov(unit.T, bias=True) @ q))  # this query's similarity spread
    stored = coco_ix.scores("c", "image")
    ig, conf = stored["info_gain"], stored["conformity"]
    for h in res.results:
        cos = float(unit[int(h.id)] @ q)
        z_ig, z_conf = (h.info_gain - ig.mean()) / ig.std(), (h.conformity - conf.mean()) / conf.std()
        want = cos + w * s_q * z_ig - w * s_q * z_conf
        # μ and σ come from the score histograms: within ~1 % (indexer/sketch.py), so each
        # standardised term is within 2 % of its exact value (plus 0.02 near zero)
        tol = w * s_q * 0.02 * (2 + abs(z_ig) + abs(z_conf)) + 1e-5
        assert h.score == pytest.approx(want, abs=tol)
        assert h.similarity == pytest.approx(cos, abs=1e-5)
    assert [h.score for h in res.results] == sorted((h.score for h in res.results), reverse=True)
    # the reranked top-10 comes from the 50 most similar
    plain = s.search("c", txt[9], SearchOptions(k=50))
    assert {h.id for h in res.results} <= {h.id for h in plain.results}


def test_prefer_never_lifts_a_placeholder(tmp_path):
    """Placeholders (near-duplicate generic images) are the most typical items: --prefer typical
    must not lift them into a top 10 where plain search does not already show them."""
    from indexer.items import Item
    from indexer.store import QdrantLocation
    from retrieval.options import PREFER_EXCLUDE_PCT, PREFER_WEIGHT

    feats = np.load(COCO).astype(np.float64)
    img, txt = feats[0], feats[1]
    rng = np.random.default_rng(0)
    unit = img / np.linalg.norm(img, axis=1, keepdims=True)
    blank = unit.mean(0) / np.linalg.norm(unit.mean(0)) * 0.9 + 0.1 * rng.normal(size=512) / np.sqrt(512)
    ix = Indexer(f"sqlite:///{tmp_path / 'p.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "e")))
    try:
        ix.create_collection("c", dim=512)
        items = [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(500)]
        items += [Item({"image": blank + 0.001 * rng.normal(size=512)}, id=f"ph{j}") for j in range(8)]
        ix.add("c", items)
        s = Searcher(ix)
        for sign in (1, -1):
            opts = SearchOptions(
                k=10, rerank_conformity=sign * PREFER_WEIGHT, exclude_bottom_info_gain_pct=PREFER_EXCLUDE_PCT
            )
            for qi in range(0, 500, 5):
                plain = {str(h.id) for h in s.search("c", txt[qi], SearchOptions(k=10)).results}
                got = {str(h.id) for h in s.search("c", txt[qi], opts).results}
                assert not {i for i in got - plain if i.startswith("ph")}, (sign, qi)
        # without the exclusion, the same weight does lift them (the test can fail)
        lifted = 0
        for qi in range(0, 500, 5):
            plain = {str(h.id) for h in s.search("c", txt[qi], SearchOptions(k=10)).results}
            got = {
                str(h.id) for h in s.search("c", txt[qi], SearchOptions(k=10, rerank_conformity=PREFER_WEIGHT)).results
            }
            lifted += bool({i for i in got - plain if i.startswith("ph")})
        assert lifted > 10
    finally:
        ix.close()


def test_mixed_search_needs_calibration_to_rank_images(coco_ix: Indexer, coco):
    _, txt = coco
    s = Searcher(coco_ix)
    firsts_plain = firsts_cal = 0
    for i in range(0, 100, 5):
        q = txt[i] + 0.0
        plain = s.search("c", q, SearchOptions(k=3, modality="all", calibrate=False)).results
        cal = s.search("c", q, SearchOptions(k=5, modality="all")).results
        firsts_plain += any(h.modality == "image" for h in plain)
        firsts_cal += any(h.modality == "image" for h in cal)
    assert firsts_plain == 0  # the modality gap: plain CLIP ranks texts above every image
    assert firsts_cal >= 10


def _check_aligned_mixed_list(ix: Indexer, coco, matrix: np.ndarray) -> None:
    """A mixed list with an active map: the text query moves to qM for the images; each image's
    side of the calibration follows the map (v·(m̂M) = (Mv)·m̂), each text's does not."""
    img, txt = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in coco)
    mom = {m: ix.moments("c", m)[1] for m in ("image", "text")}
    q = txt[7]
    qa = q @ matrix
    qa /= np.linalg.norm(qa)
    res = Searcher(ix).search("c", q, SearchOptions(k=10, modality="all", align=True))
    assert res.applied["calibration"] == "two-sided"
    for h in res.results:
        i = int(h.id)
        if h.modality == "image":
            qq, v, u = qa, img[i], matrix @ img[i]
        else:
            qq, v, u = q, txt[i], txt[i]
        sim = float(qq @ v)
        want = (sim - qq @ mom[h.modality].mean) / mom[h.modality].spread(qq)
        want += (sim - u @ mom["text"].mean) / mom["text"].spread(u)
        assert h.score == pytest.approx(float(want), abs=1e-4), (h.modality, i)
    assert {h.modality for h in res.results} == {"image", "text"}


def test_alignment_is_evaluated_and_not_activated_when_it_hurts(coco_ix: Indexer, coco):
    try:  # the module-scoped collection is shared: no map stays active, also on failure
        m = align.fit(coco_ix, "c", repeats=1)
        t2i = m.metrics["text_to_image"]
        assert t2i["aligned"]["r@1"] < t2i["plain"]["r@1"] and not m.active
        mixed = m.metrics["mixed_top1"]
        # held-out queries search the whole collection: the ceiling is the full-gallery text→image
        # R@1 of the 500 pairs (0.506, ../shared/data/README.md), not a fold-sized gallery's
        assert mixed["ceiling_text_to_image_r@1"] == pytest.approx(0.506, abs=1e-9)
        assert mixed["plain"] == 0.0 and mixed["calibrated"] > 0.8 * mixed["ceiling_text_to_image_r@1"]
        assert align.active_map(coco_ix, "c") is None
        with pytest.raises(InvalidQueryError, match=r"declined: held-out text→image recall@1 would fall .* --force"):
            Searcher(coco_ix).search("c", np.ones(512), SearchOptions(k=3, align=True))
        forced = align.fit(coco_ix, "c", force=True, repeats=1)
        assert forced.active and forced.version == 2
        assert np.allclose(forced.matrix @ forced.matrix.T, np.eye(512), atol=1e-8)  # orthogonal
        res = Searcher(coco_ix).search("c", np.ones(512), SearchOptions(k=3, align=True))
        assert res.applied["alignment_version"] == 2
        _check_aligned_mixed_list(coco_ix, coco, forced.matrix)
    finally:
        align.off(coco_ix, "c")
    with pytest.raises(InvalidQueryError, match=r"no active alignment map: the last map .* was switched off"):
        Searcher(coco_ix).search("c", np.ones(512), SearchOptions(k=3, align=True))


@pytest.mark.parametrize(
    "opts",
    [
        SearchOptions(k=10, exclude_bottom_info_gain_pct=5),
        SearchOptions(k=7, exclude_bottom_info_gain_pct=30, max_conformity=0.9),
        SearchOptions(k=10, exclude_bottom_info_gain_pct=20, rerank_info_gain=0.05, rerank_conformity=-0.02, depth=40),
    ],
    ids=["cutoff", "cutoff+range", "cutoff+rerank"],
)
def test_score_filters_among_the_nearest_equal_the_filtered_search(coco_ix: Indexer, coco, opts, monkeypatch):
    """Loose score filters are answered among the unfiltered nearest neighbours (Qdrant checks
    the filter on those alone): the same results as Qdrant's filtered search over everything."""
    import retrieval.search as search_mod

    _, txt = coco
    s = Searcher(coco_ix)
    fast = [s.search("c", txt[i], opts) for i in range(0, 100, 4)]
    monkeypatch.setattr(search_mod, "MIN_PASS_FRACTION", 2.0)  # no filter qualifies: filtered search
    exact = [s.search("c", txt[i], opts) for i in range(0, 100, 4)]
    for f, e in zip(fast, exact, strict=True):
        assert f.applied["image_filter_plan"].startswith("among the ")
        assert e.applied["image_filter_plan"] == "filtered search"
        assert [h.id for h in f.results] == [h.id for h in e.results] and len(f.results) == opts.k
        assert [h.score for h in f.results] == pytest.approx([h.score for h in e.results], abs=1e-6)


def test_candidates_that_cannot_answer_fall_back_to_the_filtered_search(coco_ix: Indexer, coco):
    from indexer.store.base import QuerySpec

    img, _ = coco
    store, name = coco_ix.store, coco_ix.collection("c").qdrant_collection
    even = {"must": [{"key": "parity", "match": {"value": "even"}}]}
    q = (img[1] / np.linalg.norm(img[1])).tolist()  # item 1 is odd: its own nearest neighbour fails
    spec = QuerySpec(vector=q, using="image", limit=10, filter=even, candidates=10)
    assert store.query_among_nearest(name, spec) is None
    wide = store.query_among_nearest(name, QuerySpec(vector=q, using="image", limit=10, filter=even, candidates=600))
    assert wide is not None
    assert [h.id for h in wide] == [h.id for h in store.query(name, spec)]
    # more asked for than pass at all: the searcher goes to the filtered search and says so
    res = Searcher(coco_ix).search("c", img[1], SearchOptions(k=250, exclude_bottom_info_gain_pct=60))
    assert res.applied["image_filter_plan"] == "filtered search"
    assert len(res.results) == 200 and res.note == "only 200 items match the filters (asked for 250)."


@pytest.mark.parametrize(
    ("opts", "vec", "exc", "msg"),
    [
        (SearchOptions(k=0), np.ones(512), InvalidQueryError, "k must be between 1 and 1000, got 0"),
        (SearchOptions(k=5000), np.ones(512), InvalidQueryError, "k must be between 1 and 1000"),
        (SearchOptions(modality="audio"), np.ones(512), InvalidQueryError, "modality must be image, text or all"),
        (SearchOptions(), np.ones(3), InvalidVectorError, "wrong dimension 3, the collection expects 512"),
        (SearchOptions(), np.full(512, np.nan), InvalidVectorError, "NaN"),
        (SearchOptions(exclude_bottom_info_gain_pct=100), np.ones(512), InvalidQueryError, "percentile"),
        (SearchOptions(rerank_info_gain=1e4), np.ones(512), InvalidQueryError, "between -1000 and 1000"),
    ],
)
def test_bad_queries_get_clear_errors(coco_ix: Indexer, opts, vec, exc, msg):
    with pytest.raises(exc, match=msg):
        Searcher(coco_ix).search("c", vec, opts)


def test_unknown_collection_and_bad_filter(coco_ix: Indexer):
    with pytest.raises(NotFoundError):
        Searcher(coco_ix).search("nope", np.ones(512), SearchOptions())
    with pytest.raises(InvalidQueryError):
        Searcher(coco_ix).search("c", np.ones(512), SearchOptions(filter={"bogus": []}))


def test_boolean_match_works_on_the_server_api_and_is_refused_on_edge(coco_ix: Indexer, location, coco):
    flt = {"must": [{"key": "flag", "match": {"value": True}}]}
    if location.edge_path:
        with pytest.raises(InvalidQueryError, match="cannot match boolean payload values"):
            Searcher(coco_ix).search("c", coco[1][0], SearchOptions(k=5, filter=flt))
    else:
        res = Searcher(coco_ix).search("c", coco[1][0], SearchOptions(k=5, filter=flt))
        assert len(res.results) == 5 and all(h.payload["flag"] is True for h in res.results)


def test_score_distribution_follows_every_write_without_a_scan(coco_ix: Indexer, coco):
    """Percentiles and the rerank scale come from the histograms the database keeps: one new
    item shows in the next search's distribution (no stale window, no rescan)."""
    s = Searcher(coco_ix)
    c = coco_ix.collection("c")
    first = s.distribution(c, "image")["info_gain"].n
    img, txt = coco
    try:  # the module-scoped collection is shared: leave it as found, also on failure
        coco_ix.add("c", [Item({"image": img[0] * 1.01, "text": txt[0]}, id="one-more")])
        c2 = coco_ix.collection("c")
        assert c2.stats_version == c.stats_version + 1
        assert s.distribution(c2, "image")["info_gain"].n == first + 1
        exact = np.sort(coco_ix.scores("c", "image")["info_gain"])
        got = s.distribution(c2, "image")["info_gain"].quantile(0.05)
        assert got == pytest.approx(exact[int(np.ceil(0.05 * len(exact))) - 1], rel=0.005)
    finally:
        coco_ix.delete("c", ["one-more"])


def test_a_mixed_list_with_an_empty_side_or_too_few_query_modality_items(tmp_path):
    """The item's side of the calibration needs the spread of the query's modality: with one
    text in the collection a text query's mixed list falls back to the query's side (and says
    so) instead of dividing by zero; a filter that leaves one modality empty leaves the other."""
    from indexer.store import QdrantLocation

    rng = np.random.default_rng(5)
    ix = Indexer(f"sqlite:///{tmp_path / 'db.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "q")))
    try:
        ix.create_collection("m", dim=16, min_count=2)
        imgs = rng.standard_normal((40, 16))
        ix.add("m", [Item({"image": v}, id=i, metadata={"kind": "photo"}) for i, v in enumerate(imgs)])
        ix.add("m", [Item({"text": rng.standard_normal(16)}, id="t0", metadata={"kind": "caption"})])
        q = rng.standard_normal(16)
        res = Searcher(ix).search("m", q, SearchOptions(k=5, modality="all"))
        assert res.applied["calibration"] == "query side only: the collection has 1 text item(s)"
        assert len(res.results) == 5 and all(np.isfinite(r.score) for r in res.results)
        photos = {"must": [{"key": "kind", "match": {"value": "photo"}}]}
        res = Searcher(ix).search("m", q, SearchOptions(k=5, modality="all", query_modality="image", filter=photos))
        assert res.applied["calibration"] == "two-sided"
        assert [r.modality for r in res.results] == ["image"] * 5
    finally:
        ix.close()


def test_a_mixed_list_refuses_a_vector_of_the_other_modality_than_declared(coco_ix: Indexer, coco):
    """The item's side of a mixed list's calibration reads the declared query modality: an image
    vector sent as text would be judged against the text statistics (R@1 0 on these pairs), so
    it is refused with what to pass instead. No vector of its own modality is refused."""
    img, txt = coco
    with pytest.raises(InvalidQueryError, match=r"looks like image rather than text.*query_modality='image'"):
        Searcher(coco_ix).search("c", img[3], SearchOptions(k=5, modality="all"))
    with pytest.raises(InvalidQueryError, match=r"looks like text rather than image.*--vector-modality text"):
        Searcher(coco_ix).search("c", txt[3], SearchOptions(k=5, modality="all", query_modality="image"))
    s = Searcher(coco_ix)
    for i in range(0, 500, 25):
        s.search("c", img[i], SearchOptions(k=5, modality="all", query_modality="image"))
        s.search("c", txt[i], SearchOptions(k=5, modality="all", query_modality="text"))
    # uncalibrated and single-modality searches do not read the declaration this way
    assert Searcher(coco_ix).search("c", img[3], SearchOptions(k=5, modality="all", calibrate=False)).results
    assert Searcher(coco_ix).search("c", img[3], SearchOptions(k=5, modality="text")).results
