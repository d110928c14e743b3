"""Admission up to capacity: per-model in-flight limits from the rate Triton actually serves.

Little's law: a model completing X calls a second with L of them in flight takes L / X seconds a
call. To keep its calls near ``target_ms``, at most X * target may be in flight. X is measured
over a sliding window of completed calls, so the limit follows Triton's capacity: while calls
take less than the target the limit grows (X * target > L), when they queue longer it shrinks.
It never falls below ``floor`` (enough requests in flight for Triton to form batches).

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
    target_ms: float
    floor: int
    window_s: float = 2.0
    in_flight: int = 0
    completed: deque[float] = field(default_factory=deque)  # monotonic times of successful calls

    def limit(self) -> int:
        horizon = time.monotonic() - self.window_s
        while self.completed and self.completed[0] < horizon:
            self.completed.popleft()
        rate = len(self.completed) / self.window_s
        return max(self.floor, int(rate * self.target_ms / 1000))


class Admission:
    """Limits keyed by Triton model name; ``target_ms`` <= 0 turns admission off."""

    def __init__(self, target_ms: float, floor: int) -> None:
        self.target_ms, self.floor = target_ms, floor
        self.models: dict[str, Capacity] = {}

    def capacity(self, model: str) -> Capacity:
        if model not in self.models:
            self.models[model] = Capacity(self.target_ms, self.floor)
        return self.models[model]

    def full(self, models: tuple[str, ...]) -> str | None:
        """Why a branch calling ``models`` cannot be admitted now, or None when it can."""
        if self.target_ms <= 0:
            return None
        for model in models:
            capacity = self.capacity(model)
            if capacity.in_flight >= (limit := capacity.limit()):
                return f"at capacity ({model}: {capacity.in_flight} calls in flight, limit {limit})"
        return None

    def started(self, model: str) -> None:
        self.capacity(model).in_flight += 1

    def finished(self, model: str, ok: bool) -> None:
        capacity = self.capacity(model)
        capacity.in_flight -= 1
        if ok:
            capacity.completed.append(time.monotonic())
