import numpy as np
import pytest

from indexer.errors import InvalidVectorError
from indexer.vectors import as_query, check_rows, problem


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
