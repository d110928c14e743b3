"""Rating-prediction accuracy (RMSE, MAE) on held-out (user, item, rating) triples."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.evaluation import metrics


class RatingPredictor(Protocol):
    def predict_ratings(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray | None: ...


def predict_pairs(
    model: RatingPredictor, history: sp.csr_matrix, pairs: pd.DataFrame, batch_size: int = 512
) -> np.ndarray | None:
    """The model's prediction for each (user, item) row of ``pairs``, users scored from ``history``.

    A model that also reads other users' ratings (the SAE's item path encodes each item from its
    column) is handed the whole ``history`` first: at test time that is the full train part.
    """
    observe = getattr(model, "observe", None)
    if callable(observe):
        observe(history)
    users = np.unique(pairs["user"].to_numpy())
    out = np.empty(len(pairs), dtype=np.float64)
    row_of = {int(u): i for i, u in enumerate(users)}
    pair_rows = np.fromiter((row_of[int(u)] for u in pairs["user"]), dtype=np.int64, count=len(pairs))
    items = pairs["item"].to_numpy()
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        predicted = model.predict_ratings(history[batch], batch)
        if predicted is None:
            return None
        mask = (pair_rows >= start) & (pair_rows < start + len(batch))
        out[mask] = predicted[pair_rows[mask] - start, items[mask]]
    return out


def rating_metrics(model: RatingPredictor, history: sp.csr_matrix, pairs: pd.DataFrame) -> dict[str, float | None]:
    predicted = predict_pairs(model, history, pairs)
    if predicted is None:
        return {"rmse": None, "mae": None}
    actual = pairs["rating"].to_numpy()
    return {"rmse": metrics.rmse(predicted, actual), "mae": metrics.mae(predicted, actual)}
