"""Triton's own counters, read from its Prometheus endpoint: how many requests each execution served.

``nv_inference_request_success`` counts requests, ``nv_inference_exec_count`` model executions
(batches); their ratio over an interval is the average batch that formed. Queue and compute
microseconds say how much of a request's time was waiting for a turn.
"""

from __future__ import annotations

import re
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)
_LINE = re.compile(r"^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$")
_MODEL = re.compile(r'model="([^"]+)"')


@dataclass(frozen=True)
class ModelCounters:
    requests: float
    executions: float
    queue_us: float
    compute_us: float


def scrape(metrics_url: str, timeout_s: float = 5.0) -> dict[str, ModelCounters]:
    """Every model's counters (summed over versions) from Triton's metrics text."""
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as reply:
        text = reply.read().decode()
    values: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0.0))
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group(1) in COUNTERS and (model := _MODEL.search(match.group(2))):
            values[model.group(1)][match.group(1)] += float(match.group(3))
    return {m: ModelCounters(*(v[c] for c in COUNTERS)) for m, v in values.items()}


def batching_between(before: dict[str, ModelCounters], after: dict[str, ModelCounters]) -> dict[str, dict[str, float]]:
    """Per model called in between: requests, executions, average batch, queue and compute ms per request."""
    out = {}
    for model, end in after.items():
        start = before.get(model, ModelCounters(0, 0, 0, 0))
        requests, executions = end.requests - start.requests, end.executions - start.executions
        if requests <= 0 or executions <= 0:
            continue
        out[model] = {
            "requests": int(requests),
            "executions": int(executions),
            "avg_batch": round(requests / executions, 2),
            "queue_ms": round((end.queue_us - start.queue_us) / requests / 1000, 3),
            "compute_ms": round((end.compute_us - start.compute_us) / requests / 1000, 3),
        }
    return out
