"""Ensembles by score fusion, with weights fitted on the validation split.

Two methods, both over the member models' ranking scores:

* ``weighted``: each model's scores are z-normalised per user (their scales differ: logits,
  probabilities, ratings), then summed with weights;
* ``rrf``: weighted reciprocal-rank fusion, sum of w / (k + rank), which ignores score scales.

Weights are searched on a simplex grid by validation NDCG@10, and the better method is kept.
The fitted spec is plain JSON so the serving side can apply the same fusion.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, cast

import numpy as np
import scipy.sparse as sp

from training.evaluation.ranking import RankingTask, ndcg10_of, top_k
from training.models.base import Scorer

log = logging.getLogger(__name__)
RRF_KS = (10.0, 60.0)


@dataclass(frozen=True)
class FusionSpec:
    method: str  # "weighted" or "rrf"
    weights: dict[str, float]
    rrf_k: float = 60.0
    validation_ndcg: float = 0.0
    tried: dict[str, float] = field(default_factory=dict)  # best validation NDCG@10 per method


def zscore(scores: np.ndarray) -> np.ndarray:
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


def reciprocal_ranks(scores: np.ndarray, k: float) -> np.ndarray:
    ranks = np.empty_like(scores, dtype=np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1, dtype=np.float64)[None, :], axis=1)
    return 1.0 / (k + ranks)


def fuse(per_model: Mapping[str, np.ndarray], spec: FusionSpec) -> np.ndarray:
    """Fused scores from each member's raw scores (users x items)."""
    total: np.ndarray | None = None
    for name, weight in spec.weights.items():
        if weight == 0:
            continue
        part = zscore(per_model[name]) if spec.method == "weighted" else reciprocal_ranks(per_model[name], spec.rrf_k)
        total = weight * part if total is None else total + weight * part
    if total is None:
        raise ValueError("a fusion needs at least one model with a non-zero weight")
    return total


def _simplex(n: int, steps: int) -> list[tuple[float, ...]]:
    return [
        tuple(c / steps for c in combo)
        for combo in itertools.product(range(steps + 1), repeat=n)
        if sum(combo) == steps
    ]


def fit_fusion(models: Mapping[str, Scorer], task: RankingTask, steps: int = 10) -> FusionSpec:
    """Grid-search weights (and method) that maximise NDCG@10 on ``task``."""
    names = sorted(models)
    users = task.users
    raw = {n: models[n].score(task.history[users], users) for n in names}
    exclude = task.exclude[users]

    def ndcg(fused: np.ndarray) -> float:
        return ndcg10_of(top_k(fused, exclude, 10), task)

    steps = steps if len(names) <= 4 else 5
    grid = _simplex(len(names), steps)
    transforms: dict[tuple[str, float], dict[str, np.ndarray]] = {("weighted", 0.0): {n: zscore(raw[n]) for n in names}}
    for k in RRF_KS:
        transforms[("rrf", k)] = {n: reciprocal_ranks(raw[n], k) for n in names}
    best: FusionSpec | None = None
    tried: dict[str, float] = {}
    for (method, k), parts in transforms.items():
        for weights in grid:
            # Each grid point has a weight above 0 (they sum to 1), so the sum is an array.
            fused = cast(np.ndarray, sum(w * parts[n] for n, w in zip(names, weights, strict=True) if w))
            value = ndcg(fused)
            tried[method] = max(tried.get(method, 0.0), value)
            if best is None or value > best.validation_ndcg:
                best = FusionSpec(method, dict(zip(names, weights, strict=True)), k or 60.0, value)
    assert best is not None
    spec = FusionSpec(best.method, best.weights, best.rrf_k, best.validation_ndcg, tried)
    log.info(
        "fitted fusion method=%s weights=%s rrf_k=%g validation_ndcg@10=%.4f",
        spec.method,
        spec.weights,
        spec.rrf_k,
        spec.validation_ndcg,
    )
    return spec


class Ensemble(Scorer):
    """Fused scores of member models, as the server will compute them."""

    name: ClassVar[str] = "ensemble"

    def __init__(self, members: Mapping[str, Scorer], spec: FusionSpec) -> None:
        first = next(iter(members.values()))
        super().__init__(first.item_ids, first.scale)
        self.members, self.spec = dict(members), spec
        self.config = spec  # what is saved as the model's config

    def score(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        used = [n for n, w in self.spec.weights.items() if w]
        return fuse({n: self.members[n].score(histories, users) for n in used}, self.spec)

    def _save_weights(self, folder: Path) -> None:
        (folder / "fusion.json").write_text(json.dumps(asdict(self.spec), indent=1))

    @staticmethod
    def read_spec(folder: Path) -> FusionSpec:
        return FusionSpec(**json.loads((folder / "fusion.json").read_text()))
