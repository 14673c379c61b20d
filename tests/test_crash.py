"""kill -9 at random moments during ingestion, then rerun: both stores agree exactly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.api import Indexer
from indexer.moments import Moments
from indexer.store import QdrantLocation
from tests import workers

pytestmark = pytest.mark.slow
ROOT = Path(workers.__file__).resolve().parents[1]
N = 1500


def _run(db: str, edge: Path, kill_after: tuple[int, float] | None) -> int | None:
    """Run the ingest worker; with ``kill_after=(batches, seconds)``, SIGKILL it that many
    seconds after it reported that many committed batches (mid-commit or mid-sync)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.workers", db, str(edge), str(N), "50"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if kill_after is None:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        return proc.returncode
    batches, delay = kill_after
    assert proc.stdout is not None
    for _ in range(batches):
        if not proc.stdout.readline():
            break
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return proc.returncode


def _check(db: str, edge: Path) -> None:
    ix = Indexer(db, QdrantLocation(edge_path=str(edge)))
    c = ix.collection("c")
    assert ix.sync("c") == 0  # the completed run left nothing dirty
    assert ix.store.count("c") == N
    for m in ("image", "text"):
        ids, unit, norms = ix.vectors("c", m)
        assert len(ids) == N
        _, got = ix.moments("c", m)
        want = Moments.from_batch(unit.astype(np.float64), norms)
        assert got.n == N  # no double counting, no loss
        assert np.max(np.abs(got.m2 - want.m2)) <= 1e-9 * np.max(np.abs(want.m2))
    # Qdrant payloads equal what the database says, point by point
    s = ix.scores("c", "image")
    page = ix.store.scroll("c", None, N + 10, False)
    by_id = {h.payload["inforank_id"]: h.payload for h in page.points}
    assert len(by_id) == N
    for uid, ig in zip(s["ids"], s["info_gain"], strict=True):
        assert by_id[uid]["image_info_gain"] == pytest.approx(ig, rel=1e-12)
    assert c.stats_version >= 1
    ix.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_dash_nine_then_rerun_agrees(backend, tmp_path: Path, request):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    edge = tmp_path / "edge"
    killed = 0
    rng = np.random.default_rng(7)
    for _ in range(4):
        when = (int(rng.integers(1, 6)), float(rng.uniform(0.0, 0.08)))
        if _run(db, edge, when) == -signal.SIGKILL:
            killed += 1
    _run(db, edge, None)
    assert killed >= 1, "no run was killed mid-way; the test proved nothing"
    _check(db, edge)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_dash_nine_during_rescore_then_rerun_agrees(backend, tmp_path: Path, request):
    """A rescore killed between its commits and its payload pushes: the rerun replays what was
    left, finishes the pass, and the stores agree with every score within tolerance."""
    from tests.consistency import assert_consistent

    db = f"sqlite:///{tmp_path / 'db.sqlite'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    edge = tmp_path / "edge"
    ix = Indexer(db, QdrantLocation(edge_path=str(edge)), auto_rescore=False)
    ix.create_collection("c", dim=workers.D, min_count=8)
    ix.add("c", workers.items(0, 100))
    ix.add("c", workers.items(100, 1200, seed=1))  # the first 100 pairs are stale now
    ix.close()
    killed = 0
    rng = np.random.default_rng(11)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.workers", "rescore", db, str(edge), "40"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        for _ in range(int(rng.integers(1, 4))):
            if not proc.stdout.readline():
                break
        time.sleep(float(rng.uniform(0.0, 0.02)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(30)
    assert killed >= 1, "no rescore was killed mid-way; the test proved nothing"
    ix = Indexer(db, QdrantLocation(edge_path=str(edge)), auto_rescore=False)
    try:
        rep = ix.rescore("c")  # finishes the interrupted pass (and replays what it left unpushed)
        assert not any(f["outside_tolerance"] for f in rep.freshness.values())
        assert all(f["unchecked_rows"] == 0 for f in rep.freshness.values())
        assert_consistent(ix, "c")
    finally:
        ix.close()
