"""The graphs Triton runs: small requests in, top-N out, whatever the catalogue size.

Every catalogue scorer (SAE, RBM, EASE) takes the user's ratings as (item index, rating) pairs, the
items to exclude and optional candidates, each padded with -1, and returns the top-N items
(never rated, never excluded) with their scores plus a score per candidate, so a request grows
with the user's history and a response with N, not with the catalogue. The two-tower model is
split in two: a user tower (ratings -> embedding) and an item scorer holding the item
embedding matrix (embedding -> top-N).

When fewer than N items are eligible (a user who rated nearly everything), the tail of the top-N
holds blocked items scored -inf: callers drop entries whose score is not finite.

Tensor names follow libtorch's ``NAME__index`` convention so the TorchScript and ONNX variants
share one contract.
"""

from __future__ import annotations

import torch
from recsys import contract
from torch import nn

from training.models.base import Scorer
from training.models.ease import EASE
from training.models.rbm import RBM, one_hot
from training.models.sae import SAE
from training.models.two_tower import TwoTower

# Tensor names are the serving contract's (recsys.contract), which the server calls by.
CATALOG_INPUTS, CATALOG_OUTPUTS = contract.CATALOG.inputs, contract.CATALOG.outputs
USER_TOWER_INPUTS, USER_TOWER_OUTPUTS = contract.USER_TOWER.inputs, contract.USER_TOWER.outputs
ITEM_SCORER_INPUTS, ITEM_SCORER_OUTPUTS = contract.ITEM_SCORER.inputs, contract.ITEM_SCORER.outputs
TWO_TOWER_INPUTS, TWO_TOWER_OUTPUTS = contract.TWO_TOWER.inputs, contract.TWO_TOWER.outputs
DEFAULT_TOP_N = 100
# An output whose length is that of an input (a score per candidate): the stand-ins cut each
# request's rows of a padded batch back to that request's own length.
CANDIDATE_LENGTH = {CATALOG_OUTPUTS[2]: CATALOG_INPUTS[3]}


def densify(item_idx: torch.Tensor, rating: torch.Tensor, n_items: int) -> torch.Tensor:
    """(batch x L) pairs, -1 padded -> (batch x items) ratings with 0 where unrated."""
    valid = item_idx >= 0
    # Built from an input (never torch.zeros(..., device=...)): a traced graph would keep the
    # device it was traced on and fail when the pytorch backend runs it on a GPU.
    dense = torch.zeros_like(rating[:, :1]).expand(-1, n_items)
    # scatter_add with 0 for padding: padded slots point at item 0 but add nothing to it.
    return dense.scatter_add(1, item_idx.clamp(min=0), torch.where(valid, rating, torch.zeros_like(rating)))


