"""Live user profiles: the bundle's rating history overlaid with stored feedback and inline ratings.

Feedback resolves by event time, not arrival: of one user's ratings of an item the latest wins
(a retry or a late-arriving old event cannot undo a newer rating). A click counts as a "liked"
rating unless the user rated that item (explicit beats implicit). Users the bundle does not
know become known once they record feedback.

Overlays are read from the store one user at a time (O(that user's events)) and kept in an LRU
keyed by the user's store version, so a replica sees feedback another replica recorded as soon
as the version moved: ``refresh`` (a cheap version read) runs before every answer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from server.bundle import Bundle
from server.store import Event, Store


@dataclass(frozen=True)
class Profile:
    item_idx: np.ndarray  # int64 catalogue indices
    ratings: np.ndarray  # float32, aligned
    known: bool  # the bundle or recorded feedback knows this user
    user_index: int | None  # row in the bundle's histories/demographics, if any

    def __len__(self) -> int:
        return len(self.item_idx)


@dataclass(frozen=True)
class Overlay:
    version: int
    ratings: dict[int, float]  # item index -> explicit rating (the latest by event time)
    clicks: frozenset[int]


def overlay(bundle: Bundle, events: list[Event], version: int) -> Overlay:
    ratings: dict[int, float] = {}
    clicks: set[int] = set()
    for event in sorted(events, key=lambda e: (e.timestamp_ms, e.seq)):
        idx = bundle.item_index.get(event.item_id)
        if idx is None:  # validated before storing; an event for a since-removed item is skipped
            continue
        if event.kind == "rating" and event.rating is not None:
            ratings[idx] = float(event.rating)
        else:
            clicks.add(idx)
    return Overlay(version, ratings, frozenset(clicks))


class Profiles:
    def __init__(self, bundle: Bundle, store: Store, capacity: int = 10_000) -> None:
        self.bundle, self.store, self.capacity = bundle, store, capacity
        self._lru: OrderedDict[str, Overlay] = OrderedDict()
        self._lock = threading.Lock()  # refresh runs in worker threads

    def refresh(self, user_id: str) -> int:
        """Bring the user's overlay up to the store's version (blocking I/O: call it off the event loop)."""
        if not user_id:
            return 0
        version = self.store.version(user_id)
        with self._lock:
            cached = self._lru.get(user_id)
            if cached is not None and cached.version == version:
                self._lru.move_to_end(user_id)
                return version
        if version == 0:
            fresh = Overlay(0, {}, frozenset())
        else:
            events = self.store.user_events(user_id)
            fresh = overlay(self.bundle, events, len(events))
        with self._lock:
            self._lru[user_id] = fresh
            self._lru.move_to_end(user_id)
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)
        return fresh.version

    def version(self, user_id: str) -> int:
        with self._lock:
            cached = self._lru.get(user_id)
        return cached.version if cached is not None else self.refresh(user_id)

    def get(self, user_id: str, inline: dict[int, float] | None = None) -> Profile:
        row = self.bundle.user_index.get(user_id) if user_id else None
        with self._lock:
            current = self._lru.get(user_id) if user_id else None
        if current is None and user_id:  # evicted or never refreshed: read it now
            self.refresh(user_id)
            with self._lock:
                current = self._lru.get(user_id)
        merged: dict[int, float] = {}
        if row is not None:
            history = self.bundle.histories[row]
            merged.update(zip(history.indices.tolist(), history.data.tolist(), strict=True))
        known = row is not None
        if current is not None:
            liked = self.bundle.liked_threshold
            for idx in current.clicks:
                if idx not in merged:
                    merged[idx] = liked
            merged.update(current.ratings)
            known = known or current.version > 0
        merged.update(inline or {})
        items = np.fromiter(merged.keys(), dtype=np.int64, count=len(merged))
        ratings = np.fromiter(merged.values(), dtype=np.float32, count=len(merged))
        return Profile(items, ratings, known, row)

    def __len__(self) -> int:
        return len(self._lru)
