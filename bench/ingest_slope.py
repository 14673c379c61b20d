"""Does the write slow down as a collection grows, with the database's indexes of this stop and
with those before it? Two collections on the embedded default, filled chunk by chunk in turn
(chunk i of one, then chunk i of the other, so a drift of the machine touches both alike),
without HNSW builds: the write alone. ``stop 17's indexes`` re-creates what migrations 0010 and
0011 changed: the index on score values (``collection_id, modality, info_gain, conformity`` on
``item_vectors``) and the dirty-point index over every point (``collection_id, dirty,
item_key`` on ``points``), as every write before them paid.

    python -m bench.ingest_slope [--n 1000000] [--chunk 100000] [--ids int|uuid] [--dir DIR]

``--ids uuid`` gives every item a random UUID string as its id (what items without an id get:
a hash of their content), so the database's keys arrive in random order, where the default ids
0…n-1 arrive in order.

Reports pairs/s per chunk for each, the last chunk over the first (issue 13's goal: ≥ 0.8×), and
the whole ingest's seconds. Needs about 2 × 5 GB of disk at 1M.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.common import clip_like, embedded, report
from indexer.items import Item
from retrieval.cli.common import settled_heap

BEFORE = "stop 17's indexes"
OLD_INDEXES = (
    "CREATE INDEX ix_item_vectors_score_values ON item_vectors (collection_id, modality, info_gain, conformity)",
    "DROP INDEX ix_points_dirty",
    "CREATE INDEX ix_points_dirty ON points (collection_id, dirty, item_key)",
)


def run(n: int = 1_000_000, chunk: int = 100_000, root: Path | None = None, ids: str = "int") -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(dir=root))
    kinds = {"shipped": tmp / "shipped", BEFORE: tmp / "before"}
    ixs = {}
    try:
        for kind, d in kinds.items():
            d.mkdir()
            ix = ixs[kind] = embedded(d)
            ix.create_collection("slope", dim=512, min_count=32)
            if kind != "shipped":
                with ix.engine.begin() as c:
                    for stmt in OLD_INDEXES:
                        c.execute(text(stmt))
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        with settled_heap():  # the garbage-collector policy `inforank ingest` runs with
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                img = clip_like(m, seed=start + 1)
                txt = clip_like(m, seed=start + 2, shift=1)
                keys = [start + i for i in range(m)] if ids == "int" else [str(uuid.uuid4()) for _ in range(m)]
                for kind, ix in ixs.items():
                    items = (Item({"image": img[i], "text": txt[i]}, id=keys[i]) for i in range(m))
                    t = time.perf_counter()
                    ix.add("slope", items, batch_size=1024, index=False)
                    rates[kind].append(m / (time.perf_counter() - t))
                print(start + m, {k: round(v[-1]) for k, v in rates.items()}, flush=True)
        return report(
            "ingest_slope",
            {
                "pairs": n,
                "chunk": chunk,
                "ids": ids,
                **{
                    kind: {
                        "pairs_per_s": [round(r) for r in r_],
                        "last_over_first": r_[-1] / r_[0],
                        "seconds": sum(min(chunk, n - i * chunk) / r for i, r in enumerate(r_)),
                    }
                    for kind, r_ in rates.items()
                },
                "goal": {"last_over_first": 0.8},
            },
        )
    finally:
        for ix in ixs.values():
            ix.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--ids", choices=("int", "uuid"), default="int")
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()
    run(a.n, a.chunk, a.dir, a.ids)
