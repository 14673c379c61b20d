"""Shared fixtures: real PostgreSQL (testcontainers where Docker runs, else the local server),
fresh stores per test, and the real COCO CLIP pairs shipped in retrieval/data."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from indexer.api import Indexer
from indexer.store import QdrantLocation

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "retrieval" / "data" / "coco500_clip_vitb16.npy"
LOCAL_PG = os.environ.get("INFORANK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


DOCKER = docker_available()
NO_DOCKER = "no Docker engine on this machine: testcontainers cannot start servers"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch a real ./data or the user's environment."""
    monkeypatch.chdir(tmp_path)
    for var in ("INFORANK_DATABASE_URL", "INFORANK_QDRANT_URL", "INFORANK_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("INFORANK_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Admin URL of a real PostgreSQL server."""
    if DOCKER:
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    try:
        psycopg.connect(LOCAL_PG, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {LOCAL_PG} ({exc}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`."
        )
    yield LOCAL_PG


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"inforank_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = pg_server.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'inforank.sqlite'}"


QDRANT_IMAGE = "qdrant/qdrant:v1.17.0"


@pytest.fixture(scope="session")
def qdrant_server() -> Iterator[str]:
    """URL of a real Qdrant server started by testcontainers (skipped without Docker)."""
    if not DOCKER:
        pytest.skip(NO_DOCKER)
    from testcontainers.community.qdrant import QdrantContainer

    with QdrantContainer(QDRANT_IMAGE) as q:
        yield f"http://{q.rest_host_address}"


@pytest.fixture(params=["edge", "client-local", "server"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> QdrantLocation:
    """Every backend behind the one interface: embedded Edge, qdrant-client local mode (speaks
    the server's API) and, where Docker runs, a real Qdrant server. Same tests for all."""
    if request.param == "edge":
        return QdrantLocation(edge_path=str(tmp_path / "edge"))
    if request.param == "server":
        url = request.getfixturevalue("qdrant_server")
        from qdrant_client import QdrantClient

        client = QdrantClient(url=url)
        for c in client.get_collections().collections:  # a clean server per test
            client.delete_collection(c.name)
        return QdrantLocation(url=url)
    return QdrantLocation(local_path=":memory:")


@pytest.fixture
def indexer(sqlite_url: str, location: QdrantLocation) -> Iterator[Indexer]:
    ix = Indexer(sqlite_url, location)
    yield ix
    ix.close()


@pytest.fixture(scope="session")
def coco() -> tuple[np.ndarray, np.ndarray]:
    """Real CLIP ViT-B/16 image and text embeddings of 500 COCO pairs (row i paired)."""
    feats = np.load(COCO).astype(np.float64)
    return feats[0], feats[1]


def ellipsoid_pairs(n: int, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic paired embeddings with the double-ellipsoid shape: two shifted, anisotropic
    shells sharing a latent signal, so pairs are closer than non-pairs."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(2.0, 0.2, d)
    z = rng.normal(size=(n, d)) * scales
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
    img = z + 0.5 * rng.normal(size=(n, d)) + 3.0 * np.eye(d)[0] * scales.max()
    txt = z @ rot.T * 0.3 + z * 0.7 + 0.5 * rng.normal(size=(n, d)) + 3.0 * np.eye(d)[1] * 2
    return img, txt


def coco_pairs_indexer(root: Path) -> tuple[Indexer, np.ndarray]:
    """An embedded indexer under ``root`` with the 500 COCO pairs as collection "c" (id i =
    row i), and the raw features (images, texts)."""
    from indexer.items import Item

    feats = np.load(COCO).astype(np.float64)
    ix = Indexer(f"sqlite:///{root / 'c.sqlite'}", QdrantLocation(edge_path=str(root / "q")))
    ix.create_collection("c", dim=512)
    ix.add("c", [Item({"image": feats[0][i], "text": feats[1][i]}, id=i) for i in range(500)])
    return ix, feats
