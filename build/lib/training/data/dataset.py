"""The one in-memory representation every reader produces and every model consumes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RatingScale:
    low: float
    high: float
    step: float

    @property
    def levels(self) -> np.ndarray:
        """Every rating value the scale allows, e.g. [1, 2, 3, 4, 5] or [0.5, 1.0, ..., 5.0]."""
        count = round((self.high - self.low) / self.step) + 1
        return self.low + self.step * np.arange(count, dtype=np.float32)

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "step": self.step}


@dataclass(frozen=True)
class IdMap:
    """Stable bijection between a data set's raw ids and dense 0-based indices.

    Saved with every model, so a model trained on one export of the data keeps scoring the
    same items after the raw file order changes.
    """

    raw_ids: np.ndarray
    _lookup: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw_ids", np.asarray(self.raw_ids, dtype=np.int64))
        object.__setattr__(self, "_lookup", {int(r): i for i, r in enumerate(self.raw_ids)})

    def __len__(self) -> int:
        return len(self.raw_ids)

    def index_of(self, raw_id: int) -> int | None:
        """The index of one raw id, or None when the id is unknown."""
        return self._lookup.get(int(raw_id))

    def to_index(self, raw_ids: np.ndarray | list[int]) -> np.ndarray:
        """Indices for many raw ids at once; -1 marks an unknown id."""
        return np.fromiter((self._lookup.get(int(r), -1) for r in raw_ids), dtype=np.int64)

    def to_raw(self, indices: np.ndarray) -> np.ndarray:
        return self.raw_ids[np.asarray(indices, dtype=np.int64)]

    def to_list(self) -> list[int]:
        return self.raw_ids.tolist()


@dataclass
class MovieLens:
    """Ratings, items and users of one MovieLens release, with ids mapped to dense indices.

    ``ratings`` has columns ``user``, ``item`` (indices), ``rating`` (float32) and ``timestamp``.
    ``items`` is indexed by item index with ``title`` and ``year`` (NaN when unknown);
    ``genres`` is the matching multi-hot matrix. ``users`` is indexed by user index and holds
    demographics where the release has them (``age``, ``gender``, ``occupation``), else no columns.
    """

    name: str
    ratings: pd.DataFrame
    items: pd.DataFrame
    genres: np.ndarray
    genre_names: list[str]
    users: pd.DataFrame
    user_ids: IdMap
    item_ids: IdMap
    scale: RatingScale
    source: Path | None = None
    duplicates_dropped: int = 0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def fingerprint(self) -> str:
        """A short content hash of the ratings, so a model can say which data it came from."""
        digest = hashlib.sha256()
        for column in ("user", "item", "rating", "timestamp"):
            digest.update(np.ascontiguousarray(self.ratings[column].to_numpy()).tobytes())
        digest.update(json.dumps([self.user_ids.to_list()[:1000], self.n_users, self.n_items]).encode())
        return digest.hexdigest()[:16]

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "ratings": len(self.ratings),
            "scale": self.scale.to_dict(),
            "genres": len(self.genre_names),
            "demographics": list(self.users.columns),
            "duplicates_dropped": self.duplicates_dropped,
            "fingerprint": self.fingerprint(),
        }
