"""Run every benchmark; ``--small`` for a quick pass (minutes), default sizes otherwise.

python -m bench.run_all [--small] [--out bench/results.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import encode, evaluate, freshness, hubness, ingest, scoring, search, stats_persist, storage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", action="store_true", help="10k points instead of 100k")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="'' to skip PostgreSQL")
    p.add_argument("--out", type=Path, default=Path("bench/results.json"))
    a = p.parse_args()
    n = 10_000 if a.small else 100_000
    results = [
        scoring.run(n, ref=2_000 if a.small else 10_000, exact_items=500 if a.small else 2_000),
        stats_persist.run(a.pg or None, rounds=5 if a.small else 20),
        ingest.run(n),
        ingest.small_writes(n // 2),
        storage.run(n, repeat=1 if a.small else 2),
        freshness.run(n),
        hubness.run(n // 2, 50 if a.small else 200),
        hubness.follow(n // 50 if a.small else n // 5),
        hubness.shrink(n // 2),
        evaluate.run(n // 10),
        search.run(n, 50 if a.small else 200),
        encode.run(n=64 if a.small else 512),
    ]
    a.out.write_text(json.dumps(results, indent=2, default=float))
    print(f"results written to {a.out}")


if __name__ == "__main__":
    main()