def masked(scores: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """``scores`` with every (valid, >= 0) index in ``masks`` set to -inf."""
    blocked = torch.zeros_like(scores)
    for idx in masks:
        blocked = blocked.scatter_add(1, idx.clamp(min=0), (idx >= 0).to(scores.dtype))
    return torch.where(blocked > 0, torch.full_like(scores, float("-inf")), scores)


def masked_top(scores: torch.Tensor, masks: list[torch.Tensor], top_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-N after setting every (valid, >= 0) index in ``masks`` to -inf."""
    values, indices = torch.topk(masked(scores, masks), top_n)
    return indices, values


class _SAEScores(nn.Module):
    def __init__(self, model: SAE) -> None:
        super().__init__()
        self.net = model.net
        self.high = float(model.scale.high)
        self.by_likelihood = model.config.rank_by == "likelihood"

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        ratings, logits = self.net(dense / self.high)
        return logits if self.by_likelihood else ratings


class _RBMScores(nn.Module):
    """The RBM's mean-field pass with its weight tensor (items x levels x hidden) as two
    ``nn.Linear`` layers, so dynamic int8 quantisation applies to the matrix that grows with the
    catalogue (the training net's einsum has no Linear to quantise). Each layer holds a copy of
    the weights: fp32 doubles in size, int8 halves it."""

    def __init__(self, model: RBM) -> None:
        super().__init__()
        weight = model.net.weight.detach()
        n_items, self.n_levels, hidden = weight.shape
        flat = weight.reshape(n_items * self.n_levels, hidden)
        self.to_hidden = nn.Linear(n_items * self.n_levels, hidden)
        self.to_visible = nn.Linear(hidden, n_items * self.n_levels)
        with torch.no_grad():
            self.to_hidden.weight.copy_(flat.T)
            self.to_hidden.bias.copy_(model.net.hidden_bias.detach())
            self.to_visible.weight.copy_(flat)
            self.to_visible.bias.copy_(model.net.visible_bias.detach().reshape(-1))
        self.register_buffer("level_values", model.net.level_values.detach().clone())
        self.n_items = n_items
        self.liked = model.config.visible == "liked"
        self.threshold = float(model.config.like_threshold)
        self.low, self.step = float(model.scale.low), float(model.scale.step)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        observed = (dense > 0).to(dense.dtype)
        if self.liked:
            levels = (1.0 + (dense >= self.threshold).to(dense.dtype)) * observed  # 2 liked, 1 disliked
        else:
            levels = (torch.round((dense - self.low) / self.step) + 1.0) * observed
        visible = one_hot(levels, self.n_levels).reshape(-1, self.n_items * self.n_levels)
        hidden = torch.sigmoid(self.to_hidden(visible))
        probs = torch.softmax(self.to_visible(hidden).reshape(-1, self.n_items, self.n_levels), dim=2)
        return probs[..., 1] if self.liked else probs @ self.level_values


class _EASEScores(nn.Module):
    """EASE's scores of the rated-items row: the dense B as one ``nn.Linear`` (items x items), or the
    low-rank form as two (items -> rank -> items, the coefficients folded into the second), so the
    weights are where dynamic int8 can reach them."""

    def __init__(self, model: EASE) -> None:
        super().__init__()
        arrays = {k: torch.from_numpy(v) for k, v in model.arrays.items()}
        self.dense = model.form == "dense"
        if self.dense:
            self.weights = _linear(arrays["weights"].T)  # Linear computes x Wᵀ: x B needs W = Bᵀ
        else:
            factors, coef, diag = arrays["factors"], arrays["coef"], arrays["diag"]
            self.to_factors, self.from_factors = _linear(factors.T), _linear(factors * coef)
            self.register_buffer("keep", 1.0 - 1.0 / (model.config.l2 * diag))
            self.register_buffer("inverse_diag", 1.0 / diag)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        rated = (dense > 0).to(dense.dtype)
        if self.dense:
            return self.weights(rated)
        return rated * self.keep - self.from_factors(self.to_factors(rated)) * self.inverse_diag


def _linear(weight: torch.Tensor) -> nn.Linear:
    """A bias-free Linear holding ``weight`` (out x in)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


# Model class -> the module computing its catalogue scores from the dense ratings row; each is
# served as a CatalogScorer, the contract's catalogue graph.
CATALOG_SCORES: dict[type[Scorer], type[nn.Module]] = {SAE: _SAEScores, RBM: _RBMScores, EASE: _EASEScores}


class CatalogScorer(nn.Module):
    """(ratings, exclusions, candidates) -> (top-N indices, top-N scores, candidate scores)."""

    def __init__(self, scores: nn.Module, n_items: int, top_n: int = DEFAULT_TOP_N) -> None:
        super().__init__()
        self.scores, self.n_items, self.top_n = scores, n_items, min(top_n, n_items)

    def forward(
        self, item_idx: torch.Tensor, rating: torch.Tensor, exclude_idx: torch.Tensor, candidate_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.rank(densify(item_idx, rating, self.n_items), item_idx, exclude_idx, candidate_idx)

    def rank(
        self, dense: torch.Tensor, item_idx: torch.Tensor, exclude_idx: torch.Tensor, candidate_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` from the dense ratings row (the full-rung graph densifies once for every member)."""
        scores = self.scores(dense)
        top_idx, top_score = masked_top(scores, [item_idx, exclude_idx], self.top_n)
        candidate = torch.gather(scores, 1, candidate_idx.clamp(min=0))
        return top_idx, top_score, torch.where(candidate_idx >= 0, candidate, torch.zeros_like(candidate))


class UserTowerGraph(nn.Module):
    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.tower = model.net.user_tower
        self.n_items, self.high = len(model.item_ids), float(model.scale.high)

    def forward(self, item_idx: torch.Tensor, rating: torch.Tensor, demographics: torch.Tensor) -> torch.Tensor:
        return self.tower(densify(item_idx, rating, self.n_items) / self.high, demographics)


class ItemScorerGraph(nn.Module):
    """Holds the item embedding matrix; returns the top-N items for a user embedding.

    The matrix is an ``nn.Linear`` (items x dim, no bias) so that dynamic int8 applies to it."""

    def __init__(self, model: TwoTower, top_n: int = DEFAULT_TOP_N) -> None:
        super().__init__()
        items = model.item_embeddings().detach()
        self.scores = nn.Linear(items.shape[1], items.shape[0], bias=False)
        with torch.no_grad():
            self.scores.weight.copy_(items)
        self.top_n = min(top_n, items.shape[0])

    def forward(self, user_embedding: torch.Tensor, exclude_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return masked_top(self.scores(user_embedding), [exclude_idx], self.top_n)


class TwoTowerGraph(nn.Module):
    """The user tower and the item scorer in one graph: one Triton call instead of two in a row.

    Rated items are masked inside (they are the ratings input), so EXCLUDE_IDX holds only the
    request's own exclusions. The user embedding comes back too, for scoring extra candidates.
    """

    def __init__(self, user: UserTowerGraph, items: ItemScorerGraph) -> None:
        super().__init__()
        self.user, self.items = user, items

    def forward(
        self, item_idx: torch.Tensor, rating: torch.Tensor, demographics: torch.Tensor, exclude_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.user(item_idx, rating, demographics)
        top_idx, top_score = masked_top(self.items.scores(embedding), [item_idx, exclude_idx], self.items.top_n)
        return top_idx, top_score, embedding


class FullRungGraph(nn.Module):
    """The full rung's two stages in one graph (``contract.full_rung``): the two-tower model's top-N,
    its candidates, and every ranker's top-N plus its scores for those candidates.

    The candidates are what the per-model plan hands its rankers: the top C, by the two-tower's
    score, of its own top-N and the local candidates (CANDIDATE_IDX, whose width is C; -1 where
    fewer). Rows of a batch padded to a wider C get more candidates, which the stand-ins cut back
    (the top C of a longer ranking are its first C). Each member's outputs are those of its own
    graph for the same inputs (tests/test_export.py).
    """

    def __init__(self, generator: TwoTowerGraph, rankers: dict[str, CatalogScorer]) -> None:
        super().__init__()
        self.generator, self.rankers = generator, nn.ModuleDict(rankers)
        self.members = (contract.GENERATOR, *rankers)
        self.n_items = generator.user.n_items

    def forward(
        self,
        item_idx: torch.Tensor,
        rating: torch.Tensor,
        demographics: torch.Tensor,
        exclude_idx: torch.Tensor,
        candidate_idx: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        dense = densify(item_idx, rating, self.n_items)
        user = self.generator.user
        embedding = user.tower(dense / user.high, demographics)
        scores = masked(self.generator.items.scores(embedding), [item_idx, exclude_idx])
        top_score, top_idx = torch.topk(scores, self.generator.items.top_n)
        generated = generate(scores, top_idx, candidate_idx)
        outputs = [generated, top_idx, top_score, embedding]
        for ranker in self.rankers.values():
            outputs.extend(ranker.rank(dense, item_idx, exclude_idx, generated))
        return tuple(outputs)


def generate(scores: torch.Tensor, top_idx: torch.Tensor, candidate_idx: torch.Tensor) -> torch.Tensor:
    """The top ``candidate_idx.shape[1]`` items by ``scores`` (blocked items at -inf) among ``top_idx``
    and the valid ``candidate_idx``, best first; -1 where fewer are eligible."""
    pool = torch.zeros_like(scores).scatter(1, top_idx, torch.ones_like(top_idx, dtype=scores.dtype))
    pool = pool.scatter_add(1, candidate_idx.clamp(min=0), (candidate_idx >= 0).to(scores.dtype))
    pooled = torch.where(pool > 0, scores, torch.full_like(scores, float("-inf")))
    # -inf columns as wide as C, so top-C is defined even when C exceeds the catalogue.
    padded = torch.cat([pooled, torch.full_like(candidate_idx, 0).to(scores.dtype) - float("inf")], dim=1)
    values, indices = torch.topk(padded, candidate_idx.shape[1])
    return torch.where(torch.isfinite(values), indices, torch.full_like(indices, -1))


def full_rung_graph(graphs: dict[str, nn.Module], members: tuple[str, ...]) -> FullRungGraph:
    """The full-rung graph of ``members`` (``contract.full_rung_members``) from the models' exported
    graphs (``graphs_for``: the two-tower halves and each ranker's catalogue graph)."""
    generator = contract.GENERATOR
    two_tower = TwoTowerGraph(graphs[f"{generator}_user"], graphs[f"{generator}_items"])  # type: ignore[arg-type]
    rankers = {m: graphs[m] for m in members if m != generator}
    if not all(isinstance(g, CatalogScorer) for g in rankers.values()):
        raise ValueError(f"full rung {members}: every member besides {generator} must be a catalogue scorer")
    return FullRungGraph(two_tower, rankers).eval()  # type: ignore[arg-type]


def graphs_for(name: str, model: Scorer, top_n: int = DEFAULT_TOP_N, fused: bool = False) -> dict[str, nn.Module]:
    """The exported graphs of one trained model, keyed by their model-repository name stem.

    ``fused``: the two-tower model also as one graph (``<name>``); its two halves stay exported,
    as the server's fallback when the fused model is not ready."""
    if type(model) in CATALOG_SCORES:
        return {name: CatalogScorer(CATALOG_SCORES[type(model)](model), len(model.item_ids), top_n).eval()}
    if isinstance(model, TwoTower):
        user, items = UserTowerGraph(model).eval(), ItemScorerGraph(model, top_n).eval()
        return {
            f"{name}_user": user,
            f"{name}_items": items,
            **({name: TwoTowerGraph(user, items).eval()} if fused else {}),
        }
    raise ValueError(f"{name}: no exported graph for a {type(model).__name__}")


def signature(graph: nn.Module) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    """(name, Triton data type, dims without the batch dimension) of each input and output."""
    if isinstance(graph, CatalogScorer):
        n = graph.top_n
        return (
            [
                (CATALOG_INPUTS[0], "INT64", [-1]),
                (CATALOG_INPUTS[1], "FP32", [-1]),
                (CATALOG_INPUTS[2], "INT64", [-1]),
                (CATALOG_INPUTS[3], "INT64", [-1]),
            ],
            [(CATALOG_OUTPUTS[0], "INT64", [n]), (CATALOG_OUTPUTS[1], "FP32", [n]), (CATALOG_OUTPUTS[2], "FP32", [-1])],
        )
    if isinstance(graph, UserTowerGraph):
        dim = graph.tower.mlp[-1].out_features + 1
        return (
            [
                (USER_TOWER_INPUTS[0], "INT64", [-1]),
                (USER_TOWER_INPUTS[1], "FP32", [-1]),
                (USER_TOWER_INPUTS[2], "INT64", [3]),
            ],
            [(USER_TOWER_OUTPUTS[0], "FP32", [dim])],
        )
    if isinstance(graph, ItemScorerGraph):
        n, dim = graph.top_n, graph.scores.in_features
        return (
            [(ITEM_SCORER_INPUTS[0], "FP32", [dim]), (ITEM_SCORER_INPUTS[1], "INT64", [-1])],
            [(ITEM_SCORER_OUTPUTS[0], "INT64", [n]), (ITEM_SCORER_OUTPUTS[1], "FP32", [n])],
        )
    if isinstance(graph, TwoTowerGraph):
        user_inputs, user_outputs = signature(graph.user)
        top_outputs = signature(graph.items)[1]
        return (
            [*user_inputs, (TWO_TOWER_INPUTS[3], "INT64", [-1])],
            [*top_outputs, (TWO_TOWER_OUTPUTS[2], "FP32", user_outputs[0][2])],
        )
    if isinstance(graph, FullRungGraph):
        own = contract.full_rung_outputs(graph.members)
        parts = [signature(graph.generator), *(signature(r) for r in graph.rankers.values())]
        outputs = [(contract.GENERATED, "INT64", [-1])]
        for names, (_, member_outputs) in zip(own.values(), parts, strict=True):
            outputs.extend((name, dtype, dims) for name, (_, dtype, dims) in zip(names, member_outputs, strict=True))
        generator_inputs = signature(graph.generator)[0]
        return [*generator_inputs, (contract.FULL_RUNG_INPUTS[4], "INT64", [-1])], outputs
    raise ValueError(f"unknown graph {type(graph).__name__}")


def ragged_lengths(graph: nn.Module) -> dict[str, str]:
    """Output -> the input whose length it has (a score per candidate), for the batching stand-ins."""
    if isinstance(graph, CatalogScorer):
        return dict(CANDIDATE_LENGTH)
    if isinstance(graph, FullRungGraph):
        scored = [names[2] for m, names in contract.full_rung_outputs(graph.members).items() if m in graph.rankers]
        return dict.fromkeys([contract.GENERATED, *scored], contract.FULL_RUNG_INPUTS[4])
    return {}
