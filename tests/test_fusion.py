from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training.data.dataset import IdMap, RatingScale
from training.evaluation.ranking import RankingTask
from training.fusion import Ensemble, FusionSpec, fit_fusion, fuse, reciprocal_ranks, zscore
from training.models.base import Scorer


class Fixed(Scorer):
    """A scorer returning a fixed matrix: lets the test know which member is right."""

    name = "fixed"

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__(IdMap(np.arange(scores.shape[1])), RatingScale(1, 5, 1))
        self.scores = scores

    def score(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        return self.scores[users]

    def config_dict(self) -> dict:
        return {}

    def _save_weights(self, folder) -> None:
        raise NotImplementedError


def test_normalisations() -> None:
    z = zscore(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(z[0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert (z[1] == 0).all()
    np.testing.assert_allclose(reciprocal_ranks(np.array([[0.1, 0.9, 0.5]]), 60), [[1 / 63, 1 / 61, 1 / 62]])


def test_fit_prefers_the_informative_model_and_fuse_applies_it() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    dense = (rng.random((n_users, n_items)) < 0.1).astype(np.float32)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1
    relevant = sp.csr_matrix(dense)
    truth = relevant.toarray() + 0.01 * rng.random((n_users, n_items))
    noise = rng.random((n_users, n_items))
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    task = RankingTask(empty, empty, relevant, np.arange(n_users))
    spec = fit_fusion({"good": Fixed(truth), "noise": Fixed(noise)}, task, steps=4)
    assert spec.weights["good"] > spec.weights["noise"]
    assert spec.validation_ndcg == pytest.approx(1.0)
    assert set(spec.tried) == {"weighted", "rrf"}
    fused = Ensemble({"good": Fixed(truth), "noise": Fixed(noise)}, spec).score(empty, np.arange(n_users))
    assert fused.shape == (n_users, n_items)


def test_fuse_needs_a_weighted_member() -> None:
    with pytest.raises(ValueError, match="non-zero weight"):
        fuse({"a": np.ones((1, 2))}, FusionSpec("weighted", {"a": 0.0}))
