"""Live user profiles: the bundle's rating history overlaid with recorded feedback and inline ratings.

A rating replaces the history's rating of the same item; a click counts as a "liked" rating
unless the user rated that item (explicit beats implicit, whichever came first). Users the
bundle does not know become known once they record feedback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.bundle import Bundle
from server.feedback import Event


@dataclass(frozen=True)
class Profile:
    item_idx: np.ndarray  # int64 catalogue indices
    ratings: np.ndarray  # float32, aligned
    known: bool  # the bundle or recorded feedback knows this user
    user_index: int | None  # row in the bundle's histories/demographics, if any

    def __len__(self) -> int:
        return len(self.item_idx)


class Profiles:
    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._ratings: dict[str, dict[int, float]] = {}  # user -> item index -> explicit rating
        self._clicks: dict[str, set[int]] = {}

    def apply(self, event: Event) -> None:
        idx = self.bundle.item_index.get(event.item_id)
        if idx is None:  # validated before storing; a replayed event for a since-removed item is skipped
            return
        if event.kind == "rating" and event.rating is not None:
            self._ratings.setdefault(event.user_id, {})[idx] = float(event.rating)
        else:
            self._clicks.setdefault(event.user_id, set()).add(idx)

    def get(self, user_id: str, inline: dict[int, float] | None = None) -> Profile:
        row = self.bundle.user_index.get(user_id) if user_id else None
        merged: dict[int, float] = {}
        if row is not None:
            history = self.bundle.histories[row]
            merged.update(zip(history.indices.tolist(), history.data.tolist(), strict=True))
        liked = self.bundle.liked_threshold
        for idx in self._clicks.get(user_id, ()):
            if idx not in merged:
                merged[idx] = liked
        merged.update(self._ratings.get(user_id, {}))
        merged.update(inline or {})
        known = row is not None or user_id in self._ratings or user_id in self._clicks
        items = np.fromiter(merged.keys(), dtype=np.int64, count=len(merged))
        ratings = np.fromiter(merged.values(), dtype=np.float32, count=len(merged))
        return Profile(items, ratings, known, row)
