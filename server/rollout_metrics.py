"""Rollout metrics, on the server's registry (names prefixed ``recsys_``):

- ``bundle_answers_total{bundle, outcome}`` and ``bundle_request_latency_seconds{bundle}``: each
  Recommend by the bundle that answered it (two are live during a rollout)
- ``rollout_stage{stage, live, candidate}``: 1 for the current stage
- ``rollout_rollbacks_total{trigger}``: operator, replica_failed, or the guardrail that fired
  (error_rate, p99, degraded_share, overlap)
- ``rollout_top10_overlap``: mean top-10 overlap of candidate and live in the current stage
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.metrics import LATENCY_BUCKETS


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.answers = Counter(
            "recsys_bundle_answers", "Recommend answers per bundle", ["bundle", "outcome"], registry=r
        )
        self.latency = Histogram(
            "recsys_bundle_request_latency_seconds",
            "Recommend time per answering bundle",
            ["bundle"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Gauge(
            "recsys_rollout_stage", "1 for the rollout stage in force", ["stage", "live", "candidate"], registry=r
        )
        self.rollbacks = Counter(
            "recsys_rollout_rollbacks", "Rollouts rolled back, by trigger", ["trigger"], registry=r
        )
        self.overlap = Gauge("recsys_rollout_top10_overlap", "Candidate vs live top-10 overlap", registry=r)

    def set_stage(self, stage: str, live: str, candidate: str) -> None:
        self.stage.clear()
        self.stage.labels(stage, live, candidate).set(1)
