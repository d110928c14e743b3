"""Sparse user x item matrices and the per-model views of them.

Everything stays in scipy CSR; a dense block exists only for the users of one mini-batch, so
ml-25m (162k x 62k) fits in memory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from training.data.dataset import RatingScale


def to_csr(ratings: pd.DataFrame, n_users: int, n_items: int, values: np.ndarray | None = None) -> sp.csr_matrix:
    """User x item matrix of ``values`` (the ratings by default) at the rated positions."""
    data = ratings["rating"].to_numpy(np.float32) if values is None else np.asarray(values, np.float32)
    matrix = sp.csr_matrix(
        (data, (ratings["user"].to_numpy(), ratings["item"].to_numpy())), shape=(n_users, n_items), dtype=np.float32
    )
    matrix.sum_duplicates()
    return matrix


def normalised(matrix: sp.csr_matrix, scale: RatingScale) -> sp.csr_matrix:
    """Ratings divided by the top of the scale, so every observed value is in (0, 1] and 0 means unrated."""
    out = matrix.copy()
    out.data = out.data / np.float32(scale.high)
    return out


def rating_levels(matrix: sp.csr_matrix, scale: RatingScale) -> sp.csr_matrix:
    """1-based index of each rating among the scale's levels (0 stays 'unrated')."""
    out = matrix.copy()
    out.data = np.round((out.data - scale.low) / scale.step).astype(np.float32) + 1
    return out


def liked(matrix: sp.csr_matrix, threshold: float) -> sp.csr_matrix:
    """Two levels: 2 = liked (rating >= threshold), 1 = disliked; 0 stays 'unrated'."""
    out = matrix.copy()
    out.data = np.where(out.data >= threshold, 2.0, 1.0).astype(np.float32)
    return out


def dense_rows(matrix: sp.csr_matrix, rows: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """The given rows as one dense float tensor: the only dense block training ever makes."""
    return torch.from_numpy(matrix[rows].toarray()).to(device)


def item_counts(matrix: sp.csr_matrix) -> np.ndarray:
    return np.bincount(matrix.indices, minlength=matrix.shape[1])
