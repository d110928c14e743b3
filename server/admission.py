"""Admission up to capacity: per-model in-flight limits from the rate Triton actually serves.

Little's law: a model completing X calls a second with L of them in flight takes about L / X
seconds a call. So a call may start when (L + 1) / X fits the time the request can give it:
the in-flight limit is X times that time. X is measured over the last ``size`` completed calls
against the time the model was busy (at least one call in flight) while they completed, not
against the wall clock: it is the rate Triton serves at when it has work, so it follows Triton's
capacity (batching raises X, a busy machine lowers it) but not the offered load. Measured against
the wall clock, an idle spell brought X to about 0 and a burst after it was shed down to the
floor, although Triton had room for all of it. A request with a long budget is admitted where
one with a short budget is not. ``floor`` calls are always allowed (enough in flight for Triton
to form batches, and to measure X at all).

Under overload, the requests beyond the limit leave that model out (their answer is degraded,
"at capacity") while the admitted ones get full answers in time. Without limits every call
queues, the p95 climbs past the budget, and the planner sheds the model for every request.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from itertools import takewhile

# Completions needed before the rate counts: a batch answers several calls at one instant, so a
# handful of them would measure an instant, not a rate.
MIN_SAMPLES = 8


@dataclass
class Capacity:
    floor: int
    size: int = 64  # completed calls the rate is measured over
    in_flight: int = 0
    busy_s: float = 0.0  # busy seconds up to the start of the current busy spell
    busy_since: float = 0.0  # when the current busy spell began (meaningful while in_flight > 0)
    # The busy clock (busy seconds so far) at each of the last ``size`` successful completions.
    completed: deque[float] = field(default_factory=deque)

    def busy_clock(self, now: float) -> float:
        return self.busy_s + (now - self.busy_since if self.in_flight else 0.0)

    def started(self) -> None:
        if self.in_flight == 0:
            self.busy_since = time.monotonic()
        self.in_flight += 1

    def finished(self, ok: bool) -> None:
        now = time.monotonic()
        if ok:
            self.completed.append(self.busy_clock(now))
            if len(self.completed) > self.size:
                self.completed.popleft()
        self.in_flight -= 1
        if self.in_flight == 0:
            self.busy_s += now - self.busy_since

    def rate(self) -> float:
        """Calls completed per busy second; 0 until ``MIN_SAMPLES`` have completed (the floor rules)."""
        if len(self.completed) < MIN_SAMPLES:
            return 0.0
        first = self.completed[0]
        span = self.completed[-1] - first
        # Those completed at the span's first instant (one batch) were served before it began.
        after = len(self.completed) - sum(1 for _ in takewhile(lambda t: t == first, self.completed))
        return after / span if span > 0 else 0.0

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
        self.capacity(model).started()

    def finished(self, model: str, ok: bool) -> None:
        self.capacity(model).finished(ok)
