"""Shared helpers: timing, synthetic CLIP-shaped data, result printing."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Minimum wall time of ``repeat`` runs (seconds): the least noisy figure on a shared machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def clip_like(n: int, d: int = 512, seed: int = 0, shift: int = 0) -> np.ndarray:
    """Anisotropic, off-centre unit vectors: the shape of one CLIP modality's shell."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 0.02, d)
    x = rng.standard_normal((n, d)).astype(np.float32) * scales.astype(np.float32)
    x[:, shift] += 1.5
    return x / np.linalg.norm(x, axis=1, keepdims=True)


COCO = Path(__file__).resolve().parents[1] / "retrieval" / "data" / "coco500_clip_vitb16.npy"


def coco_shaped(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` unit vectors drawn from a Gaussian with the mean and covariance of the 500 real
    CLIP ViT-B/16 COCO image embeddings, and those real image and text embeddings (unit, float64)."""
    f = np.load(COCO).astype(np.float64)
    img, txt = (f[i] / np.linalg.norm(f[i], axis=1, keepdims=True) for i in (0, 1))
    d = img.shape[1]
    chol = np.linalg.cholesky(np.cov(img.T) + 1e-6 * np.eye(d))
    g = img.mean(0) + np.random.default_rng(seed).normal(size=(n, d)) @ chol.T
    return (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32), img, txt


@contextmanager
def serving(env: dict[str, str], cwd: Path | None = None) -> Iterator[str]:
    """``inforank serve`` in a process of its own on a free port (``env`` on top of this one's;
    ``cwd``: another checkout to serve, for a same-run baseline); yields its URL once healthy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    full = {**os.environ, **env, **({"PYTHONPATH": str(cwd)} if cwd else {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port)],
        cwd=cwd,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def closed_loop(
    url: str, clients: int, per_client: int, request: Callable[[int, int], tuple[str, Any]], timeout: float = 120
) -> dict[str, Any]:
    """``clients`` threads, each posting ``per_client`` requests one after another;
    ``request(client, j)`` gives (path, JSON body). Returns the latencies (s), errors and wall time."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()

    def worker(k: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=timeout) as c:
            for j in range(per_client):
                path, body = request(k, j)
                t = time.perf_counter()
                r = c.post(path, json=body)
                with lock:
                    lat.append(time.perf_counter() - t)
                    errors += r.status_code != 200

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10 * timeout)
    return {"latencies": lat, "errors": errors, "wall": time.perf_counter() - t0}


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}"


def report(name: str, data: dict[str, Any]) -> dict[str, Any]:
    data = {"benchmark": name, "machine": machine(), **data}
    print(json.dumps(data, default=float))
    return data


def embedded(root: Path, *, auto_rescore: bool = True) -> Any:
    """An indexer on the embedded default under ``root`` (SQLite + Qdrant Edge), as a fresh
    machine runs it."""
    from indexer.api import Indexer
    from indexer.store import QdrantLocation

    return Indexer(
        f"sqlite:///{root / 'db.sqlite'}", QdrantLocation(edge_path=str(root / "edge")), auto_rescore=auto_rescore
    )


@contextmanager
def paired_store(img: np.ndarray, txt: np.ndarray, name: str = "c", batch: int = 4096) -> Iterator[Any]:
    """A fresh embedded indexer (automatic rescores off) in a temporary directory, with
    collection ``name`` holding ``img[i]``/``txt[i]`` as item ``i``; closed and removed after."""
    import tempfile

    from indexer.items import Item

    with tempfile.TemporaryDirectory() as d:
        ix = embedded(Path(d), auto_rescore=False)
        try:
            ix.create_collection(name, dim=img.shape[1])
            ix.add(name, [Item({"image": img[i], "text": txt[i]}, id=i) for i in range(len(img))], batch_size=batch)
            yield ix
        finally:
            ix.close()
