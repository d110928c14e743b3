"""The stand-ins' batching: ragged requests padded, run once, split back, errors kept per request."""

from __future__ import annotations

import numpy as np
import pytest

from server.triton.backends import batching

NAMES = ("ITEM_IDX__0", "RATING__1", "CANDIDATE_IDX__3")
OUTPUTS = ("SUM__0", "CANDIDATE_SCORE__1")
RAGGED = {"CANDIDATE_SCORE__1": "CANDIDATE_IDX__3"}


def request(items: list[int], candidates: list[int]) -> list[np.ndarray]:
    return [
        np.array([items], dtype=np.int64),
        np.array([[float(i) for i in items]], dtype=np.float32),
        np.array([candidates], dtype=np.int64),
    ]


def model(calls: list[int]):
    """Sums the valid ratings (padding is 0) and scores each candidate by its index (padding -1 -> 0),
    as a graph masks -1 padding; fails when any item index is out of range."""

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        items, ratings, candidates = arrays
        calls.append(len(items))
        if (items >= 10).any():
            raise IndexError("index 10 is out of bounds for 10 items")
        valid = items >= 0
        assert (ratings[~valid] == 0).all(), "value padding must be 0"
        return [
            np.where(valid, ratings, 0).sum(axis=1, keepdims=True),
            np.where(candidates >= 0, candidates * 10.0, 0).astype(np.float32),
        ]

    return run


def test_ragged_requests_run_once_and_get_their_own_rows_back() -> None:
    calls: list[int] = []
    requests = [request([1, 2], [3]), request([4], [5, 6, 7]), request([1, 2, 3, 4], [8, 9])]
    results = batching.execute(requests, model(calls), NAMES, OUTPUTS, RAGGED)
    assert calls == [3]  # one forward pass for three requests of different lengths
    sums = [float(r[0][0, 0]) for r in results]  # type: ignore[index]
    assert sums == [3.0, 4.0, 10.0]
    scores = [r[1].tolist() for r in results]  # type: ignore[index]
    assert scores == [[[30.0]], [[50.0, 60.0, 70.0]], [[80.0, 90.0]]]  # cut back to each request's length


def test_a_bad_request_fails_alone() -> None:
    calls: list[int] = []
    unreadable = ValueError("input missing")
    requests: list[list[np.ndarray] | Exception] = [
        request([1], [2]),
        request([12], [3]),
        unreadable,
        request([2, 3], [4]),
    ]
    results = batching.execute(requests, model(calls), NAMES, OUTPUTS, RAGGED)
    assert calls == [3, 1, 1, 1]  # the batch failed, then each readable request alone
    assert isinstance(results[1], IndexError) and "out of bounds" in str(results[1])
    assert results[2] is unreadable
    assert float(results[0][0][0, 0]) == 1.0 and float(results[3][0][0, 0]) == 5.0  # type: ignore[index]


def test_a_lone_failing_request_runs_once() -> None:
    calls: list[int] = []
    results = batching.execute([request([11], [1])], model(calls), NAMES, OUTPUTS, RAGGED)
    assert calls == [1] and isinstance(results[0], IndexError)


def test_requests_with_several_rows_keep_them() -> None:
    two_rows: list[np.ndarray] = [
        np.array([[1, -1], [2, 3]], dtype=np.int64),
        np.array([[1, 0], [2, 3]], dtype=np.float32),
        np.array([[1], [2]], dtype=np.int64),
    ]
    results = batching.execute([request([4], [5]), two_rows], model([]), NAMES, OUTPUTS, RAGGED)
    assert results[1][0][:, 0].tolist() == [1.0, 5.0]  # type: ignore[index]
    assert results[0][0].shape == (1, 1)  # type: ignore[index]


@pytest.mark.parametrize("value", ["CANDIDATE_SCORE__2:CANDIDATE_IDX__3", "A:B,CANDIDATE_SCORE__2:CANDIDATE_IDX__3"])
def test_ragged_outputs_come_from_the_config(value: str) -> None:
    config = {"parameters": {"ragged_output_lengths": {"string_value": value}}}
    assert batching.ragged_outputs(config)["CANDIDATE_SCORE__2"] == "CANDIDATE_IDX__3"
    assert batching.ragged_outputs({}) == {}
