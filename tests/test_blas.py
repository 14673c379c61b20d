"""The writer's small products run on one BLAS thread; the pool is back when no write runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from indexer import blas, writer
from indexer.api import Indexer
from indexer.items import Item
from indexer.store import QdrantLocation
from tests.conftest import ellipsoid_pairs

pytestmark = pytest.mark.skipif(blas.blas_threads() == 0, reason="numpy is linked to no BLAS threadpoolctl knows")


def test_a_write_scores_on_one_blas_thread_and_gives_the_pool_back(tmp_path: Path, monkeypatch):
    seen: list[int] = []
    real = writer.score_members

    def spy(*a, **k):
        seen.append(blas.blas_threads())
        return real(*a, **k)

    monkeypatch.setattr(writer, "score_members", spy)
    img, txt = ellipsoid_pairs(300, 16, seed=1)
    with threadpool_limits(limits=2, user_api="blas"):  # a pool of 2 whatever the machine
        ix = Indexer(f"sqlite:///{tmp_path / 'b.sqlite'}", QdrantLocation(edge_path=str(tmp_path / "e")))
        try:
            ix.create_collection("c", dim=16, min_count=4)
            ix.add("c", [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(300)], batch_size=100)
            assert seen and set(seen) == {1}
            assert blas.blas_threads() == 2
        finally:
            ix.close()


_WORKER = """
import sys, threading
import numpy as np
from indexer import blas, writer
from indexer.api import Indexer
from indexer.items import Item
from indexer.store import QdrantLocation
seen = []
real = writer.score_members
writer.score_members = lambda *a, **k: seen.append(blas.blas_threads()) or real(*a, **k)
root = sys.argv[1]
ix = Indexer(f"sqlite:///{root}/w.sqlite", QdrantLocation(edge_path=f"{root}/e"))
ix.create_collection("c", dim=8, min_count=4)
rng = np.random.default_rng(0)
items = [Item({"image": rng.normal(size=8), "text": rng.normal(size=8)}, id=i) for i in range(50)]
t = threading.Thread(target=ix.add, args=("c", items))
t.start()
t.join(60)
ix.close()
print(blas.blas_threads(), sorted(set(seen)))
"""


@pytest.mark.skipif(blas.blas_threads() < 2, reason="a BLAS pool of one thread: nothing to limit")
def test_a_write_on_a_worker_thread_leaves_the_pool_alone(tmp_path: Path):
    """OpenBLAS ignores a size set from a worker once the main thread has set one, so a worker's
    section could not always give the pool back: only the main thread limits it. A fresh process
    (whose main thread never set a size) so that a worker's limit would show."""
    out = subprocess.run([sys.executable, "-c", _WORKER, str(tmp_path)], capture_output=True, text=True, check=True)
    pool, seen = out.stdout.split(" ", 1)
    assert int(pool) >= 2 and seen.strip() == f"[{pool}]"


def test_nested_sections_on_the_main_thread_share_one_limit():
    with threadpool_limits(limits=2, user_api="blas"):
        with blas.one_thread(), blas.one_thread():
            assert blas.blas_threads() == 1
            assert (np.ones((4, 4)) @ np.ones((4, 4)))[0, 0] == 4
        assert blas.blas_threads() == 2
