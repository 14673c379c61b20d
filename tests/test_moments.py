import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.errors import InvalidInputError
from indexer.moments import Moments
from indexer.vectors import normalise


def _data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, d)) * np.linspace(3, 0.1, d) + 2.0
    return normalise(raw).astype(np.float64), np.linalg.norm(raw, axis=1)


def _close(a: Moments, b: Moments, rtol: float = 1e-9, scale: Moments | None = None) -> None:
    """Equal to ``rtol`` relative to the magnitude of ``scale`` (default: ``b`` itself)."""
    ref = scale or b
    assert a.n == b.n
    for x, y, r in [
        (a.mean, b.mean, ref.mean),
        (a.m2, b.m2, ref.m2),
        (a.raw_mean, b.raw_mean, ref.raw_mean),
    ]:
        assert np.max(np.abs(x - y)) <= rtol * max(np.max(np.abs(r)), 1e-300)
    assert a.norm_sum == pytest.approx(b.norm_sum, rel=rtol)
    assert a.norm_sq_sum == pytest.approx(b.norm_sq_sum, rel=rtol)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 300),
    d=st.integers(2, 24),
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.floats(0, 1), max_size=8),
    order_seed=st.integers(0, 10_000),
)
def test_merging_any_partition_in_any_order_equals_scratch(n, d, seed, cuts, order_seed):
    u, norms = _data(n, d, seed)
    edges = sorted({0, n, *(int(c * n) for c in cuts)})
    parts = [Moments.from_batch(u[a:b], norms[a:b]) for a, b in itertools.pairwise(edges)]
    np.random.default_rng(order_seed).shuffle(parts)
    acc = Moments.empty(d)
    for p in parts:
        acc = acc.merge(p)
    _close(acc, Moments.from_batch(u, norms))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 300),
    d=st.integers(2, 24),
    seed=st.integers(0, 10_000),
    k=st.floats(0.05, 0.95),
)
def test_unmerge_inverts_merge(n, d, seed, k):
    u, norms = _data(n, d, seed)
    cut = max(1, min(n - 1, int(k * n)))
    whole = Moments.from_batch(u, norms)
    rest = whole.unmerge(Moments.from_batch(u[cut:], norms[cut:]))
    # Relative to the aggregate the part was removed from: a removed batch's rounding residue
    # is of that scale, not of the (possibly zero) remainder.
    _close(rest, Moments.from_batch(u[:cut], norms[:cut]), rtol=1e-9, scale=whole)


def test_covariance_is_population_form():
    u, norms = _data(50, 5, 1)
    m = Moments.from_batch(u, norms)
    assert np.allclose(m.covariance, np.cov(u.T, bias=True), atol=1e-14)


def test_removing_everything_gives_empty_and_too_much_is_refused():
    u, norms = _data(10, 4, 2)
    m = Moments.from_batch(u, norms)
    assert m.unmerge(m).n == 0
    with pytest.raises(InvalidInputError, match="cannot remove 10 vectors from statistics holding 5"):
        Moments.from_batch(u[:5], norms[:5]).unmerge(m)


def test_dimension_mismatch_is_refused():
    with pytest.raises(InvalidInputError, match="dimension 3 and 4"):
        Moments.empty(3).merge(Moments.empty(4))
