"""Prometheus metrics on their own port; one registry per server so tests can run several in a process.

Names (all prefixed ``recsys_``):
- ``requests_total{rpc, strategy, outcome}``: outcome is ``ok``, ``degraded``, ``cancelled``,
  ``deadline_exceeded`` (gRPC cancelled the call) or a gRPC status name
- ``request_latency_seconds{rpc, strategy, outcome}``: histogram, server-side time per RPC
- ``degraded_total{rpc, reason}``: reason is ``model_missing`` (dropped for the budget, not ready, failed)
- ``fallback_total{rung}``: answers per cold-start rung (popularity, content, full, single)
- ``plan_total{plan}``: the latency plan chosen per Recommend
- ``model_latency_seconds{model}`` and ``model_errors_total{model}``: each Triton call
- ``refused_total{rpc, code}``: refused before the handler (UNAUTHENTICATED, PERMISSION_DENIED,
  RESOURCE_EXHAUSTED, INVALID_ARGUMENT for malformed bytes)
- ``inflight_requests``, ``triton_ready`` (1/0), ``models_ready``, ``model_ready{model}`` (1/0),
  ``feedback_events_total{kind}``
- ``feedback_duplicates_total``: retried events the store already had (ignored)
- ``cache_requests_total{result}``: Recommend answers from the cache (``hit``), computed (``miss``)
- ``drift_psi{feature}``: population-stability index of live traffic against the bundle's reference
- ``build_info{version, git_sha, python}``: always 1; the labels say what build is running

Beside them, the client library's default collectors (a private registry has none unless added):
``process_*`` (CPU, resident memory, open file descriptors, start time), ``python_info`` and
``python_gc_*``.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from server.buildinfo import build_info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("recsys_build", "The running build", registry=r).info(build_info())
        self.requests = Counter("recsys_requests", "RPCs answered", ["rpc", "strategy", "outcome"], registry=r)
        self.latency = Histogram(
            "recsys_request_latency_seconds",
            "Server-side time per RPC",
            ["rpc", "strategy", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.degraded = Counter("recsys_degraded", "Degraded answers", ["rpc", "reason"], registry=r)
        self.fallback = Counter("recsys_fallback", "Recommend answers per cold-start rung", ["rung"], registry=r)
        self.plans = Counter("recsys_plan", "Latency plans chosen", ["plan"], registry=r)
        self.model_latency = Histogram(
            "recsys_model_latency_seconds",
            "Triton call latency seen by the server",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            "recsys_model_errors", "Triton calls that failed or timed out", ["model"], registry=r
        )
        self.inflight = Gauge("recsys_inflight_requests", "RPCs being served", registry=r)
        self.triton_ready = Gauge("recsys_triton_ready", "1 when Triton is live", registry=r)
        self.models_ready = Gauge("recsys_models_ready", "Models the server uses that are ready", registry=r)
        self.model_ready = Gauge("recsys_model_ready", "1 when this Triton model is ready", ["model"], registry=r)
        self.refused = Counter(
            "recsys_refused",
            "Calls refused before the handler (auth, rate limit, malformed, busy)",
            ["rpc", "code"],
            registry=r,
        )
        self.feedback = Counter("recsys_feedback_events", "Feedback events stored", ["kind"], registry=r)
        self.feedback_duplicates = Counter(
            "recsys_feedback_duplicates", "Feedback events already stored (retries)", registry=r
        )
        self.cache = Counter("recsys_cache_requests", "Recommend cache lookups", ["result"], registry=r)
        for result in ("hit", "miss", "uncacheable"):  # exported at 0 from the start, so rates exist
            self.cache.labels(result)
        self.drift_psi = Gauge(
            "recsys_drift_psi", "Population-stability index, live vs reference", ["feature"], registry=r
        )

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (0 picks a free one)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http: WSGIServer | None = server
        return int(server.server_port)

    def stop(self) -> None:
        http = getattr(self, "_http", None)
        if http is not None:
            http.shutdown()
            http.server_close()
            self._http = None
