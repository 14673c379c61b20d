"""The score histograms: values within the stated 0.5 % of exact quantiles and moments, and
counts exactly equal to a recount of the stored scores after every kind of write (ingest,
re-ingest, rescore, delete, drop), on SQLite and PostgreSQL."""

from pathlib import Path

import numpy as np
import pytest

from indexer import sketch
from indexer.api import Indexer
from indexer.items import Item
from indexer.sketch import Sketch
from indexer.store import QdrantLocation
from tests.conftest import ellipsoid_pairs


def test_quantiles_and_moments_are_within_the_stated_relative_error(coco):
    img = coco[0] / np.linalg.norm(coco[0], axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    samples = {
        "conformity": img @ img.mean(0),
        "info_gain": np.exp(rng.normal(-7, 1, 20_000)),  # heavy right tail, like information gain
        "signed": rng.normal(0, 0.1, 5_000),
    }
    for name, v in samples.items():
        sk = Sketch.exact(v)
        assert sk.n == len(v)
        for q in (0.01, 0.05, 0.25, 0.5, 0.95):
            got, want = sk.quantile(q), np.sort(v)[max(int(np.ceil(q * len(v))) - 1, 0)]
            assert abs(got - want) <= sketch.ALPHA * abs(want) + 1e-12, (name, q)
        mean, sd = sk.moments()
        assert mean == pytest.approx(v.mean(), rel=sketch.ALPHA, abs=1e-3 * v.std())
        assert sd == pytest.approx(v.std(), rel=2 * sketch.ALPHA + 0.01)
        lo, hi = np.quantile(v, [0.2, 0.7])
        # only the items sharing a bucket with lo or hi can be misplaced
        edge = {sketch.key(float(lo)), sketch.key(float(hi))}
        slack = sum(int(n) for k, n in zip(sk.keys, sk.counts, strict=True) if k in edge) / len(v)
        exact = np.mean((v >= lo) & (v <= hi))
        assert abs(sk.fraction_between(lo, hi) - exact) <= slack, name


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 's.sqlite'}"


def _recount(ix: Indexer, name: str, m: str) -> dict[str, Sketch]:
    """From scratch: the histogram of the scores stored right now."""
    from sqlalchemy import select

    from indexer.db.models import VectorRow

    c = ix.collection(name)
    with ix.sessions() as s:
        rows = s.execute(
            select(VectorRow.conformity, VectorRow.info_gain).where(
                VectorRow.collection_id == c.id, VectorRow.modality == m
            )
        ).all()
    cols = np.array([[np.nan if x is None else x for x in r] for r in rows], dtype=float).reshape(-1, 2)
    return {"conformity": Sketch.exact(cols[:, 0]), "info_gain": Sketch.exact(cols[:, 1])}


def _same(a: dict[str, Sketch], b: dict[str, Sketch]) -> None:
    for f in ("conformity", "info_gain"):
        assert a[f].keys.tolist() == b[f].keys.tolist() and a[f].counts.tolist() == b[f].counts.tolist(), f


def test_the_histograms_follow_every_write_exactly(db: str, tmp_path: Path):
    ix = Indexer(db, QdrantLocation(edge_path=str(tmp_path / "edge")))
    try:
        ix.create_collection("c", dim=16, min_count=4)
        img, txt = ellipsoid_pairs(300, 16, seed=1)
        ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(200)], batch_size=50)
        for m in ("image", "text"):
            _same(ix.score_sketch("c", m), _recount(ix, "c", m))
        assert ix.score_sketch("c", "image")["info_gain"].n == 200
        # new content for known ids, more items (pending scores filled), deletes, a full rescore
        ix.add("c", [Item({"image": img[i] * 1.5 + 0.1}, id=i) for i in range(0, 40)])
        ix.add("c", [Item({"text": txt[i]}, id=i) for i in range(200, 300)])
        ix.delete("c", list(range(150, 180)))
        ix.rescore("c", all=True)
        for m in ("image", "text"):
            _same(ix.score_sketch("c", m), _recount(ix, "c", m))
        ix.create_collection("d", dim=16)
        ix.add("d", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(50)])
        ix.drop_collection("c")
        from sqlalchemy import func, select

        from indexer.db.models import ScoreBucketRow

        with ix.sessions() as s:
            left = s.execute(select(func.count()).select_from(ScoreBucketRow).where(ScoreBucketRow.n != 0)).scalar()
        assert left == sum(len(sk.keys) for m in ("image", "text") for sk in ix.score_sketch("d", m).values())
    finally:
        ix.close()


@pytest.mark.parametrize("narrow", [False, True], ids=["read", "counted"])
def test_the_percentile_cut_is_exact_on_every_store_and_falls_back_to_the_histogram(
    indexer: Indexer, narrow: bool, monkeypatch: pytest.MonkeyPatch
):
    """The cut-off of ``exclude_bottom_info_gain_pct``: the histogram finds the bucket, Qdrant's
    range index the value in it — exactly the sorted scores' ⌊share · n⌋-th, on Edge, qdrant-
    client's local mode and a server; growing and after a delete. Where Qdrant does not hold the
    values the database does (a push not yet made), the bucket's representative, within 0.5 %.
    ``counted``: the interval narrowed by Qdrant's counts down to the value itself (at 1M, two or
    three counts before reading a few dozen values), instead of reading the bucket's values."""
    from indexer import api

    if narrow:
        monkeypatch.setattr(api, "CUT_SCROLL", 1)
        counts: list[int] = []
        real = indexer.store.count
        monkeypatch.setattr(indexer.store, "count", lambda *a, **kw: counts.append(1) or real(*a, **kw))
    ix = indexer
    ix.create_collection("c", dim=16, min_count=4)
    img, txt = ellipsoid_pairs(400, 16, seed=3)
    ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(250)], batch_size=60)

    def check() -> np.ndarray:
        for m in ("image", "text"):
            ig = np.sort(ix.scores("c", m)["info_gain"])
            for share in (0.0, 0.01, 0.05, 0.3, 0.999):
                # exact: Qdrant's copy of the score may differ from the database's in the last bit
                want = ig[min(int(share * len(ig)), len(ig) - 1)]
                assert ix.score_cut("c", m, share) == pytest.approx(want, rel=1e-15, abs=0), (m, share)
        return np.sort(ix.scores("c", "image")["info_gain"])

    check()
    if narrow:
        assert counts  # the narrowing ran
    ix.add("c", [Item({"image": img[i]}, id=i) for i in range(250, 400)], batch_size=70)
    ix.delete("c", [str(i) for i in range(0, 40)])
    ig = check()

    # the bucket of the 5 % cut loses its values in Qdrant (as if its points were not pushed yet)
    c = ix.collection("c")
    want = ig[int(0.05 * len(ig))]
    scores = ix.scores("c", "image")
    same = [
        str(i) for i, v in zip(scores["ids"], scores["info_gain"], strict=True) if sketch.key(v) == sketch.key(want)
    ]
    pids = [
        h.id
        for h in ix.store.scroll(c.qdrant_collection, None, 1000, False).points
        if str(h.payload["inforank_id"]) in same
    ]
    ix.store.delete_payload(c.qdrant_collection, pids, ["image_info_gain"])
    got = ix.score_cut("c", "image", 0.05)
    k, _, _ = ix.score_sketch("c", "image")["info_gain"].locate(int(0.05 * len(ig)))
    assert got == sketch.value(np.array([k]))[0] == pytest.approx(want, rel=sketch.ALPHA)
