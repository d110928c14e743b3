"""Two-tower retrieval model: user tower from rating history, item tower from id + genres + year.

* User tower: the user's normalised ratings pooled through an item-input embedding
  (1/sqrt(n) pooling), plus demographics where the data set has them, through an MLP. A user
  never seen in training is embedded from their ratings alone.
* Item tower: id embedding + genre projection + decade embedding, and a scalar bias folded in
  as an extra dimension, so scoring stays a plain dot product. During training the id part is
  dropped at random, so an item with no ratings still gets a useful embedding from its content.
* Objective: the multinomial log-likelihood of a user's rated items over the full catalogue
  (an exact softmax, cheap at MovieLens catalogue sizes), from a history with items dropped
  at random so the tower learns to predict what it was not shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from training.data.dataset import IdMap, MovieLens, RatingScale
from training.data.features import N_YEAR_BUCKETS, Demographics, year_buckets
from training.data.matrices import dense_rows, normalised
from training.models.base import TorchScorer, TrainingData, read_meta, scale_from, validation_metrics
from training.models.fitting import FitHistory, corrupt, fit, liked_targets, multinomial_nll, user_batches
from training.runtime import pick_device, seed_everything


@dataclass(frozen=True)
class TwoTowerConfig:
    dim: int = 64
    hidden: int = 256
    history_dropout: float = 0.5
    item_id_dropout: float = 0.1
    lr: float = 2e-3
    target: str = "liked"  # the softmax's targets: "liked" (rating >= like_threshold) or "rated"
    like_threshold: float = 4.0
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 15
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.target not in ("liked", "rated"):
            raise ValueError(f"target must be 'liked' or 'rated', got {self.target!r}")


class UserTower(nn.Module):
    def __init__(self, n_items: int, demographic_sizes: tuple[int, ...], config: TwoTowerConfig) -> None:
        super().__init__()
        self.history = nn.Linear(n_items, config.dim, bias=False)
        self.demographics = nn.ModuleList(nn.Embedding(size, config.dim) for size in demographic_sizes)
        self.mlp = nn.Sequential(
            nn.Linear(2 * config.dim, config.hidden), nn.Tanh(), nn.Linear(config.hidden, config.dim)
        )

    def forward(self, normalised_ratings: torch.Tensor, demographics: torch.Tensor) -> torch.Tensor:
        count = (normalised_ratings > 0).sum(1, keepdim=True).clamp(min=1).to(normalised_ratings.dtype)
        pooled = self.history(normalised_ratings) / count.sqrt()
        side = sum(emb(demographics[:, j]) for j, emb in enumerate(self.demographics))
        user = self.mlp(torch.cat([pooled, side], dim=1))
        return torch.cat([user, torch.ones_like(user[:, :1])], dim=1)  # pairs with the item bias


class ItemTower(nn.Module):
    def __init__(self, genres: torch.Tensor, years: torch.Tensor, config: TwoTowerConfig) -> None:
        super().__init__()
        n_items, n_genres = genres.shape
        self.ids = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.ids.weight, std=0.01)
        self.genre = nn.Linear(n_genres, config.dim, bias=False)
        self.decade = nn.Embedding(N_YEAR_BUCKETS, config.dim)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.bias.weight)
        self.register_buffer("genres", genres)
        self.register_buffer("years", years)
        self.id_dropout = config.item_id_dropout

    def forward(self) -> torch.Tensor:
        """Embeddings of every item, (items x dim + 1); the last column is the item bias."""
        ids = self.ids.weight
        if self.training and self.id_dropout:
            ids = ids * (torch.rand(ids.shape[0], 1, device=ids.device) >= self.id_dropout)
        content = self.genre(self.genres) + self.decade(self.years)
        return torch.cat([ids + content, self.bias.weight], dim=1)


class TwoTowerNet(nn.Module):
    def __init__(
        self,
        n_items: int,
        genres: torch.Tensor,
        years: torch.Tensor,
        demographic_sizes: tuple[int, ...],
        config: TwoTowerConfig,
    ) -> None:
        super().__init__()
        self.user_tower = UserTower(n_items, demographic_sizes, config)
        self.item_tower = ItemTower(genres, years, config)

    def forward(self, normalised_ratings: torch.Tensor, demographics: torch.Tensor) -> torch.Tensor:
        return self.user_tower(normalised_ratings, demographics) @ self.item_tower().T


class TwoTower(TorchScorer):
    name: ClassVar[str] = "two_tower"

    def __init__(
        self,
        item_ids: IdMap,
        scale: RatingScale,
        config: TwoTowerConfig,
        net: TwoTowerNet,
        demographics: Demographics,
        user_codes: np.ndarray,
    ) -> None:
        super().__init__(item_ids, scale)
        self.config, self.net = config, net
        self.demographics = demographics
        self.user_codes = user_codes  # demographic codes of the training data set's users

    def _codes(self, users: np.ndarray | None, count: int) -> torch.Tensor:
        codes = np.zeros((count, 3), dtype=np.int64)
        if users is not None:
            users = np.asarray(users)
            known = (users >= 0) & (users < len(self.user_codes))
            codes[known] = self.user_codes[users[known]]
        return torch.from_numpy(codes).to(self.net.item_tower.genres.device)

    @torch.no_grad()
    def user_embeddings(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> torch.Tensor:
        self.net.eval()
        x = dense_rows(
            normalised(histories, self.scale), np.arange(histories.shape[0]), self.net.item_tower.genres.device
        )
        return self.net.user_tower(x, self._codes(users, histories.shape[0]))

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        self.net.eval()
        return self.net.item_tower()

    def score(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        return (self.user_embeddings(histories, users) @ self.item_embeddings().T).cpu().numpy()

    def _extra_meta(self) -> dict[str, Any]:
        return {"demographics": self.demographics.to_dict()}

    def _save_weights(self, folder: Path) -> None:
        super()._save_weights(folder)
        np.save(folder / "user_codes.npy", self.user_codes)

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> TwoTower:
        meta = read_meta(folder)
        config = TwoTowerConfig(**meta["config"])
        demographics = Demographics(tuple(meta["demographics"]["genders"]), tuple(meta["demographics"]["occupations"]))
        state = cls.load_state(folder, device)
        net = TwoTowerNet(
            len(meta["item_ids"]), state["item_tower.genres"], state["item_tower.years"], demographics.sizes, config
        )
        net.load_state_dict(state)
        return cls(
            IdMap(meta["item_ids"]),
            scale_from(meta),
            config,
            net.to(device).eval(),
            demographics,
            np.load(folder / "user_codes.npy"),
        )


def _build(dataset: MovieLens, config: TwoTowerConfig, device: torch.device) -> TwoTower:
    demographics = Demographics.fit(dataset.users)
    genres = torch.from_numpy(dataset.genres.astype(np.float32))
    years = torch.from_numpy(year_buckets(dataset.items["year"].to_numpy()))
    net = TwoTowerNet(dataset.n_items, genres, years, demographics.sizes, config).to(device)
    return TwoTower(dataset.item_ids, dataset.scale, config, net, demographics, demographics.encode(dataset.users))


def train(
    data: TrainingData,
    config: TwoTowerConfig = TwoTowerConfig(),
    *,
    progress: bool = True,
    checkpoint: Path | None = None,
) -> tuple[TwoTower, FitHistory]:
    rng = seed_everything(config.seed)
    device = pick_device(config.device)
    model = _build(data.dataset, config, device)
    net, inputs = model.net, normalised(data.train, data.dataset.scale)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def run_epoch(_: int) -> float:
        total, batches = 0.0, 0
        for users in user_batches(inputs, config.batch_size, rng):
            x = dense_rows(inputs, users, device)
            target = (
                (x > 0).float()
                if config.target == "rated"
                else liked_targets(x, float(data.dataset.scale.high), config.like_threshold)
            )
            logits = net(corrupt(x, config.history_dropout), model._codes(users, len(users)))
            loss = multinomial_nll(logits, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, batches = total + loss.item(), batches + 1
        return total / max(batches, 1)

    validate = (lambda: validation_metrics(model, data)) if data.validation is not None else None
    history = fit(
        net,
        "two_tower",
        run_epoch,
        validate,
        max_epochs=config.max_epochs,
        patience=config.patience,
        checkpoint=checkpoint,
        progress=progress,
    )
    return model, history
