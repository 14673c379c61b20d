"""How far a stored score can be from its value under the current statistics, for every item
at once, and when a rescore is due (docs/DESIGN.md, "Freshness").

A score is computed with the statistics of one version; later writes move them. For two
versions 0 → 1 and any unit vector v̂ (Cauchy–Schwarz; spectral norms bounded by Frobenius norms):

- conformity of a member, ``a·v̂ − b`` with ``a = n·m̂/(n−1)``, ``b = 1/(n−1)``:
  ``|C₁ − C₀| ≤ |a₁ − a₀| + |b₁ − b₀|``;
- information gain ``½ (v̂−m)ᵀ Σ (v̂−m) / τ²`` (own mean m, other modality's covariance Σ):
  ``|g₁ − g₀| ≤ ½ (‖ΔΣ‖ r² + 2‖Σ₁‖ r |Δm| + ‖Σ₁‖ |Δm|²) / τ²`` with ``r = 1 + |m₀|``.

Every rescore scores against one snapshot, the *baseline*. A row checked since is within
``spread`` of its baseline value (the rescore's skip tolerance, or the shift from the baseline to
the version a write scored it at); a row not checked since within ``pending``. By the triangle
inequality every stored score is within ``shift(baseline → now) + max(spread, pending)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from indexer.moments import Moments

#: a rescore of a large collection is due only once the items written since its baseline reach
#: this share of it, so the rows checked while a collection grows to N stay ≤ N·(1+ρ)/ρ …
BUDGET = 0.25
#: … while a collection this small is kept within tolerance after every write, whatever the
#: statistics do: its statistics move past the tolerance with almost every batch, so each write
#: re-checks every row (≈0.2 s at 2,500 rows of 512-d on SQLite; the service runs it in the
#: background); this adds at most a constant FRESH_BELOW² / (2 · batch) rows to a growing
#: collection's total
FRESH_BELOW = 2_500
#: a rescore leaves a score as it is when it moved less than this share of the tolerance
SKIP_SHARE = 0.5


@dataclass(frozen=True)
class Shift:
    """Largest possible change of any stored score between two versions of the statistics."""

    conformity: float
    info_gain: float

    def __add__(self, other: Shift) -> Shift:
        return Shift(self.conformity + other.conformity, self.info_gain + other.info_gain)

    def max(self, other: Shift) -> Shift:
        return Shift(max(self.conformity, other.conformity), max(self.info_gain, other.info_gain))


ZERO = Shift(0.0, 0.0)
UNKNOWN = Shift(math.inf, math.inf)


def conformity_shift(a: Moments, b: Moments) -> float:
    if a.n < 2 or b.n < 2:
        return 0.0 if a.n == b.n else math.inf
    da = np.linalg.norm(b.n * b.mean / (b.n - 1) - a.n * a.mean / (a.n - 1))
    return float(da + abs(1 / (b.n - 1) - 1 / (a.n - 1)))


def info_gain_shift(own_a: Moments, own_b: Moments, other_a: Moments, other_b: Moments, tau: float) -> float:
    if other_a.n == 0 or own_a.n == 0:
        return 0.0 if (other_a.n, own_a.n) == (other_b.n, own_b.n) else math.inf
    r = 1.0 + float(np.linalg.norm(own_a.mean))
    dm = float(np.linalg.norm(own_b.mean - own_a.mean))
    cov_b = other_b.covariance
    d_sigma = float(np.linalg.norm(cov_b - other_a.covariance))  # Frobenius ≥ spectral
    s1 = float(np.linalg.norm(cov_b))
    return 0.5 * (d_sigma * r * r + 2 * s1 * r * dm + s1 * dm * dm) / (tau * tau)


def shift(base: dict[str, Moments], now: dict[str, Moments], m: str, other: str, tau: float) -> Shift:
    """Largest change of modality ``m``'s scores from statistics ``base`` to ``now``."""
    empty = Moments.empty(now[m].dim)
    ob, on = base.get(other, empty), now.get(other, empty)
    return Shift(conformity_shift(base[m], now[m]), info_gain_shift(base[m], now[m], ob, on, tau))


def mean_info_gain(own: Moments, other: Moments, tau: float) -> float:
    """The modality's mean information gain, exactly: ``½ tr(Σ_other Σ_own) / τ²``."""
    if own.n == 0 or other.n == 0:
        return 0.0
    return 0.5 * float(np.sum(other.covariance * own.covariance)) / (tau * tau)


@dataclass(frozen=True)
class Tolerance:
    """Absolute tolerances of one modality: conformity as given, information gain as the
    collection's fraction of the modality's mean information gain."""

    conformity: float
    info_gain: float

    def holds(self, s: Shift) -> bool:
        return s.conformity <= self.conformity and s.info_gain <= self.info_gain

    def skip(self) -> Shift:
        return Shift(SKIP_SHARE * self.conformity, SKIP_SHARE * self.info_gain)


def budget_allows(changes: int, n: int, fresh_below: int = FRESH_BELOW) -> bool:
    """A rescore of ``n`` items is paid for by ``BUDGET · n`` writes since the last one, or
    cheap enough to run after every write."""
    return n <= fresh_below or changes >= BUDGET * max(n, 1)


__all__ = [
    "BUDGET",
    "FRESH_BELOW",
    "SKIP_SHARE",
    "UNKNOWN",
    "ZERO",
    "Shift",
    "Tolerance",
    "budget_allows",
    "conformity_shift",
    "info_gain_shift",
    "mean_info_gain",
    "shift",
]
