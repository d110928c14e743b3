"""Per-principal token buckets: ``rps`` tokens a second, up to ``burst`` saved; a call takes one."""

from __future__ import annotations

import time
from collections import OrderedDict


class RateLimiter:
    MAX_PRINCIPALS = 100_000  # least recently seen buckets go first: memory stays bounded

    def __init__(self, rps: float, burst: int) -> None:
        self.rps, self.burst = rps, burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # name -> (tokens, at)

    def take(self, name: str, now: float | None = None) -> float:
        """0 when the call may go ahead (a token is spent), else the seconds until one is there."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(name, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rps)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rps
        self._buckets[name] = (tokens, now)
        if len(self._buckets) > self.MAX_PRINCIPALS:
            self._buckets.popitem(last=False)
        return wait
