"""One BLAS thread while a write's numpy work runs.

A write batch multiplies a 1,024 × 512 batch by 512 × 512 matrices a few times (the statistics
merge, the scores): products too small for OpenBLAS's thread pool to pay off, whose threads then
spin between batches on a core that Qdrant Edge and the database need. Measured on 2 cores at
100k items (BENCHMARKS.md): the ingest used 52 CPU-seconds for 34 s of wall time with the pool,
29 CPU-seconds for 31.5 s without it. Large products elsewhere (a hubness fit's 50k × 50k) keep
the pool: only the writer's sections are limited.

Only sections on the main thread limit the pool (the CLI's ingest, a script's bulk ``add``). The
pool size is process-wide, and OpenBLAS ignores a size set from another thread once the main
thread has set one (measured with OpenBLAS 0.3.31): a section left last by a worker thread could
not give the pool back. The service's writes run on worker threads and keep the pool as it is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np  # noqa: F401  (loads the BLAS the controller below must find)
from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_depth = 0
_limiter: Any = None
_controller: ThreadpoolController | None = None


@contextmanager
def one_thread() -> Iterator[None]:
    """BLAS limited to one thread inside; the previous limits restored when no section is left."""
    global _depth, _limiter
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _lock:
        if _depth == 0:
            _limiter = _the_controller().limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None


def blas_threads() -> int:
    """The BLAS pool's current size (the largest over the loaded BLAS libraries; 0 without one)."""
    with _lock:
        libs = _the_controller().select(user_api="blas").lib_controllers
    return max((lib.num_threads for lib in libs), default=0)


def _the_controller() -> ThreadpoolController:
    """One controller per process (finding the libraries takes ≈ 1 ms); call under ``_lock``."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


__all__ = ["blas_threads", "one_thread"]
