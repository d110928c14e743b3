"""Evaluate trained models on a split's test part: rating accuracy, top-K ranking, cold-start slice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.data.dataset import MovieLens
from training.data.matrices import item_counts
from training.evaluation.ranking import RankingTask, evaluate_ranking, ranking_task, truncate_histories
from training.evaluation.rating import rating_metrics
from training.models.base import Scorer

COLD_START_RATINGS = 5


def evaluate_models(
    models: Mapping[str, Scorer],
    dataset: MovieLens,
    history: sp.csr_matrix,
    test: pd.DataFrame,
    threshold: float = 4.0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Metrics per model: RMSE/MAE (None for non-rating models), ranking at 5/10/20, and a cold-start slice.

    The cold-start slice gives each evaluated user only ``COLD_START_RATINGS`` random training
    ratings as input, while still excluding all their training items from the ranking.
    """
    task = ranking_task(history, test, threshold)
    cold = RankingTask(truncate_histories(history, COLD_START_RATINGS, seed), task.exclude, task.relevant, task.users)
    popularity = item_counts(history) / max(1, int((np.diff(history.indptr) > 0).sum()))
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():

        def score(users: np.ndarray, hist: sp.csr_matrix, model: Scorer = model) -> np.ndarray:
            return model.score(hist, users)

        out[name] = {
            **rating_metrics(model, history, test),
            **evaluate_ranking(score, task, dataset.genres, popularity),
            "cold_start": evaluate_ranking(score, cold, dataset.genres, popularity),
        }
    return out
