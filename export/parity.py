"""The parity gate: every exported variant against the PyTorch graph, on real users.

fp32 variants must match within ``FP32_TOLERANCE`` (max absolute error over every float
output). Quantized variants change scores by design; they must keep NDCG@10 on held-out users
within ``QUANTIZED_MAX_NDCG_DROP`` of the PyTorch graph, and their error is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from export.graphs import CatalogScorer, FullRungGraph, ItemScorerGraph, TwoTowerGraph, UserTowerGraph, signature

FP32_TOLERANCE = 1e-4
QUANTIZED_MAX_NDCG_DROP = 0.03
CANDIDATES = 20


class ParityError(RuntimeError):
    """An exported variant disagrees with the PyTorch model beyond its tolerance."""


@dataclass(frozen=True)
class Parity:
    max_abs_err: float
    ndcg10: float | None
    ndcg10_delta: float | None


def pad(rows: list[np.ndarray], dtype: type, fill: float) -> np.ndarray:
    width = max(1, max((len(r) for r in rows), default=1))
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def history_feeds(histories: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(ITEM_IDX, RATING) for rows of a ratings CSR, -1 / 0 padded."""
    rows = range(histories.shape[0])
    return (
        pad([histories[i].indices for i in rows], np.int64, -1),
        pad([histories[i].data for i in rows], np.float32, 0.0),
    )


def feeds_for(
    graph: nn.Module,
    histories: sp.csr_matrix,
    users: np.ndarray,
    user_codes: np.ndarray | None,
    embeddings: np.ndarray | None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs for ``graph`` describing these users, in the graph's signature order."""
    names = [n for n, _, _ in signature(graph)[0]]
    item_idx, rating = history_feeds(histories)
    if isinstance(graph, CatalogScorer):
        candidates = np.random.default_rng(seed).integers(0, graph.n_items, (len(users), CANDIDATES))
        values = [item_idx, rating, np.full((len(users), 1), -1, np.int64), candidates.astype(np.int64)]
    elif isinstance(graph, (UserTowerGraph, TwoTowerGraph, FullRungGraph)):
        codes = user_codes[users] if user_codes is not None else np.zeros((len(users), 3), np.int64)
        values = [item_idx, rating, codes.astype(np.int64)]
        if isinstance(graph, (TwoTowerGraph, FullRungGraph)):
            values.append(np.full((len(users), 1), -1, np.int64))
        if isinstance(graph, FullRungGraph):  # local candidates, as wide as the candidates asked for
            local = np.random.default_rng(seed).integers(0, graph.n_items, (len(users), CANDIDATES))
            values.append(local.astype(np.int64))
    elif isinstance(graph, ItemScorerGraph):
        values = [embeddings.astype(np.float32), item_idx]
    else:
        raise ValueError(f"unknown graph {type(graph).__name__}")
    return dict(zip(names, values, strict=True))


def torch_runner(graph: nn.Module) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = graph(*(torch.from_numpy(v) for v in feeds.values()))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return run


def abs_error(reference: np.ndarray, got: np.ndarray) -> float:
    """Max absolute difference; -inf (a masked top-N slot) matches only -inf."""
    reference, got = reference.astype(np.float64), got.astype(np.float64)
    same_infinity = (reference == got) & ~np.isfinite(reference)
    return float(np.where(same_infinity, 0.0, np.abs(got - reference)).max())


def check(
    name: str,
    variant: str,
    quantized: bool,
    reference: list[np.ndarray],
    got: list[np.ndarray],
    ndcg_reference: float | None,
    ndcg_got: float | None,
) -> Parity:
    errors = [abs_error(r, g) for r, g in zip(reference, got, strict=True) if r.dtype.kind == "f" and r.size]
    err = max(errors, default=0.0)
    delta = None if ndcg_got is None or ndcg_reference is None else ndcg_got - ndcg_reference
    if not quantized and not err <= FP32_TOLERANCE:
        raise ParityError(f"{name} {variant}: max abs error {err:.3g} exceeds {FP32_TOLERANCE:g} against PyTorch")
    if quantized and delta is not None and delta < -QUANTIZED_MAX_NDCG_DROP:
        raise ParityError(
            f"{name} {variant}: NDCG@10 drops by {-delta:.4f} (more than {QUANTIZED_MAX_NDCG_DROP}) "
            f"against PyTorch (max abs error {err:.3g})"
        )
    return Parity(err, ndcg_got, delta)


def graph_feeds(
    graphs: dict[str, nn.Module],
    graph_name: str,
    histories: sp.csr_matrix,
    users: np.ndarray,
    user_codes: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Inputs for one graph of an exported set; an item scorer gets its user tower's PyTorch embeddings."""
    graph = graphs[graph_name]
    embeddings = None
    if isinstance(graph, ItemScorerGraph):
        user_graph = graphs[graph_name.removesuffix("_items") + "_user"]
        embeddings = torch_runner(user_graph)(feeds_for(user_graph, histories, users, user_codes, None))[0]
    return feeds_for(graph, histories, users, user_codes, embeddings)
