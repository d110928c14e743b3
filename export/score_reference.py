"""Each served model's reference score distribution, for the drift monitor's ``score_<model>`` features.

The reference is what the exported fp32 graph (the one Triton serves, before int8/fp16 variants)
returns for the bundle's users, given the histories the server holds for them (the bundle's
ratings) and no exclusions: the top ``SCORE_DEPTH`` scores of each user, all users pooled. That is
the distribution of live answers when live users look like the users the model learnt from, so a
live window drifting from it means the inputs or the served model moved, not that the reference
was computed another way. Users are sampled (seeded) above ``MAX_USERS`` to bound export time.

Each model's users are those the server calls it for (``min_history``): the generator answers any
history, the catalogue scorers only the full rung's (``contract.FULL_MIN_RATINGS`` ratings or more).
Scores grow with the history, so pooling short histories into the reference would make every live
window look shifted (EASE's in-distribution PSI was 0.48 on the test stack before this).
"""

from __future__ import annotations

import numpy as np
import torch
from recsys import contract

from export.graphs import CatalogScorer, TwoTowerGraph, graphs_for
from server.drift.reference import SCORE_DEPTH
from training.data.dataset import MovieLens
from training.data.matrices import to_csr
from training.models.base import Scorer
from training.models.two_tower import TwoTower

SCORED = contract.MODELS  # the server's model branches
MAX_USERS = 5_000
BATCH = 256


def min_history(model: str) -> int:
    """The shortest history the server asks ``model`` to rank in the ensemble (a user without
    ratings gets no model call)."""
    return 1 if model == contract.GENERATOR else contract.FULL_MIN_RATINGS


def reference_scores(models: dict[str, Scorer], dataset: MovieLens, seed: int = 0) -> dict[str, np.ndarray]:
    """Per model branch present in ``models``: the pooled top-``SCORE_DEPTH`` scores of its users."""
    histories = to_csr(dataset.ratings, dataset.n_users, dataset.n_items)
    lengths = np.diff(histories.indptr)
    out: dict[str, np.ndarray] = {}
    for name in (n for n in SCORED if n in models):
        users = np.flatnonzero(lengths >= min_history(name))
        if len(users) > MAX_USERS:
            users = np.sort(np.random.default_rng(seed).choice(users, MAX_USERS, replace=False))
        model = models[name]
        graph = graphs_for(name, model, top_n=SCORE_DEPTH, fused=isinstance(model, TwoTower))[name]
        codes = model.user_codes if isinstance(model, TwoTower) else None
        with torch.no_grad():
            parts = [_top_scores(graph, histories, users[i : i + BATCH], codes) for i in range(0, len(users), BATCH)]
        out[name] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def _top_scores(graph: torch.nn.Module, histories: object, users: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    rows = histories[users]  # type: ignore[index]
    width = max(int(np.diff(rows.indptr).max()), 1)
    items = np.full((len(users), width), -1, dtype=np.int64)
    ratings = np.zeros((len(users), width), dtype=np.float32)
    for r in range(len(users)):
        start, end = rows.indptr[r], rows.indptr[r + 1]
        items[r, : end - start], ratings[r, : end - start] = rows.indices[start:end], rows.data[start:end]
    device = next(graph.parameters()).device  # the trained model's, wherever it was loaded
    none = torch.full((len(users), 1), -1, dtype=torch.int64, device=device)  # no exclusions, no candidates
    item_t, rating_t = torch.from_numpy(items).to(device), torch.from_numpy(ratings).to(device)
    if isinstance(graph, CatalogScorer):
        _, top, _ = graph(item_t, rating_t, none, none)
    elif isinstance(graph, TwoTowerGraph) and codes is not None:
        demographics = torch.from_numpy(np.asarray(codes)[users].astype(np.int64)).to(device)
        _, top, _ = graph(item_t, rating_t, demographics, none)
    else:
        raise TypeError(f"no score reference for a {type(graph).__name__}")
    scores = top.float().cpu().numpy().ravel()
    return scores[np.isfinite(scores)]
