"""Feedback events and the interface every store backend implements."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class StoreError(RuntimeError):
    """The store is unusable or unreachable; the message says why. Nothing was written."""


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: int  # raw catalogue id
    kind: str  # "rating" or "click"
    rating: float | None
    timestamp_ms: int  # when it happened (the caller's clock): "latest wins" compares this
    event_id: str = ""  # idempotency key: a second write with the same id is ignored
    seq: int = 0  # the store's arrival order (a watermark); 0 until stored

    def with_id(self) -> Event:
        """The event with an id: a caller without ids gets one derived from the content, so a retry
        of the same event (same timestamp) is still recognised."""
        if self.event_id:
            return self
        text = f"{self.user_id}|{self.item_id}|{self.kind}|{self.rating}|{self.timestamp_ms}"
        return Event(
            self.user_id,
            self.item_id,
            self.kind,
            self.rating,
            self.timestamp_ms,
            "c-" + hashlib.sha256(text.encode()).hexdigest()[:32],
        )


class Store(Protocol):
    """Both backends: SqliteStore (one node) and ValkeyStore (shared by replicas)."""

    url: str
    # True when version/user_events are local reads that never wait for a write (microseconds):
    # the server then makes them on its event loop rather than in a worker thread.
    local_reads: bool

    def append(self, events: list[Event], request_id: str) -> int:
        """Store the events whose ids are new, durably and atomically; return how many were new."""

    def user_events(self, user_id: str) -> list[Event]:
        """That user's events, in arrival order (cost: O(the user's events))."""

    def version(self, user_id: str) -> int:
        """How many events the user has; it grows with every new event, so it versions the profile."""

    def events_after(self, seq: int = 0) -> Iterator[Event]:
        """Every event stored after watermark ``seq``, in arrival order (for retraining)."""

    def count(self) -> int: ...

    def cache_get(self, key: str) -> bytes | None: ...

    def cache_put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def close(self) -> None: ...
