"""Ranking and rating metrics, vectorised over users.

Ranking metrics take ``hits``: a (users x K) boolean matrix, True where the item at that
rank is relevant, and ``n_relevant``: each user's count of relevant held-out items. Gains are
binary; the ideal DCG and the AP normaliser use min(n_relevant, K), the usual top-N protocol.
"""

from __future__ import annotations

import numpy as np


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(axis=1) / k


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(axis=1) / np.maximum(n_relevant, 1)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)[np.clip(np.minimum(n_relevant, k), 1, k) - 1]
    return np.where(n_relevant > 0, dcg / ideal, 0.0)


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    top = hits[:, :k].astype(np.float64)
    precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    return (precision_at_rank * top).sum(axis=1) / np.maximum(np.minimum(n_relevant, k), 1)


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    return np.asarray(hits[:, :k].any(axis=1), dtype=np.float64)


def reciprocal_rank_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    top = hits[:, :k]
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1), 0.0)


def coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's list."""
    return len(np.unique(recommended)) / n_items


def novelty(recommended: np.ndarray, item_popularity: np.ndarray) -> float:
    """Mean self-information -log2 p(i) of recommended items, p(i) = share of users who rated i.

    ``item_popularity`` is that share; items nobody rated count as rated by one user so the
    measure stays finite.
    """
    floor = item_popularity[item_popularity > 0].min() if (item_popularity > 0).any() else 1.0
    p = np.maximum(item_popularity[recommended], floor)
    return float(-np.log2(p).mean())


def intra_list_diversity(recommended: np.ndarray, genres: np.ndarray) -> float:
    """Mean pairwise genre cosine distance within each list, averaged over lists."""
    vectors = genres[recommended].astype(np.float64)  # users x K x genres
    norms = np.linalg.norm(vectors, axis=2, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    similarity = unit @ unit.transpose(0, 2, 1)
    k = recommended.shape[1]
    if k < 2:
        return 0.0
    off_diagonal = (similarity.sum(axis=(1, 2)) - np.trace(similarity, axis1=1, axis2=2)) / (k * (k - 1))
    return float((1.0 - off_diagonal).mean())


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(actual))))
