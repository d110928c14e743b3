"""Per-model latency estimates: the p95 of a sliding window of recent calls, a prior until observed."""

from __future__ import annotations

from collections import deque

import numpy as np


class LatencyWindow:
    def __init__(self, size: int, prior_ms: float) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.prior_ms = prior_ms
        self.calls = 0

    def observe(self, ms: float) -> None:
        self.samples.append(ms)
        self.calls += 1

    def p95(self) -> float:
        # Fewer than 5 samples say little about a tail: the prior (or the worst seen) stands in.
        if len(self.samples) < 5:
            return max([self.prior_ms, *self.samples])
        return float(np.percentile(np.fromiter(self.samples, dtype=np.float64), 95))


class LatencyBook:
    """Windows keyed by Triton model name."""

    def __init__(self, size: int = 256, prior_ms: float = 10.0) -> None:
        self.size, self.prior_ms = size, prior_ms
        self.windows: dict[str, LatencyWindow] = {}

    def window(self, model: str) -> LatencyWindow:
        if model not in self.windows:
            self.windows[model] = LatencyWindow(self.size, self.prior_ms)
        return self.windows[model]

    def observe(self, model: str, ms: float) -> None:
        self.window(model).observe(ms)

    def p95(self, model: str) -> float:
        return self.window(model).p95()
