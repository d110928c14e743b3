"""Guardrails: the candidate against the live bundle, on the answers this replica sees in shadow and canary.

Both sides are measured on the same kind of traffic (served answers plus the shadow comparisons
the rollout runs), over a window that restarts at every stage change. No verdict is given before
``min_samples`` candidate answers, so one slow warm-up call cannot roll a good bundle back.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from server.settings import Settings

WINDOW = 2000


@dataclass
class Side:
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    errors: int = 0
    degraded: int = 0
    answers: int = 0

    def record(self, ms: float | None, error: bool, degraded: bool) -> None:
        """One answer (or failure); ``ms`` only from side-by-side pairs, the one fair latency comparison."""
        self.answers += 1
        self.errors += int(error)
        self.degraded += int(degraded and not error)
        if ms is not None and not error:
            self.latencies_ms.append(ms)

    @property
    def error_rate(self) -> float:
        return self.errors / self.answers if self.answers else 0.0

    @property
    def degraded_share(self) -> float:
        return self.degraded / self.answers if self.answers else 0.0

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(list(self.latencies_ms), 99)) if self.latencies_ms else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "answers": self.answers,
            "error_rate": round(self.error_rate, 4),
            "p99_ms": round(self.p99_ms, 2),
            "degraded_share": round(self.degraded_share, 4),
        }


class Guardrails:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        self.live, self.candidate = Side(), Side()
        self.overlaps: deque[float] = deque(maxlen=WINDOW)

    def record(self, candidate: bool, ms: float | None, error: bool, degraded: bool) -> None:
        (self.candidate if candidate else self.live).record(ms, error, degraded)

    def record_overlap(self, overlap: float) -> None:
        self.overlaps.append(overlap)

    @property
    def overlap(self) -> float:
        return float(np.mean(self.overlaps)) if self.overlaps else 1.0

    def breach(self) -> tuple[str, str]:
        """(trigger, why) when the candidate must go back; ("", "") while it holds or samples are too few."""
        s, live, cand = self.settings, self.live, self.candidate
        if cand.answers < s.rollout_min_samples or live.answers < s.rollout_min_samples:
            return "", ""
        if cand.error_rate > live.error_rate + s.rollout_max_error_rate_increase:
            return "error_rate", f"error rate {cand.error_rate:.1%} vs live {live.error_rate:.1%}"
        paired = min(len(cand.latencies_ms), len(live.latencies_ms)) >= s.rollout_min_samples
        if paired and cand.p99_ms > live.p99_ms * s.rollout_max_p99_ratio + s.rollout_p99_slack_ms:
            return "p99", f"p99 {cand.p99_ms:.1f} ms vs live {live.p99_ms:.1f} ms"
        if cand.degraded_share > live.degraded_share + s.rollout_max_degraded_increase:
            return "degraded_share", f"degraded share {cand.degraded_share:.1%} vs live {live.degraded_share:.1%}"
        if len(self.overlaps) >= s.rollout_min_samples and self.overlap < s.rollout_min_overlap:
            return "overlap", f"top-10 overlap with live {self.overlap:.2f} < {s.rollout_min_overlap:.2f}"
        return "", ""

    def summary(self) -> dict[str, dict[str, float]]:
        candidate = {**self.candidate.summary(), "overlap": round(self.overlap, 3), "compared": len(self.overlaps)}
        return {"live": self.live.summary(), "candidate": candidate}
