"""The SAE's item-based rating path: I-AutoRec (Sedhain et al. 2015).

Each item is encoded from its column of training ratings (one input per training user) and the
decoder reconstructs that column, one output per user, trained with MSE on observed ratings.
Item-based AutoRec predicts ratings better than the user-based form (the paper: 0.831 vs 0.874
RMSE on ml-1m) because an item has many more ratings to be encoded from than a user has.

Why it only predicts ratings, and only for training users: a user is an *output unit*, so a user
unseen in training has no prediction here (the SAE falls back to its user-based rating path). The
item codes are computed once from the training matrix at the end of training and kept as a
buffer, so prediction needs no access to other users' ratings. The export graph never reads this
path: it serves the ranking path.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from training.data.matrices import dense_rows
from training.models.fitting import FitHistory, corrupt, fit, user_batches


class ItemAutoRec(nn.Module):
    """Item column of ratings -> sigmoid code -> reconstructed column; ``codes`` hold the trained items'."""

    def __init__(self, n_users: int, n_items: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(n_users, hidden)
        self.decoder = nn.Linear(hidden, n_users)
        self.register_buffer("codes", torch.zeros(n_items, hidden))

    def forward(self, columns: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.sigmoid(self.encoder(columns)))

    @torch.no_grad()
    def remember(self, item_columns: sp.csr_matrix) -> None:
        """Encode every item from its training column; predictions read these codes."""
        self.codes.copy_(
            torch.sigmoid(self.encoder(dense_rows(item_columns, np.arange(item_columns.shape[0]), self.codes.device)))
        )

    @torch.no_grad()
    def predict(self, users: np.ndarray) -> torch.Tensor:
        """Ratings (len(users) x items) for training users (indices below the decoder's width)."""
        index = torch.as_tensor(users, dtype=torch.long, device=self.codes.device)
        return self.decoder.bias[index, None] + self.decoder.weight[index] @ self.codes.T

    @torch.no_grad()
    def predict_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(np.array(users, dtype=np.int64)).to(self.codes.device)  # a copy: pandas gives read-only
        i = torch.from_numpy(np.array(items, dtype=np.int64)).to(self.codes.device)
        return (self.decoder.bias[u] + (self.decoder.weight[u] * self.codes[i]).sum(1)).cpu().numpy()

    def penalty(self) -> torch.Tensor:
        return self.encoder.weight.pow(2).sum() + self.decoder.weight.pow(2).sum()


Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # users, items, ratings


def train_item_path(
    net: ItemAutoRec,
    train: sp.csr_matrix,
    validation: Pairs | None,
    *,
    lr: float,
    weight_decay: float,
    input_dropout: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    rng: np.random.Generator,
    progress: bool,
) -> FitHistory:
    """Fit on the item columns of ``train``; early-stop on validation RMSE of (users, items, ratings)."""
    columns = sp.csr_matrix(train.T)
    device = net.codes.device
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)

    def run_epoch(_: int) -> float:
        total, batches = 0.0, 0
        for items in user_batches(columns, batch_size, rng):
            x = dense_rows(columns, items, device)
            observed = (x > 0).to(x.dtype)
            x_in = corrupt(x, input_dropout) if input_dropout else x
            # The L2 term is on the weights' sum of squares: weight_decay scales it against the mean error.
            loss = ((net(x_in) - x) ** 2 * observed).sum() / observed.sum() + weight_decay * net.penalty()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, batches = total + loss.item(), batches + 1
        return total / max(batches, 1)

    def validate() -> dict[str, float]:
        users, items, ratings = validation  # type: ignore[misc]
        net.remember(columns)
        predicted = net.predict_pairs(users, items)
        return {"rmse": float(np.sqrt(np.mean((predicted - ratings) ** 2)))}

    history = fit(
        net,
        "sae-item-ratings",
        run_epoch,
        validate if validation is not None else None,
        max_epochs=max_epochs,
        patience=patience,
        progress=progress,
        monitor="rmse",
        lower_is_better=True,
    )
    net.remember(columns)  # the best epoch's weights are back in place; encode with them
    return history
