"""Stacked autoencoder over a user's rating vector.

Two encoder stacks read the user's normalised ratings (sigmoid; the rating path 20-10-20 by
default, the ranking path one layer of 200, each configurable):

* the rating path predicts ratings on the data set's scale, trained with MSE on observed
  ratings only (the classic SAE / AutoRec objective); it also sees the user's shrunk mean
  rating, a signal a narrow bottleneck otherwise has to relearn;
* an item-based rating path (I-AutoRec on a bias baseline, ``training.models.item_autorec``)
  predicts the ratings of training users from each item's column of ratings; the two rating
  predictions are blended with a share chosen on validation RMSE (u1 validation: user path
  0.919, item path 0.883, blend 0.880);
* the ranking path is a Mult-DAE (Liang et al. 2018): the user's rated items as a 0/1 vector,
  L2-normalised, through tanh layers (600 by default), scored with the multinomial
  log-likelihood of the rated items, because an MSE-on-ratings model ranks poorly for top-N:
  it never learns which items a user chooses to rate. The L2 normalisation keeps a heavy
  rater's input on the same scale as a light one's, which is what lets one learning rate fit
  ml-100k and a 10k-item catalogue alike. ``rank_by="rating"`` ranks by predicted rating
  instead, for comparison.

The two peak at different epochs, so each path is trained on its own and early-stopped on its
own validation metric (NDCG@10, RMSE). Inputs are corrupted by dropping observed ratings
(denoising) and the loss covers the dropped ones too, so the model learns what it was not shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from training.data.dataset import IdMap, RatingScale
from training.data.matrices import dense_rows, normalised
from training.models.base import TorchScorer, TrainingData, read_meta, scale_from, validation_metrics
from training.models.fitting import FitHistory, adam, corrupt, fit, liked_targets, multinomial_nll, user_batches
from training.models.item_autorec import ItemPath, train_item_path
from training.runtime import pick_device, seed_everything

ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "selu": nn.SELU}


@dataclass(frozen=True)
class SAEConfig:
    hidden: tuple[int, ...] = (20, 10, 20)
    # The Mult-DAE ranking path; its defaults follow Liang et al. and were checked on validation
    # slices only (docs/models-and-quality.md, "How the defaults were derived").
    ranking_hidden: tuple[int, ...] | None = (600,)  # None: same sizes as hidden
    ranking_lr: float | None = 1e-3  # None: same as lr
    ranking_activation: str = "tanh"
    # Learn to rank the items a user likes (rating >= like_threshold), what top-N is judged on,
    # rather than every item they rated: "rated" counts a 1-star film as a success.
    ranking_target: str = "liked"  # "liked" or "rated"
    like_threshold: float = 4.0
    activation: str = "sigmoid"
    dropout: float = 0.0  # between hidden layers
    input_dropout: float = 0.5  # share of observed ratings hidden from the input (denoising)
    rank_by: str = "likelihood"  # "likelihood": the ranking path; "rating": predicted ratings
    lr: float = 1e-2
    weight_decay: float = 1e-5
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 20  # best epochs on ml-100k u1 validation were 15-30 per path; 40 only cost time
    user_mean_shrinkage: float = 5.0  # pseudo-ratings at the global mean in the user-offset feature
    # The item-based rating path (None: off). Chosen on u1's validation RMSE: weight decay 1e-3
    # (3e-3: 0.900 vs 0.891 for one net on the baseline), 500 units, no corruption; two nets
    # averaged (one: 0.891, two: 0.883); baseline shrinkage 10 pseudo-ratings (5/3: 0.891 vs 0.889).
    item_hidden: int | None = 500
    item_nets: int = 2
    item_lr: float = 1e-3
    item_weight_decay: float = 1e-3
    item_input_dropout: float = 0.0
    item_batch_size: int = 32
    baseline_user_shrinkage: float = 10.0
    baseline_item_shrinkage: float = 10.0
    rating_blend: float | None = None  # the item path's share of a rating; None: chosen on validation
    # False leaves the user-based rating path untrained: tuning trials, judged on NDCG@10 only, skip it.
    train_rating_path: bool = True
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for activation in (self.activation, self.ranking_activation):
            if activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if self.ranking_target not in ("liked", "rated"):
            raise ValueError(f"ranking_target must be 'liked' or 'rated', got {self.ranking_target!r}")
        if self.rank_by not in ("likelihood", "rating"):
            raise ValueError(f"rank_by must be 'likelihood' or 'rating', got {self.rank_by!r}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive, got {self.hidden}")
        if self.item_nets < 1:
            raise ValueError(f"item_nets must be at least 1, got {self.item_nets}")
        if self.rating_blend is not None and not 0.0 <= self.rating_blend <= 1.0:
            raise ValueError(f"rating_blend must be in [0, 1], got {self.rating_blend}")


def _stack(n_items: int, config: SAEConfig, hidden: tuple[int, ...], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_items
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        if config.dropout:
            layers.append(nn.Dropout(config.dropout))
        width = size
    return nn.Sequential(*layers, nn.Linear(width, n_items))


class SAENet(nn.Module):
    """Normalised rating vector -> (predicted ratings, ranking logits) for every item."""

    def __init__(self, n_items: int, config: SAEConfig, scale: RatingScale, global_mean: float) -> None:
        super().__init__()
        self.rating_path = _stack(n_items, config, config.hidden, config.activation)
        self.ranking_path = _stack(n_items, config, config.ranking_hidden or config.hidden, config.ranking_activation)
        self.user_offset_weight = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("high", torch.tensor(float(scale.high)))
        self.register_buffer("low", torch.tensor(float(scale.low)))
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        self.shrinkage = float(config.user_mean_shrinkage)

    def rating_parameters(self) -> list[nn.Parameter]:
        return [*self.rating_path.parameters(), self.user_offset_weight]

    def forward(self, normalised_ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        observed = (normalised_ratings > 0).to(normalised_ratings.dtype)
        deviation = (normalised_ratings * self.high - self.global_mean) * observed
        user_offset = deviation.sum(1, keepdim=True) / (observed.sum(1, keepdim=True) + self.shrinkage)
        logit = self.rating_path(normalised_ratings) + self.user_offset_weight * user_offset
        # A sigmoid squashed onto [low, high] keeps every prediction on the rating scale.
        ratings = self.low + (self.high - self.low) * torch.sigmoid(logit)
        # Mult-DAE input: which items were rated, as a unit-length vector.
        rated = nn.functional.normalize(observed, dim=1)
        return ratings, self.ranking_path(rated)


ITEM_WEIGHTS = "item_autorec.pt"


class SAE(TorchScorer):
    name: ClassVar[str] = "sae"

    def __init__(
        self,
        item_ids: IdMap,
        scale: RatingScale,
        config: SAEConfig,
        net: SAENet,
        item_net: ItemPath | None = None,
        item_share: float = 0.0,
    ) -> None:
        super().__init__(item_ids, scale)
        self.config, self.net = config, net
        self.item_net, self.item_share = item_net, item_share
        self._observed: sp.csr_matrix | None = None  # the matrix the item path last encoded from

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def _forward(self, histories: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
        self.net.eval()
        x = dense_rows(normalised(histories, self.scale), np.arange(histories.shape[0]), self.device)
        return self.net(x)

    def score(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        ratings, logits = self._forward(histories)
        return (logits if self.config.rank_by == "likelihood" else ratings).cpu().numpy()

    def observe(self, ratings: sp.csr_matrix) -> None:
        """Every user's ratings known now: the item path encodes items (and fits its baseline) from them."""
        # Validation hands over the same fit matrix every epoch; re-encoding it would change nothing.
        if self.item_net is not None and ratings.shape[0] >= self.item_net.n_users and ratings is not self._observed:
            self.item_net.observe(ratings)
            self._observed = ratings

    def predict_ratings(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        ratings = self._forward(histories)[0]
        if self.item_net is None or users is None or self.item_share == 0.0:
            return ratings.cpu().numpy()
        # Only users the item path was trained on have an output unit there; others keep the user path.
        users = np.asarray(users)
        known = (users >= 0) & (users < self.item_net.n_users)
        if known.any():
            rows = torch.as_tensor(np.flatnonzero(known), device=ratings.device)
            item = self.item_net.predict(users[known]).clamp(float(self.scale.low), float(self.scale.high))
            ratings[rows] = (1.0 - self.item_share) * ratings[rows] + self.item_share * item
        return ratings.cpu().numpy()

    def _save_weights(self, folder: Path) -> None:
        super()._save_weights(folder)
        if self.item_net is not None:
            torch.save(self.item_net.state_dict(), folder / ITEM_WEIGHTS)

    def _extra_meta(self) -> dict[str, Any]:
        if self.item_net is None:
            return {}
        return {"item_share": self.item_share, "item_path_users": self.item_net.n_users, "item_path_version": 2}

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> SAE:
        meta = read_meta(folder)
        saved = meta["config"]
        ranking_hidden = tuple(saved["ranking_hidden"]) if saved.get("ranking_hidden") else None
        config = SAEConfig(**{**saved, "hidden": tuple(saved["hidden"]), "ranking_hidden": ranking_hidden})
        scale = scale_from(meta)
        net = SAENet(len(meta["item_ids"]), config, scale, 0.0)  # the mean is a buffer in the weights
        net.load_state_dict(cls.load_state(folder, device))
        item_net = None
        # Version 1 (no baseline, one net) is not read back: those models rate with the user path.
        if meta.get("item_path_version") == 2 and config.item_hidden:
            item_net = _item_path(meta["item_path_users"], len(meta["item_ids"]), config)
            item_net.load_state_dict(torch.load(folder / ITEM_WEIGHTS, map_location=device, weights_only=True))
            item_net = item_net.to(device).eval()
        return cls(
            IdMap(meta["item_ids"]), scale, config, net.to(device).eval(), item_net, float(meta.get("item_share", 0.0))
        )


def train(
    data: TrainingData, config: SAEConfig = SAEConfig(), *, progress: bool = True, checkpoint: Path | None = None
) -> tuple[SAE, FitHistory]:
    rng = seed_everything(config.seed)
    device = pick_device(config.device)
    scale, n_items = data.dataset.scale, data.dataset.n_items
    net = SAENet(n_items, config, scale, float(data.train.data.mean())).to(device)
    model = SAE(data.dataset.item_ids, scale, config, net)
    inputs, ratings = normalised(data.train, scale), data.train

    def make_epoch(params: list[nn.Parameter], ranking: bool):
        lr = (config.ranking_lr or config.lr) if ranking else config.lr
        optimiser = adam(params, lr=lr, weight_decay=config.weight_decay)

        def run_epoch(_: int) -> float:
            total, batches = 0.0, 0
            for users in user_batches(inputs, config.batch_size, rng):
                x = dense_rows(inputs, users, device)
                observed = (x > 0).float()
                predicted, logits = net(corrupt(x, config.input_dropout))
                if ranking:
                    target = (
                        observed
                        if config.ranking_target == "rated"
                        else liked_targets(x, float(scale.high), config.like_threshold)
                    )
                    loss = multinomial_nll(logits, target)
                else:
                    target = dense_rows(ratings, users, device)
                    loss = ((predicted - target) ** 2 * observed).sum() / observed.sum()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total, batches = total + loss.item(), batches + 1
            return total / max(batches, 1)

        return run_epoch

    def validator(metric: str) -> Callable[[], dict[str, float]] | None:
        """Each path is stopped on one metric, so its epochs compute that one alone."""
        return (lambda: validation_metrics(model, data, (metric,))) if data.validation is not None else None

    common = dict(max_epochs=config.max_epochs, patience=config.patience, progress=progress)
    history = FitHistory("sae-ratings", "rmse")
    if config.train_rating_path:
        history = fit(
            net,
            "sae-ratings",
            make_epoch(net.rating_parameters(), ranking=False),
            validator("rmse"),
            monitor="rmse",
            lower_is_better=True,
            **common,
        )
    if config.item_hidden:
        # Its own random streams, so adding this path leaves the ranking path's training unchanged.
        with torch.random.fork_rng(devices=[]):
            _add_item_path(model, data, config, np.random.default_rng(config.seed + 1), device, progress)
    if config.rank_by == "likelihood":
        ranking_history = fit(
            net,
            "sae-ranking",
            make_epoch(list(net.ranking_path.parameters()), ranking=True),
            validator("ndcg@10"),
            checkpoint=checkpoint,
            **common,
        )
        offset = len(history.epochs)
        history.epochs += [{**e, "epoch": e["epoch"] + offset} for e in ranking_history.epochs]
        history.best, history.best_epoch = ranking_history.best, ranking_history.best_epoch + offset
        history.monitor, history.seconds = ranking_history.monitor, history.seconds + ranking_history.seconds
    return model, history


def _add_item_path(
    model: SAE, data: TrainingData, config: SAEConfig, rng: np.random.Generator, device: torch.device, progress: bool
) -> None:
    """Train the item-based rating path and blend it in with the share that minimises validation RMSE."""
    pairs = data.validation_ratings
    validation = (
        None
        if pairs is None or not len(pairs)
        else (pairs["user"].to_numpy(), pairs["item"].to_numpy(), pairs["rating"].to_numpy().astype(np.float64))
    )
    item_net = _item_path(data.train.shape[0], data.dataset.n_items, config).to(device)
    train_item_path(
        item_net,
        data.train,
        validation,
        lr=config.item_lr,
        weight_decay=config.item_weight_decay,
        input_dropout=config.item_input_dropout,
        batch_size=config.item_batch_size,
        max_epochs=config.max_epochs,
        patience=config.patience,
        rng=rng,
        progress=progress,
    )
    model.item_net, model._observed = item_net.eval(), data.train  # train_item_path ends encoding from it
    if config.rating_blend is not None or validation is None:
        model.item_share = 0.5 if config.rating_blend is None else config.rating_blend
        return
    users, items, ratings = validation
    low, high = float(model.scale.low), float(model.scale.high)
    user_path = np.take_along_axis(model.predict_ratings(data.train[users]), items[:, None], 1)[:, 0]
    item_path = np.clip(item_net.predict_pairs(users, items), low, high)
    shares = np.linspace(0.0, 1.0, 21)
    errors = [np.sqrt(np.mean(((1 - s) * user_path + s * item_path - ratings) ** 2)) for s in shares]
    model.item_share = float(shares[int(np.argmin(errors))])


def _item_path(n_users: int, n_items: int, config: SAEConfig) -> ItemPath:
    shrinkage = (config.baseline_user_shrinkage, config.baseline_item_shrinkage)
    return ItemPath(n_users, n_items, config.item_hidden or 0, config.item_nets, shrinkage)
