"""Scores of stored vectors from the current statistics of both modalities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from indexer import scores
from indexer.moments import Moments


@dataclass(frozen=True)
class Scored:
    conformity: NDArray[np.float64] | None  # None: not computable yet (pending)
    info_gain: NDArray[np.float64] | None


def score_members(unit: NDArray[np.floating], own: Moments, other: Moments, tau: float, min_count: int) -> Scored:
    """Scores of vectors that are members of ``own`` (already merged into it).

    Conformity needs two items in the modality; information gain needs ``min_count`` items of
    the *other* modality, whose covariance it uses. Until then the score is pending, not zero.
    """
    conf = scores.conformity(unit, own.mean, own.n) if own.n >= 2 else None
    ig = None
    if other.n >= min_count and own.n >= 1:
        ig = scores.info_gain(unit, own.mean, other.covariance, tau, dtype=np.float64)
    return Scored(conf, ig)


def drift(now: Moments, base: Moments) -> float | None:
    """Relative change of the mean and covariance since ``base``: the larger of the two."""
    if base.n == 0 or now.n == 0:
        return None
    dm = float(np.linalg.norm(now.mean - base.mean)) / max(float(np.linalg.norm(now.mean)), 1e-12)
    cn = now.covariance
    dc = float(np.linalg.norm(cn - base.covariance)) / max(float(np.linalg.norm(cn)), 1e-12)
    return float(max(dm, dc))
