"""Per-model latency estimates: the p95 of a sliding window of recent calls, a prior until observed.

Samples older than ``max_age_s`` no longer count. Without that, a model once seen slow would
never be called again (the planner leaves it out), so its estimate could never recover; with
it, the estimate falls back to the prior and the next call measures the model afresh.
"""

from __future__ import annotations

import math
import time
from collections import deque


class LatencyWindow:
    def __init__(self, size: int, prior_ms: float, max_age_s: float) -> None:
        # Times and latencies side by side (same length): the p95 sorts the latencies as they are,
        # where extracting them from (time, ms) pairs cost more than the sort, on every new sample.
        self.times: deque[float] = deque(maxlen=size)  # monotonic
        self.ms: deque[float] = deque(maxlen=size)
        self.prior_ms, self.max_age_s = prior_ms, max_age_s
        self.calls = 0
        self._cached: tuple[int, float, float] | None = None  # (calls, when, p95)

    def observe(self, ms: float) -> None:
        self.times.append(time.monotonic())
        self.ms.append(ms)
        self.calls += 1

    def p95(self) -> float:
        # Planning reads every model's estimate several times per request; recompute only after
        # new samples, or once a second so that old samples still age out.
        now = time.monotonic()
        if self._cached is not None and self._cached[0] == self.calls and now - self._cached[1] < 1.0:
            return self._cached[2]
        value = self._compute(now)
        self._cached = (self.calls, now, value)
        return value

    def _compute(self, now: float) -> float:
        horizon = now - self.max_age_s
        while self.times and self.times[0] < horizon:
            self.times.popleft()
            self.ms.popleft()
        recent = self.ms
        # Fewer than 5 samples say little about a tail: the prior (or the worst seen) stands in.
        if len(recent) < 5:
            return max([self.prior_ms, *recent])
        return sorted(recent)[math.ceil(0.95 * len(recent)) - 1]  # nearest rank: cheap, and a real sample


class LatencyBook:
    """Windows keyed by Triton model name."""

    def __init__(self, size: int = 256, prior_ms: float = 10.0, max_age_s: float = 60.0) -> None:
        self.size, self.prior_ms, self.max_age_s = size, prior_ms, max_age_s
        self.windows: dict[str, LatencyWindow] = {}

    def window(self, model: str) -> LatencyWindow:
        if model not in self.windows:
            self.windows[model] = LatencyWindow(self.size, self.prior_ms, self.max_age_s)
        return self.windows[model]

    def observe(self, model: str, ms: float) -> None:
        self.window(model).observe(ms)

    def p95(self, model: str) -> float:
        return self.window(model).p95()

    def clear(self) -> None:
        """Forget every observation (back to the prior until calls are seen)."""
        self.windows.clear()
