"""Per-item geometry scores, batched and free of any storage concern.

All functions take L2-normalised rows (see :func:`indexer.vectors.normalise`).

- conformity: mean cosine of an item to the rest of its modality (double-ellipsoid paper,
  Definition 1), exactly ``(n·û·m̂ − 1)/(n − 1)`` for a member, ``û·m̂`` for an outsider.
- information gain (information-gain paper, Theorem 4.1):
  ``½ (û − m̂_own)ᵀ Σ_other (û − m̂_own) / τ²``
  with the population covariance of the *other* modality.
- exact information gain: ``KL(p(·|x) ‖ p(·))`` against a reference sample, for validation.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_softmax, logsumexp

from indexer.errors import InvalidInputError

#: rows scored per GEMM: keeps the temporary ``chunk × d`` products in cache-friendly memory.
CHUNK = 16384


def conformity(unit: NDArray[np.floating], mean: NDArray[np.floating], n: int | None) -> NDArray:
    """Conformity of each row against a modality with normalised mean ``mean``.

    ``n`` is the modality's count when the rows are *members* (they are included in ``mean``);
    pass ``None`` for items scored against a set they do not belong to.
    """
    dots = np.asarray(unit, dtype=np.float64) @ np.asarray(mean, dtype=np.float64)
    if n is None:
        return dots
    if n < 2:
        raise InvalidInputError("conformity of a member needs at least 2 items in its modality.")
    return (n * dots - 1.0) / (n - 1.0)


def info_gain(
    unit: NDArray[np.floating],
    own_mean: NDArray[np.floating],
    other_cov: NDArray[np.floating],
    tau: float = 1.0,
    dtype: type[np.floating] = np.float32,
) -> NDArray[np.float64]:
    """Norm-based information gain of each row: ``½ cᵀ Σ_other c / τ²`` with ``c = û − m̂_own``.

    Computed chunk by chunk as one GEMM each; ``dtype=np.float32`` (default) runs at the
    machine's single-precision matrix-multiply rate, ``np.float64`` when exactness matters.
    """
    if tau <= 0:
        raise InvalidInputError("the temperature tau must be positive.")
    u = np.asarray(unit)
    sigma = np.asarray(other_cov, dtype=dtype)
    m = np.asarray(own_mean, dtype=dtype)
    out = np.empty(u.shape[0], dtype=np.float64)
    for start in range(0, u.shape[0], CHUNK):
        c = np.asarray(u[start : start + CHUNK], dtype=dtype) - m
        out[start : start + CHUNK] = np.einsum("ij,ij->i", c @ sigma, c)
    out *= 0.5 / (tau * tau)
    return out


def info_gain_exact(
    unit: NDArray[np.floating],
    ref_other: NDArray[np.floating],
    ref_own: NDArray[np.floating],
    tau: float = 1.0,
) -> NDArray[np.float64]:
    """Exact ``KL(p(·|x) ‖ p(·))`` against a reference sample of the other modality.

    ``p(t_i|x) = softmax_i(cos(x, t_i)/τ)``; the prior ``p(t_i)`` is the mean posterior over
    ``ref_own`` (the reference items of the scored modality). Cost O(N·(n + N_own)·d).
    """
    if tau <= 0:
        raise InvalidInputError("the temperature tau must be positive.")
    other = np.asarray(ref_other, dtype=np.float64)
    log_prior = _log_prior(np.asarray(ref_own, dtype=np.float64), other, tau)
    u = np.asarray(unit, dtype=np.float64)
    out = np.empty(u.shape[0])
    step = max(1, CHUNK // 4)
    for start in range(0, u.shape[0], step):
        logp = log_softmax((u[start : start + step] @ other.T) / tau, axis=1)
        out[start : start + step] = np.sum(np.exp(logp) * (logp - log_prior), axis=1)
    return out


def _log_prior(own: NDArray[np.float64], other: NDArray[np.float64], tau: float) -> NDArray:
    acc = np.full(other.shape[0], -np.inf)
    for start in range(0, own.shape[0], CHUNK // 4):
        logp = log_softmax((own[start : start + CHUNK // 4] @ other.T) / tau, axis=1)
        acc = np.logaddexp(acc, logsumexp(logp, axis=0))
    return acc - np.log(own.shape[0])


def r_squared(y: NDArray[np.floating], x: NDArray[np.floating]) -> float:
    """Coefficient of determination of the best linear fit of ``y`` on ``x`` (squared Pearson)."""
    yv = np.asarray(y, dtype=np.float64)
    xv = np.asarray(x, dtype=np.float64)
    if yv.size < 3 or np.std(xv) == 0 or np.std(yv) == 0:
        return float("nan")
    return float(np.corrcoef(xv, yv)[0, 1] ** 2)
