"""Popularity: Bayesian-average rating times rating volume; the floor and the cold-start fallback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from training.data.dataset import IdMap, RatingScale
from training.data.matrices import item_counts
from training.models.base import Scorer, TrainingData, read_meta, scale_from


@dataclass(frozen=True)
class PopularityConfig:
    # Pseudo-ratings at the global mean added to each item; None uses the mean count per rated item.
    prior_weight: float | None = None


class Popularity(Scorer):
    name: ClassVar[str] = "popularity"

    def __init__(
        self, item_ids: IdMap, scale: RatingScale, config: PopularityConfig, bayes_mean: np.ndarray, counts: np.ndarray
    ) -> None:
        super().__init__(item_ids, scale)
        self.config = config
        self.bayes_mean = bayes_mean.astype(np.float32)
        self.counts = counts.astype(np.float32)
        self.item_scores = self.bayes_mean * self.counts

    def score(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        return np.broadcast_to(self.item_scores, (histories.shape[0], len(self.item_scores))).copy()

    def predict_ratings(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        return np.broadcast_to(self.bayes_mean, (histories.shape[0], len(self.bayes_mean))).copy()

    def ranking(self) -> np.ndarray:
        """Item indices from most to least popular (the serving bundle's popularity order)."""
        return np.argsort(-self.item_scores, kind="stable")

    def _save_weights(self, folder: Path) -> None:
        np.savez(folder / "popularity.npz", bayes_mean=self.bayes_mean, counts=self.counts)

    @classmethod
    def load(cls, folder: Path) -> Popularity:
        meta, arrays = read_meta(folder), np.load(folder / "popularity.npz")
        return cls(
            IdMap(meta["item_ids"]),
            scale_from(meta),
            PopularityConfig(**meta["config"]),
            arrays["bayes_mean"],
            arrays["counts"],
        )


def train(data: TrainingData, config: PopularityConfig = PopularityConfig()) -> Popularity:
    ratings = data.train
    counts = item_counts(ratings).astype(np.float64)
    sums = np.bincount(ratings.indices, weights=ratings.data, minlength=ratings.shape[1])
    mean = ratings.data.mean() if ratings.nnz else (data.dataset.scale.low + data.dataset.scale.high) / 2
    prior = config.prior_weight if config.prior_weight is not None else counts[counts > 0].mean()
    bayes_mean = (prior * mean + sums) / (prior + counts)
    return Popularity(data.dataset.item_ids, data.dataset.scale, config, bayes_mean, counts)
