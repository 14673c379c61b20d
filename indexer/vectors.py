"""Validation and normalisation of incoming vectors: each bad row is named with its reason."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from indexer.errors import InvalidVectorError

#: a row whose norm is below this is "zero": its direction carries no information.
MIN_NORM = 1e-12
#: raw norms are merged into running sums of norms and squared norms (float64): a bound far
#: beyond any embedding model's output keeps those sums finite for billions of items.
MAX_NORM = 1e12


@dataclass(frozen=True)
class Checked:
    """Rows that passed, as float32 unit vectors (the exact values stored and merged)."""

    unit: NDArray[np.float32]
    norms: NDArray[np.float64]
    ok: NDArray[np.bool_]
    reasons: dict[int, str]


def problem_of_shape(shape: tuple[int, ...], dim: int) -> str | None:
    if len(shape) != 1:
        return f"expected a 1-D vector, got shape {shape}"
    if shape[0] != dim:
        return f"wrong dimension {shape[0]}, the collection expects {dim}"
    return None


def problem(vector: NDArray[np.floating], dim: int) -> str | None:
    """Why one vector cannot be used, or ``None`` when it can."""
    v = np.asarray(vector)
    return problem_of_shape(v.shape, dim) or check_rows(v[None], dim).reasons.get(0)


def check_rows(rows: NDArray[np.floating], dim: int) -> Checked:
    """Validate and normalise a 2-D batch; bad rows are reported, good rows kept."""
    arr = np.asarray(rows)
    if arr.ndim != 2:
        raise InvalidVectorError(f"expected a 2-D array of vectors, got shape {arr.shape}.")
    if arr.shape[1] != dim:
        reason = problem_of_shape(arr.shape[1:], dim)
        assert reason is not None
        return Checked(
            np.zeros((0, dim), np.float32),
            np.zeros(0),
            np.zeros(arr.shape[0], bool),
            dict.fromkeys(range(arr.shape[0]), reason),
        )
    a64 = np.asarray(arr, dtype=np.float64)
    finite = np.all(np.isfinite(a64), axis=1)
    # norms and units from one scaling (safe_norms and normalise each scale on their own)
    scaled, length, scale = _scaled(np.where(finite[:, None], a64, 0.0))
    with np.errstate(over="ignore"):
        norms = length * scale[:, 0]
    ok = finite & (norms >= MIN_NORM) & (norms <= MAX_NORM)
    reasons = {int(i): _reason(bool(finite[i]), float(norms[i])) for i in np.flatnonzero(~ok)}
    unit = (scaled[ok] / length[ok, None]).astype(np.float32)
    return Checked(unit, norms[ok], ok, reasons)


def _reason(finite: bool, norm: float) -> str:
    if not finite:
        return "vector contains NaN or Inf"
    if norm < MIN_NORM:
        return "zero vector has no direction"
    return f"vector norm {norm:.3g} is above {MAX_NORM:.0e}: scale the vectors down"


def safe_norms(rows: NDArray[np.floating]) -> NDArray[np.float64]:
    """Row norms that neither overflow (components of 1e300) nor underflow: each row is scaled
    by its largest component first, the way LAPACK's ``nrm2`` does."""
    _, length, scale = _scaled(np.asarray(rows, dtype=np.float64))
    with np.errstate(over="ignore"):
        return length * scale[:, 0]


def _scaled(a: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Rows divided by their :func:`_pow2_scale` (exact), their norms (which can neither
    overflow nor underflow: the largest component is in [0.5, 1)), and the scales."""
    scale = _pow2_scale(a)
    scaled = a / scale
    return scaled, np.linalg.norm(scaled, axis=1), scale


def _pow2_scale(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per row, the power of two at or just below its largest component (1 for a zero row):
    dividing by it is exact, so scaled results equal unscaled ones wherever those are finite,
    and it never overflows (the largest finite double is below 2**1024)."""
    top = np.max(np.abs(a), axis=1, keepdims=True) if a.size else np.zeros((len(a), 1))
    _, exp = np.frexp(top)  # top = f · 2**exp with 0.5 <= f < 1
    return np.where(top > 0, np.ldexp(1.0, exp - 1), 1.0)


def normalise(rows: NDArray[np.floating]) -> NDArray[np.float32]:
    """Unit rows in float32: normalised in float64, then rounded once.

    The float32 values are what Qdrant stores and what the statistics merge (as float64), so
    removing an item later subtracts exactly what was added.
    """
    scaled, length, _ = _scaled(np.asarray(rows, dtype=np.float64))
    return (scaled / length[:, None]).astype(np.float32)


def as_query(vector: NDArray[np.floating] | list[float], dim: int) -> NDArray[np.float64]:
    """A single query vector, validated and normalised, or an :class:`InvalidVectorError`."""
    v = np.asarray(vector, dtype=np.float64)
    why = problem_of_shape(v.shape, dim)
    if why is None and not np.all(np.isfinite(v)):
        why = "vector contains NaN or Inf"
    if why is None and safe_norms(v[None])[0] < MIN_NORM:
        why = "zero vector has no direction"
    if why:
        raise InvalidVectorError(f"The query vector is unusable: {why}.")
    return normalise(v[None])[0].astype(np.float64)
