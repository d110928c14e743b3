"""Per-model latency estimates: the p95 of a sliding window of recent calls, a prior until observed.

Samples older than ``max_age_s`` no longer count. Without that, a model once seen slow would
never be called again (the planner leaves it out), so its estimate could never recover; with
it, the estimate falls back to the prior and the next call measures the model afresh.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class LatencyWindow:
    def __init__(self, size: int, prior_ms: float, max_age_s: float) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=size)  # (monotonic time, ms)
        self.prior_ms, self.max_age_s = prior_ms, max_age_s
        self.calls = 0

    def observe(self, ms: float) -> None:
        self.samples.append((time.monotonic(), ms))
        self.calls += 1

    def p95(self) -> float:
        horizon = time.monotonic() - self.max_age_s
        while self.samples and self.samples[0][0] < horizon:
            self.samples.popleft()
        recent = [ms for _, ms in self.samples]
        # Fewer than 5 samples say little about a tail: the prior (or the worst seen) stands in.
        if len(recent) < 5:
            return max([self.prior_ms, *recent])
        return float(np.percentile(recent, 95))


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
