"""Restricted Boltzmann machine for collaborative filtering (Salakhutdinov, Mnih & Hinton 2007).

Each user is one training case whose visible units are the items observed for that user; all
users share the weights of those items. Visible units are softmax over ``levels``: the rating
values (``visible="ratings"``) or two levels not-liked/liked (``visible="liked"``, liked =
rating >= ``like_threshold``). In the "liked" form the not-liked level is the reference, with
weight and bias fixed at zero: a binary RBM over liked items, whose hidden input grows with
what the user liked rather than with the catalogue. Visible biases start at the items'
observed level log-frequencies. Trained with CD-k, momentum and weight decay; inference is the
deterministic mean-field pass: p(h | v) then p(v_i | h) for every item.

Ranking needs to know which items users choose, which a model of rated items alone never
sees, so ``negatives`` adds, per user and epoch, that many unrated items per rated item (or
every unrated item, the default) as observed at the lowest level; the ranking score is
P(liked) (or the expected rating for ``visible="ratings"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from training.data.dataset import IdMap, RatingScale
from training.data.matrices import dense_rows, liked, rating_levels
from training.models.base import TorchScorer, TrainingData, read_meta, scale_from, validation_metrics
from training.models.fitting import FitHistory, fit, user_batches
from training.runtime import pick_device, seed_everything


@dataclass(frozen=True)
class RBMConfig:
    visible: str = "liked"  # "liked" (2 levels) or "ratings" (one level per rating value)
    like_threshold: float = 4.0
    hidden: int = 100
    cd_k: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-3
    # Sampled unrated items per rated item, observed as the lowest level; None: every unrated item.
    # Sampling few (3) left a 10k-item catalogue's tail almost unobserved; all of them costs nothing
    # extra (batches are dense rows anyway) and matched or beat 10 on ml-100k validation.
    negatives: float | None = None
    batch_size: int = 32
    max_epochs: int = 200
    patience: int = 15
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.visible not in ("liked", "ratings"):
            raise ValueError(f"visible must be 'liked' or 'ratings', got {self.visible!r}")
        if self.negatives is not None and self.negatives < 0:
            raise ValueError(f"negatives must be >= 0 or None (every unrated item), got {self.negatives}")
        if self.cd_k < 1 or self.hidden < 1:
            raise ValueError("cd_k and hidden must be at least 1")


class RBMNet(nn.Module):
    """Weights of a softmax-visible, binary-hidden RBM and its mean-field scoring pass."""

    def __init__(self, n_items: int, n_levels: int, hidden: int, level_values: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(0.01 * torch.randn(n_items, n_levels, hidden), requires_grad=False)
        self.visible_bias = nn.Parameter(torch.zeros(n_items, n_levels), requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(hidden), requires_grad=False)
        self.register_buffer("level_values", level_values)

    def hidden_probs(self, visible: torch.Tensor) -> torch.Tensor:
        """p(h=1 | v) for one-hot visible units (batch x items x levels), zeros where unobserved."""
        return torch.sigmoid(self.hidden_bias + torch.einsum("bik,ikh->bh", visible, self.weight))

    def visible_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """p(v_i = level | h) for every item: softmax over levels."""
        return torch.softmax(self.visible_bias + torch.einsum("bh,ikh->bik", hidden, self.weight), dim=2)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        """Mean-field pass from 1-based level indices (0 = unrated) to level probabilities of every item."""
        return self.visible_probs(self.hidden_probs(one_hot(levels, self.weight.shape[1])))


def one_hot(levels: torch.Tensor, n_levels: int) -> torch.Tensor:
    """(batch x items) 1-based levels -> (batch x items x levels) one-hot, all-zero where unrated."""
    encoded = torch.nn.functional.one_hot(levels.long().clamp(min=0), n_levels + 1)[..., 1:]
    return encoded.to(torch.float32)


class RBM(TorchScorer):
    name: ClassVar[str] = "rbm"

    def __init__(self, item_ids: IdMap, scale: RatingScale, config: RBMConfig, net: RBMNet) -> None:
        super().__init__(item_ids, scale)
        self.config, self.net = config, net

    def encode(self, histories: sp.csr_matrix) -> sp.csr_matrix:
        """Ratings -> 1-based visible levels."""
        if self.config.visible == "liked":
            return liked(histories, self.config.like_threshold)
        return rating_levels(histories, self.scale)

    @torch.no_grad()
    def _probs(self, histories: sp.csr_matrix) -> torch.Tensor:
        device = self.net.weight.device
        return self.net(dense_rows(self.encode(histories), np.arange(histories.shape[0]), device))

    def score(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        if self.config.visible == "liked":
            return self._probs(histories)[..., 1].cpu().numpy()  # P(liked)
        return self.predict_ratings(histories)  # expected rating

    def predict_ratings(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray | None:
        if self.config.visible == "liked":
            return None  # two levels say liked or not, not a rating
        return (self._probs(histories) @ self.net.level_values).cpu().numpy()

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> RBM:
        meta = read_meta(folder)
        config, scale = RBMConfig(**meta["config"]), scale_from(meta)
        net = _make_net(len(meta["item_ids"]), config, scale)
        net.load_state_dict(cls.load_state(folder, device))
        return cls(IdMap(meta["item_ids"]), scale, config, net.to(device).eval())


def _make_net(n_items: int, config: RBMConfig, scale: RatingScale) -> RBMNet:
    values = torch.tensor([0.0, 1.0]) if config.visible == "liked" else torch.from_numpy(scale.levels)
    return RBMNet(n_items, len(values), config.hidden, values)


def _with_negatives(levels: torch.Tensor, ratio: float | None, generator: torch.Generator) -> torch.Tensor:
    """Mark ~ratio x (rated count) random unrated items per user (all if None) as observed at the lowest level."""
    if ratio is None:
        return torch.where(levels == 0, torch.ones_like(levels), levels)
    if ratio <= 0:
        return levels
    unrated = levels == 0
    wanted = ratio * (~unrated).sum(1, keepdim=True) / unrated.sum(1, keepdim=True).clamp(min=1)
    pick = (torch.rand(levels.shape, generator=generator, device=levels.device) < wanted) & unrated
    return torch.where(pick, torch.ones_like(levels), levels)


def _initial_visible_bias(levels: sp.csr_matrix, n_levels: int, ratio: float | None, reference: bool) -> torch.Tensor:
    """Per-item log-frequencies of each level among observed units (rated plus expected negatives).

    Starting the visible biases at the item marginals (Hinton's practical guide) means the RBM
    ranks like popularity before its first update, and the hidden units only learn what a
    user's taste adds; from zero biases a 10k-item catalogue spends its few updates per rare
    item on the marginals and the early-stopped model never gets past them.
    """
    counts = np.stack(
        [np.bincount(levels.indices[levels.data == k], minlength=levels.shape[1]) for k in range(1, n_levels + 1)],
        axis=1,
    ).astype(np.float64)
    rated = np.diff(levels.indptr).astype(np.float64)
    unrated = levels.shape[1] - rated
    if ratio is None:
        chance = np.ones_like(rated)
    else:
        chance = np.minimum(1.0, ratio * rated / np.maximum(unrated, 1.0)) if ratio > 0 else np.zeros_like(rated)
    # Expected negatives per item: every user's chance of sampling it, unless they rated it.
    rated_matrix = levels.copy()
    rated_matrix.data = np.ones_like(rated_matrix.data)
    negatives = chance.sum() - np.asarray(rated_matrix.T @ chance).ravel()
    counts[:, 0] += negatives
    logits = np.log(counts + 0.5)  # add-half smoothing: an item seen once is not certain
    if reference:
        logits = logits - logits[:, :1]  # the lowest level is the reference with logit 0
    return torch.from_numpy(logits.astype(np.float32))


def train(
    data: TrainingData, config: RBMConfig = RBMConfig(), *, progress: bool = True, checkpoint: Path | None = None
) -> tuple[RBM, FitHistory]:
    rng = seed_everything(config.seed)
    device = pick_device(config.device)
    net = _make_net(data.dataset.n_items, config, data.dataset.scale).to(device)
    model = RBM(data.dataset.item_ids, data.dataset.scale, config, net)
    levels_matrix = model.encode(data.train)
    n_levels = net.weight.shape[1]
    binary = config.visible == "liked"
    with torch.no_grad():
        net.visible_bias.copy_(_initial_visible_bias(levels_matrix, n_levels, config.negatives, binary))
        if binary:
            net.weight[:, 0, :] = 0.0
    # "liked" is a binary RBM written as a 2-level softmax whose "not liked" level has zero weight
    # and bias: only liked items feed the hidden units, so their input grows with what a user
    # liked, not with the catalogue. With free weights on "not liked", thousands of sampled
    # negatives summed into every hidden unit and saturated it on a 10k-item catalogue.
    masks = [torch.ones_like(p) for p in (net.weight, net.visible_bias, net.hidden_bias)]
    if binary:
        masks[0][:, 0, :] = 0.0
        masks[1][:, 0] = 0.0
    generator = torch.Generator(device=device).manual_seed(config.seed)
    velocity = [torch.zeros_like(p) for p in (net.weight, net.visible_bias, net.hidden_bias)]

    def run_epoch(_: int) -> float:
        error, batches = 0.0, 0
        for users in user_batches(levels_matrix, config.batch_size, rng):
            levels = _with_negatives(dense_rows(levels_matrix, users, device), config.negatives, generator)
            observed = (levels > 0).to(torch.float32).unsqueeze(2)
            v0 = one_hot(levels, n_levels)
            h0 = net.hidden_probs(v0)
            vk, hk = v0, h0
            for _step in range(config.cd_k):
                h_sample = torch.bernoulli(hk, generator=generator)
                probs = net.visible_probs(h_sample)
                sampled = torch.multinomial(probs.reshape(-1, n_levels), 1, generator=generator)
                vk = torch.nn.functional.one_hot(sampled.view(probs.shape[:2]), n_levels).float() * observed
                hk = net.hidden_probs(vk)
            size = len(users)
            grads = (
                (torch.einsum("bik,bh->ikh", v0, h0) - torch.einsum("bik,bh->ikh", vk, hk)) / size,
                (v0 - vk).sum(0) / size,
                (h0 - hk).sum(0) / size,
            )
            for param, vel, grad, mask in zip(
                (net.weight, net.visible_bias, net.hidden_bias), velocity, grads, masks, strict=True
            ):
                decay = config.weight_decay * param if param is net.weight else 0.0
                vel.mul_(config.momentum).add_(config.lr * (grad - decay) * mask)
                param.add_(vel)
            error += float(((v0 - vk) ** 2).sum() / observed.sum().clamp(min=1))
            batches += 1
        return error / max(batches, 1)

    validate = (lambda: validation_metrics(model, data)) if data.validation is not None else None
    history = fit(
        net,
        "rbm",
        run_epoch,
        validate,
        max_epochs=config.max_epochs,
        patience=config.patience,
        checkpoint=checkpoint,
        progress=progress,
    )
    return model, history
