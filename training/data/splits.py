"""Reproducible train/test splits: official ml-100k folds, per-user holdout, temporal, validation."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.data.dataset import MovieLens
from training.data.readers import DataError, read_ratings_file

OFFICIAL_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


@dataclass(frozen=True)
class Split:
    """Ratings (dense indices) divided into a part to learn from and a part to judge on."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame


def official_split(dataset: MovieLens, name: str = "u1") -> Split:
    """One of the splits shipped with ml-100k (``u1``..``u5``, ``ua``, ``ub``)."""
    if name not in OFFICIAL_SPLITS:
        raise DataError(f"unknown official split {name!r}; choose one of {', '.join(OFFICIAL_SPLITS)}")
    if dataset.source is None or not (dataset.source / f"{name}.base").is_file():
        raise DataError(
            f"{dataset.source}: official split {name} needs {name}.base and {name}.test (only ml-100k ships them)"
        )
    parts = []
    for suffix in ("base", "test"):
        path = dataset.source / f"{name}.{suffix}"
        raw = read_ratings_file(path, "ml-100k")
        users, items = dataset.user_ids.to_index(raw["user"]), dataset.item_ids.to_index(raw["item"])
        if (users < 0).any() or (items < 0).any():
            raise DataError(f"{path}: ratings name ids that u.data's users or items do not have")
        parts.append(
            pd.DataFrame(
                {
                    "user": users,
                    "item": items,
                    "rating": raw["rating"].to_numpy(np.float32),
                    "timestamp": raw["timestamp"].to_numpy(np.int64),
                }
            )
        )
    return Split(name, parts[0], parts[1])


def _per_user_rank(ratings: pd.DataFrame, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each rating's 0-based rank within its user by ``key``, and the user's rating count."""
    order = np.lexsort((key, ratings["user"].to_numpy()))
    users_sorted = ratings["user"].to_numpy()[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users_sorted)) + 1]
    counts_sorted = np.diff(np.r_[starts, len(order)])
    rank_sorted = np.arange(len(order)) - np.repeat(starts, counts_sorted)
    rank, count = np.empty(len(order), np.int64), np.empty(len(order), np.int64)
    rank[order], count[order] = rank_sorted, np.repeat(counts_sorted, counts_sorted)
    return rank, count


def holdout_split(
    ratings: pd.DataFrame, fraction: float = 0.2, min_ratings: int = 6, seed: int = 0, name: str | None = None
) -> Split:
    """Per-user random holdout: ``fraction`` of each user's ratings (at least one) go to test.

    Users with fewer than ``min_ratings`` ratings keep them all in train.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    rank, count = _per_user_rank(ratings, rng.random(len(ratings)))
    held = np.maximum(1, np.floor(count * fraction)).astype(np.int64)
    test = (count >= min_ratings) & (rank < held)
    return Split(
        name or f"holdout-{fraction:g}-seed{seed}",
        ratings[~test].reset_index(drop=True),
        ratings[test].reset_index(drop=True),
    )


def temporal_split(ratings: pd.DataFrame, n: int = 1, min_ratings: int = 6) -> Split:
    """Leave-last-n-out: each user's ``n`` latest ratings go to test (ties broken by item)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    key = ratings["timestamp"].to_numpy() * 1.0 + ratings["item"].to_numpy() * 1e-9
    rank, count = _per_user_rank(ratings, -key)
    test = (count >= max(min_ratings, n + 1)) & (rank < n)
    return Split(f"temporal-last{n}", ratings[~test].reset_index(drop=True), ratings[test].reset_index(drop=True))


def validation_split(train: pd.DataFrame, fraction: float = 0.1, seed: int = 0) -> Split:
    """Carve a validation set out of train, for early stopping and ensemble weights."""
    return holdout_split(train, fraction=fraction, min_ratings=5, seed=seed + 7919, name="validation")


def make_split(dataset: MovieLens, spec: str, seed: int = 0) -> Split:
    """Parse a split spec: ``u1``..``ub``, ``holdout[:FRACTION]`` or ``temporal[:N]``.

    A split's own ``name`` (``holdout-0.2-seed0``, ``temporal-last1``) is accepted too: it is what
    the registry records, and export rebuilds the split from it.
    """
    if named := re.fullmatch(r"holdout-([0-9.e-]+)-seed(\d+)", spec):
        return holdout_split(dataset.ratings, fraction=float(named.group(1)), seed=int(named.group(2)))
    if named := re.fullmatch(r"temporal-last(\d+)", spec):
        return temporal_split(dataset.ratings, n=int(named.group(1)))
    kind, _, arg = spec.partition(":")
    if kind in OFFICIAL_SPLITS:
        return official_split(dataset, kind)
    if kind == "holdout":
        return holdout_split(dataset.ratings, fraction=float(arg or 0.2), seed=seed)
    if kind == "temporal":
        return temporal_split(dataset.ratings, n=int(arg or 1))
    raise DataError(f"unknown split {spec!r}; use u1..u5/ua/ub, holdout[:0.2] or temporal[:1]")
