"""Full-catalogue top-K evaluation: rank every item a user has not rated, judge on held-out ratings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.evaluation import metrics

# Scores every item for a batch of users, given those users' input histories (rows of a CSR).
ScoreFn = Callable[[np.ndarray, sp.csr_matrix], np.ndarray]
KS = (5, 10, 20)


@dataclass(frozen=True)
class RankingTask:
    """What to rank for whom: input histories, items to exclude and held-out relevant items."""

    history: sp.csr_matrix  # users x items ratings the models see
    exclude: sp.csr_matrix  # users x items never recommended (the user's known ratings)
    relevant: sp.csr_matrix  # users x items, 1 where held-out rating >= threshold
    users: np.ndarray  # users with at least one relevant held-out item


def ranking_task(
    history: sp.csr_matrix, test: pd.DataFrame, threshold: float = 4.0, exclude: sp.csr_matrix | None = None
) -> RankingTask:
    liked = test[test["rating"] >= threshold]
    relevant = sp.csr_matrix((np.ones(len(liked), np.float32), (liked["user"], liked["item"])), shape=history.shape)
    relevant.sum_duplicates()
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    return RankingTask(history, history if exclude is None else exclude, relevant, users)


def top_k(scores: np.ndarray, exclude_rows: sp.csr_matrix, k: int) -> np.ndarray:
    """Indices of the k best-scored items per row, best first, never an excluded item."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    rows, cols = exclude_rows.nonzero()
    scores[rows, cols] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def rank_users(score_fn: ScoreFn, task: RankingTask, k: int, batch_size: int = 512) -> np.ndarray:
    """Top-k lists for every evaluated user of the task, in ``task.users`` order."""
    lists = []
    for start in range(0, len(task.users), batch_size):
        users = task.users[start : start + batch_size]
        scores = score_fn(users, task.history[users])
        lists.append(top_k(scores, task.exclude[users], k))
    return np.concatenate(lists) if lists else np.zeros((0, k), np.int64)


def hits_of(recommended: np.ndarray, task: RankingTask) -> tuple[np.ndarray, np.ndarray]:
    """For lists in ``task.users`` order: which entries are relevant, and each user's relevant count."""
    relevant = task.relevant[task.users]
    hits = np.asarray(relevant[np.arange(len(task.users))[:, None], recommended].todense(), dtype=bool)
    return hits, np.diff(relevant.indptr)


def ndcg10_of(recommended: np.ndarray, task: RankingTask) -> float:
    """Mean NDCG@10 of top lists (``task.users`` order): the number early stopping, ensemble fitting,
    the champion rule and the export parity gate all compare."""
    if not len(task.users):
        return 0.0
    hits, n_relevant = hits_of(recommended[:, :10], task)
    return float(metrics.ndcg_at_k(hits, n_relevant, 10).mean())


def ranking_metrics(
    recommended: np.ndarray,
    task: RankingTask,
    genres: np.ndarray,
    item_popularity: np.ndarray,
    ks: tuple[int, ...] = KS,
) -> dict[str, float]:
    """Accuracy at each K plus coverage, novelty and diversity of the lists."""
    hits, n_relevant = hits_of(recommended, task)
    out: dict[str, float] = {"users": float(len(task.users))}
    for k in ks:
        out[f"precision@{k}"] = float(metrics.precision_at_k(hits, k).mean())
        out[f"recall@{k}"] = float(metrics.recall_at_k(hits, n_relevant, k).mean())
        out[f"ndcg@{k}"] = float(metrics.ndcg_at_k(hits, n_relevant, k).mean())
        out[f"map@{k}"] = float(metrics.average_precision_at_k(hits, n_relevant, k).mean())
        out[f"hit_rate@{k}"] = float(metrics.hit_rate_at_k(hits, k).mean())
        out[f"mrr@{k}"] = float(metrics.reciprocal_rank_at_k(hits, k).mean())
        out[f"coverage@{k}"] = metrics.coverage(recommended[:, :k], task.history.shape[1])
        out[f"novelty@{k}"] = metrics.novelty(recommended[:, :k], item_popularity)
        out[f"diversity@{k}"] = metrics.intra_list_diversity(recommended[:, :k], genres)
    return out


def evaluate_ranking(
    score_fn: ScoreFn, task: RankingTask, genres: np.ndarray, item_popularity: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    return ranking_metrics(rank_users(score_fn, task, max(ks)), task, genres, item_popularity, ks)


def ndcg_at_10(score_fn: ScoreFn, task: RankingTask) -> float:
    return ndcg10_of(rank_users(score_fn, task, 10), task)


def truncate_histories(history: sp.csr_matrix, keep: int, seed: int = 0) -> sp.csr_matrix:
    """Keep at most ``keep`` random ratings per user: a simulated cold-start population."""
    rng = np.random.default_rng(seed)
    coo = history.tocoo()
    key = rng.random(coo.nnz)
    order = np.lexsort((key, coo.row))
    rows = coo.row[order]
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    kept = order[rank < keep]
    return sp.csr_matrix((coo.data[kept], (coo.row[kept], coo.col[kept])), shape=history.shape)
