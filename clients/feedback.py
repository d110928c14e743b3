"""Feedback events as the SDK sends them: each with an event id and a timestamp fixed when the
call is built, so every retry of the call carries the same ids and the server stores each event
once (a lost response followed by a retry never duplicates it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from recsys.v1 import recommender_pb2 as pb


@dataclass(frozen=True)
class Feedback:
    """One event: a rating (``rating`` set) or a click (``rating`` None)."""

    item_id: int
    rating: float | None = None
    timestamp_ms: int | None = None  # when it happened; None: now
    event_id: str | None = None  # your own idempotency key (e.g. from an outbox); None: a new UUID

    def to_pb(self, now_ms: int) -> pb.FeedbackEvent:
        kind = pb.FEEDBACK_KIND_CLICK if self.rating is None else pb.FEEDBACK_KIND_RATING
        return pb.FeedbackEvent(
            item_id=self.item_id,
            kind=kind,
            rating=self.rating or 0.0,
            timestamp_ms=now_ms if self.timestamp_ms is None else self.timestamp_ms,
            event_id=self.event_id or uuid.uuid4().hex,
        )


def feedback_events(
    ratings: dict[int, float] | None, clicks: Iterable[int], events: Iterable[Feedback]
) -> list[pb.FeedbackEvent]:
    now_ms = int(time.time() * 1000)
    every = [Feedback(i, float(r)) for i, r in (ratings or {}).items()]
    every += [Feedback(i) for i in clicks]
    every += list(events)
    return [e.to_pb(now_ms) for e in every]
