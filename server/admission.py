"""Admission up to capacity: per-model in-flight limits from the rate Triton actually serves.

Little's law: a model completing X calls a second with L of them in flight takes about L / X
seconds a call. So a call may start when (L + 1) / X fits the time the request can give it:
the in-flight limit is X times that time. X is measured over a sliding window of completed
calls, so the limit follows Triton's capacity (batching raises X, a busy machine lowers it), and
a request with a long budget is admitted where one with a short budget is not. ``floor`` calls
are always allowed (enough in flight for Triton to form batches, and to measure X at all).

Under overload, the requests beyond the limit leave that model out (their answer is degraded,
"at capacity") while the admitted ones get full answers in time. Without limits every call
queues, the p95 climbs past the budget, and the planner sheds the model for every request.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Capacity:
    floor: int
    window_s: float = 2.0
    in_flight: int = 0
    completed: deque[float] = field(default_factory=deque)  # monotonic times of successful calls

    def rate(self) -> float:
        """Calls completed per second over the window."""
        horizon = time.monotonic() - self.window_s
        while self.completed and self.completed[0] < horizon:
            self.completed.popleft()
        return len(self.completed) / self.window_s

    def limit(self, allowed_ms: float) -> int:
        """Calls that may be in flight for each to take about ``allowed_ms``."""
        return max(self.floor, int(self.rate() * allowed_ms / 1000))


class Admission:
    """Limits keyed by Triton model name; ``enabled=False`` admits everything."""

    def __init__(self, floor: int, enabled: bool = True) -> None:
        self.floor, self.enabled = floor, enabled
        self.models: dict[str, Capacity] = {}

    def capacity(self, model: str) -> Capacity:
        if model not in self.models:
            self.models[model] = Capacity(self.floor)
        return self.models[model]

    def full(self, models: tuple[str, ...], allowed_ms: float) -> str | None:
        """Why a branch calling ``models`` (each given ``allowed_ms``) cannot start now, or None."""
        if not self.enabled:
            return None
        for model in models:
            capacity = self.capacity(model)
            if capacity.in_flight >= (limit := capacity.limit(allowed_ms)):
                return f"at capacity ({model}: {capacity.in_flight} calls in flight, limit {limit})"
        return None

    def started(self, model: str) -> None:
        self.capacity(model).in_flight += 1

    def finished(self, model: str, ok: bool) -> None:
        capacity = self.capacity(model)
        capacity.in_flight -= 1
        if ok:
            capacity.completed.append(time.monotonic())
