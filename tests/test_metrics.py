"""Every metric against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from training.evaluation import metrics as m
from training.evaluation.ranking import top_k, truncate_histories

# One user; relevant items at ranks 1 and 3 of 5; three relevant items in all.
HITS = np.array([[True, False, True, False, False]])
N_REL = np.array([3])


def test_precision_recall_hit_rate() -> None:
    assert m.precision_at_k(HITS, 5)[0] == pytest.approx(2 / 5)
    assert m.precision_at_k(HITS, 2)[0] == pytest.approx(1 / 2)
    assert m.recall_at_k(HITS, N_REL, 5)[0] == pytest.approx(2 / 3)
    assert m.hit_rate_at_k(HITS, 1)[0] == 1.0
    assert m.hit_rate_at_k(np.array([[False, False, True]]), 2)[0] == 0.0


def test_ndcg_binary_gain() -> None:
    dcg = 1 + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m.ndcg_at_k(HITS, N_REL, 5)[0] == pytest.approx(dcg / ideal)
    # With one relevant item the ideal list holds one hit: a hit at rank 2 scores 1/log2(3).
    assert m.ndcg_at_k(np.array([[False, True, False]]), np.array([1]), 3)[0] == pytest.approx(1 / math.log2(3))
    assert m.ndcg_at_k(np.array([[True, True]]), np.array([2]), 2)[0] == pytest.approx(1.0)


def test_average_precision_and_reciprocal_rank() -> None:
    assert m.average_precision_at_k(HITS, N_REL, 5)[0] == pytest.approx((1 / 1 + 2 / 3) / 3)
    # The normaliser is min(n_relevant, K): one hit at rank 1 of K=1 is perfect.
    assert m.average_precision_at_k(HITS, N_REL, 1)[0] == pytest.approx(1.0)
    assert m.reciprocal_rank_at_k(np.array([[False, False, True]]), 3)[0] == pytest.approx(1 / 3)
    assert m.reciprocal_rank_at_k(np.array([[False, False, True]]), 2)[0] == 0.0


def test_coverage_novelty_diversity() -> None:
    recs = np.array([[0, 1], [0, 2]])
    assert m.coverage(recs, 10) == pytest.approx(0.3)
    popularity = np.array([0.5, 0.25, 0.125, 0.0])
    assert m.novelty(recs, popularity) == pytest.approx((1 + 2 + 1 + 3) / 4)
    assert m.novelty(np.array([[3]]), popularity) == pytest.approx(3.0)  # unrated counts as the rarest seen
    genres = np.array([[1, 0], [1, 0], [0, 1]])
    # user 0: identical genres (distance 0); user 1: orthogonal (distance 1)
    assert m.intra_list_diversity(recs, genres) == pytest.approx(0.5)


def test_rating_errors() -> None:
    truth, predicted = np.array([1, 2, 3]), np.array([1, 2, 5])
    assert m.rmse(truth, predicted) == pytest.approx(math.sqrt(4 / 3))
    assert m.mae(truth, predicted) == pytest.approx(2 / 3)


def test_top_k_never_returns_excluded_items() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1]]))
    assert top_k(scores, exclude, 2).tolist() == [[1, 2], [2, 1]]


def test_truncated_histories_keep_at_most_n_per_user() -> None:
    history = sp.random(30, 50, density=0.4, format="csr", random_state=1)
    short = truncate_histories(history, 5, seed=0)
    assert np.diff(short.indptr).max() == 5
    assert (short.multiply(history != 0) != short).nnz == 0  # a subset of the original ratings
