"""Export trained models: every graph in every variant, gated on parity, into a Triton repository."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp
from recsys import contract
from torch import nn

from export.formats import VARIANTS, applicable, runner, write
from export.graphs import DEFAULT_TOP_N, FullRungGraph, UserTowerGraph, full_rung_graph, graphs_for
from export.parity import Parity, ParityError, check, feeds_for, history_feeds, torch_runner
from export.repository import model_config, write_model
from training.data.dataset import MovieLens
from training.evaluation.ranking import RankingTask, ndcg10_of, ranking_task
from training.fusion import Ensemble
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


def full_rung_parity(
    graph: FullRungGraph,
    variant: str,
    quantized: bool,
    reference: list[np.ndarray],
    got: list[np.ndarray],
    task: RankingTask,
) -> Parity:
    """The parity gate member by member (each on its own top-N's NDCG@10): the worst of them."""
    outputs = contract.full_rung(graph.members).outputs
    parities = []
    for member, names in contract.full_rung_outputs(graph.members).items():
        at = [outputs.index(n) for n in names]
        parities.append(
            check(
                f"{contract.FULL_RUNG}:{member}",
                variant,
                quantized,
                [reference[i] for i in at],
                [got[i] for i in at],
                ndcg10_of(reference[at[0]], task),
                ndcg10_of(got[at[0]], task),
            )
        )
    if not quantized and not np.array_equal(reference[0], got[0]):
        raise ParityError(f"{contract.FULL_RUNG} {variant}: its candidates differ from PyTorch's")
    worst = min(parities, key=lambda p: p.ndcg10_delta or 0.0)
    return Parity(max(p.max_abs_err for p in parities), worst.ndcg10, worst.ndcg10_delta)


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
    full_rung: bool = False,
    fusion_weights: Mapping[str, float] | None = None,
    ragged_batches: bool = True,
) -> list[dict[str, Any]]:
    """Write every applicable variant of each learned model; one row per (graph, variant).

    ``fused_two_tower``: also the two-tower model as one graph (one call instead of two).
    ``full_rung``: also the full rung as one graph (``contract.FULL_RUNG``: the two-tower model's
    candidates ranked by the catalogue scorers with a weight in ``fusion_weights``, by default the
    ``ensemble`` model's, else every catalogue scorer), TorchScript variants only.
    ``ragged_batches``: configs let requests of different lengths batch (for the embedded
    Triton's stand-ins; see ``export.repository.model_config``).

    Every variant is staged and checked first; the repository changes only if all pass the
    parity gate, so a failed export never leaves some models on a new version and some not.
    """
    task = parity_users(dataset, train, test, parity_limit)
    users, histories = task.users, task.history[task.users]
    rows: list[dict[str, Any]] = []
    built: dict[str, nn.Module] = {}  # every graph exported, by its repository name stem
    with tempfile.TemporaryDirectory() as staging:
        staged = []

        def stage(
            graph_name: str, graph: nn.Module, feeds: dict[str, np.ndarray], item_scorer: nn.Module | None
        ) -> list[np.ndarray]:
            reference = torch_runner(graph)(feeds)
            full = isinstance(graph, FullRungGraph)
            ndcg_reference = None if full else ndcg10_of(top_items(graph, reference, item_scorer, histories), task)
            for variant in (VARIANTS[v] for v in variants):
                if not applicable(graph, variant):
                    continue
                repo_name = f"{graph_name}_{variant.name}"
                path = write(graph, variant, Path(staging) / repo_name / variant.filename)
                got = runner(variant, path)(feeds)
                if isinstance(graph, FullRungGraph):
                    parity = full_rung_parity(graph, variant.name, variant.quantized, reference, got, task)
                else:
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
                    (model_config(repo_name, graph, variant, keep_versions=keep_versions, ragged=ragged_batches), path)
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
            return reference

        for name in (n for n in LEARNED if n in models):
            model = models[name]
            graphs = graphs_for(name, model, top_n, fused=fused_two_tower)
            built.update(graphs)
            item_scorer = graphs.get(f"{name}_items")
            codes = model.user_codes if isinstance(model, TwoTower) else None
            embeddings: np.ndarray | None = None  # the item scorer is checked on the PyTorch user embeddings
            for graph_name, graph in graphs.items():
                reference = stage(graph_name, graph, feeds_for(graph, histories, users, codes, embeddings), item_scorer)
                if isinstance(graph, UserTowerGraph):
                    embeddings = reference[0]
        generator = models.get(contract.GENERATOR)
        if full_rung and isinstance(generator, TwoTower):
            if fusion_weights is None:
                ensemble = models.get("ensemble")
                fusion_weights = (
                    cast(Ensemble, ensemble).spec.weights
                    if ensemble is not None
                    else dict.fromkeys(contract.MODELS, 1.0)
                )
            members = tuple(
                m for m in contract.full_rung_members(fusion_weights) if m == contract.GENERATOR or m in built
            )
            # Two stages to fuse only when the fusion weighs the generator and a ranker.
            if len(members) > 1 and fusion_weights.get(contract.GENERATOR, 0) > 0:
                graph = full_rung_graph(built, members)
                stage(contract.FULL_RUNG, graph, feeds_for(graph, histories, users, generator.user_codes, None), None)
                for row in rows:
                    if row["model"] == contract.FULL_RUNG:
                        row["members"] = list(members)  # the manifest's full_rung_members
        for row, (config, path) in zip(rows, staged, strict=True):
            row["version"] = write_model(repository, config, path, keep_versions)
            log.info(
                "exported model=%s variant=%s version=%d bytes=%d max_abs_err=%.3g ndcg@10=%.4f",
                row["model"],
                row["variant"],
                row["version"],
                row["bytes"],
                row["parity_max_abs_err"],
                row["ndcg@10"] if row["ndcg@10"] is not None else float("nan"),
            )
    return rows
