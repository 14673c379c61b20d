import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from indexer.errors import InvalidVectorError
from indexer.vectors import as_query, check_rows, normalise, problem, safe_norms


@pytest.mark.parametrize(
    ("vec", "reason"),
    [
        (np.array([1.0, np.nan, 0.0]), "vector contains NaN or Inf"),
        (np.array([1.0, np.inf, 0.0]), "vector contains NaN or Inf"),
        (np.zeros(3), "zero vector has no direction"),
        (np.ones(4), "wrong dimension 4, the collection expects 3"),
        (np.ones((1, 3)), "expected a 1-D vector, got shape (1, 3)"),
    ],
)
def test_problem_names_the_reason(vec, reason):
    assert problem(vec, 3) == reason


def test_check_rows_keeps_good_rows_and_reports_bad():
    rows = np.array([[3.0, 4.0], [np.nan, 1.0], [0.0, 0.0], [0.0, 2.0]])
    ck = check_rows(rows, 2)
    assert ck.ok.tolist() == [True, False, False, True]
    assert ck.reasons == {1: "vector contains NaN or Inf", 2: "zero vector has no direction"}
    assert np.allclose(ck.unit, [[0.6, 0.8], [0.0, 1.0]])
    assert ck.norms.tolist() == [5.0, 2.0]


def test_query_vector_errors_are_clear():
    with pytest.raises(InvalidVectorError, match="The query vector is unusable: vector contains NaN"):
        as_query([np.nan, 1.0], 2)
    assert np.allclose(as_query([0.0, 3.0], 2), [0, 1])


_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 1e-300, 5e-324, 1e300, -1e308, 3.4e38, 1e-12, 1.0]),
)


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 5)), elements=_FLOATS))
def test_check_rows_gives_exactly_the_norms_and_units_of_their_definitions(rows):
    """check_rows computes norms and units in one pass: to the bit what ``safe_norms`` and
    ``normalise`` give, on any input (huge, tiny, subnormal, non-finite)."""
    ck = check_rows(rows, rows.shape[1])
    finite = np.all(np.isfinite(rows), axis=1)
    norms = safe_norms(np.where(finite[:, None], rows, 0.0))
    assert np.array_equal(ck.norms, norms[ck.ok])
    assert ck.unit.tobytes() == normalise(rows[ck.ok]).tobytes()
