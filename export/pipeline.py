"""Export trained models: every graph in every variant, gated on parity, into a Triton repository."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from torch import nn

from export.formats import VARIANTS, applicable, runner, write
from export.graphs import DEFAULT_TOP_N, UserTowerGraph, graphs_for
from export.parity import check, feeds_for, history_feeds, torch_runner
from export.repository import model_config, write_model
from training.data.dataset import MovieLens
from training.evaluation.ranking import RankingTask, ndcg10_of, ranking_task
from training.models.base import Scorer
from training.models.two_tower import TwoTower
from training.pipeline import LEARNED, full_history

log = logging.getLogger(__name__)


def parity_users(dataset: MovieLens, train: pd.DataFrame, test: pd.DataFrame, limit: int) -> RankingTask:
    """Held-out users with liked test items (at most ``limit``), ranked from their training ratings."""
    history = full_history(dataset, train)
    task = ranking_task(history, test)
    return RankingTask(history, history, task.relevant, task.users[:limit])


def top_items(
    graph: nn.Module, outputs: list[np.ndarray], item_scorer: nn.Module | None, histories: sp.csr_matrix
) -> np.ndarray:
    """The top-N item indices a graph's outputs lead to; a user tower ranks through the PyTorch item scorer."""
    if isinstance(graph, UserTowerGraph):
        return torch_runner(item_scorer)({"e": outputs[0], "x": history_feeds(histories)[0]})[0]
    return outputs[0]


def export_models(
    models: Mapping[str, Scorer],
    dataset: MovieLens,
    train: pd.DataFrame,
    test: pd.DataFrame,
    repository: Path,
    *,
    variants: Sequence[str] = tuple(VARIANTS),
    top_n: int = DEFAULT_TOP_N,
    keep_versions: int = 2,
    parity_limit: int = 300,
    fused_two_tower: bool = False,
    ragged_batches: bool = True,
) -> list[dict[str, Any]]:
    """Write every applicable variant of each learned model; one row per (graph, variant).

    ``fused_two_tower``: also the two-tower model as one graph (one call instead of two).
    ``ragged_batches``: configs let requests of different lengths batch (for the embedded
    Triton's stand-ins; see ``export.repository.model_config``).

    Every variant is staged and checked first; the repository changes only if all pass the
    parity gate, so a failed export never leaves some models on a new version and some not.
    """
    task = parity_users(dataset, train, test, parity_limit)
    users, histories = task.users, task.history[task.users]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as staging:
        staged = []
        for name in (n for n in LEARNED if n in models):
            model = models[name]
            graphs = graphs_for(name, model, top_n, fused=fused_two_tower)
            item_scorer = graphs.get(f"{name}_items")
            codes = model.user_codes if isinstance(model, TwoTower) else None
            embeddings: np.ndarray | None = None  # the item scorer is checked on the PyTorch user embeddings
            for graph_name, graph in graphs.items():
                feeds = feeds_for(graph, histories, users, codes, embeddings)
                reference = torch_runner(graph)(feeds)
                ndcg_reference = ndcg10_of(top_items(graph, reference, item_scorer, histories), task)
                for variant in (VARIANTS[v] for v in variants):
                    if not applicable(graph, variant):
                        continue
                    repo_name = f"{graph_name}_{variant.name}"
                    path = write(graph, variant, Path(staging) / repo_name / variant.filename)
                    got = runner(variant, path)(feeds)
                    parity = check(
                        graph_name,
                        variant.name,
                        variant.quantized,
                        reference,
                        got,
                        ndcg_reference,
                        ndcg10_of(top_items(graph, got, item_scorer, histories), task),
                    )
                    staged.append(
                        (
                            model_config(repo_name, graph, variant, keep_versions=keep_versions, ragged=ragged_batches),
                            path,
                        )
                    )
                    rows.append(
                        {
                            "model": graph_name,
                            "variant": variant.name,
                            "format": variant.format,
                            "bytes": path.stat().st_size,
                            "repository_model": repo_name,
                            "parity_max_abs_err": parity.max_abs_err,
                            "ndcg@10": parity.ndcg10,
                            "ndcg@10_delta": parity.ndcg10_delta,
                        }
                    )
                if isinstance(graph, UserTowerGraph):
                    embeddings = reference[0]
        for row, (config, path) in zip(rows, staged, strict=True):
            row["version"] = write_model(repository, config, path, keep_versions)
            log.info(
                "exported model=%s variant=%s version=%d bytes=%d max_abs_err=%.3g ndcg@10=%.4f",
                row["model"],
                row["variant"],
                row["version"],
                row["bytes"],
                row["parity_max_abs_err"],
                row["ndcg@10"],
            )
    return rows
