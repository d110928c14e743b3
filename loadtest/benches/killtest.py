"""Triton SIGKILLed under load: what callers and probes saw until answers were whole again.

The embedded Triton must be supervised (``EmbeddedTriton(supervise=True)``): nothing here restarts it.
The timeline says where the recovery time went: the supervisor bringing Triton back
(``restarted_after_s``), the server reloading its models (``models_ready_after_s``: the Triton
health service SERVING again), the first undegraded answer, and the last degraded one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any

from clients.errors import RecsysError
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from server.app import TRITON_HEALTH
from server.triton import EmbeddedTriton


def _since(moment: float | None, start: float) -> float | None:
    return None if moment is None else round(moment - start, 2)


def kill_under_load(
    target: str,
    triton: EmbeddedTriton,
    user: str,
    *,
    workers: int = 4,
    pause_s: float = 0.02,
    warm_s: float = 2.0,
    recover_within_s: float = 60.0,
    after_s: float = 2.0,
) -> dict[str, Any]:
    """Load from ``workers`` threads (each pausing ``pause_s`` between calls, so a restarted Triton
    gets CPU to reload its models on a small machine); SIGKILL Triton's process group; run until
    answers are undegraded again (plus ``after_s``). Counts requests, failures, degraded answers and
    readiness probes, and times each step of the recovery."""
    stop = threading.Event()
    lock = threading.Lock()
    # whole_before_kill: undegraded answers before the kill (none: the test would measure nothing).
    stats = {"requests": 0, "failed": 0, "degraded": 0, "probes": 0, "probes_not_serving": 0, "whole_before_kill": 0}
    errors: list[str] = []
    reasons: Counter[str] = Counter()  # why answers after the kill were degraded
    killed: list[float] = []  # set once the kill is sent
    last_degraded = [0.0]
    first_whole: list[float] = []
    triton_serving: list[float] = []

    def load() -> None:
        with RecommenderClient(target, retry=NO_RETRY, timeout=5) as client:
            while not stop.is_set():
                try:
                    result = client.recommend(user, k=10, budget_ms=1000)
                    now = time.monotonic()
                    with lock:
                        stats["requests"] += 1
                        if not killed:
                            stats["whole_before_kill"] += not result.degraded
                        if result.degraded:
                            stats["degraded"] += 1
                            last_degraded[0] = now
                            if killed:
                                reasons.update(r.split(":")[0][:60] for r in result.degraded_reasons)
                        elif killed and not first_whole and last_degraded[0] > killed[0]:
                            first_whole.append(now)  # whole again after answers without Triton
                except RecsysError as err:
                    with lock:
                        stats["requests"] += 1
                        stats["failed"] += 1
                        errors.append(str(err)[:200])
                time.sleep(pause_s)

    def probe() -> None:
        with RecommenderClient(target, retry=NO_RETRY, timeout=1) as client:
            triton_down = False
            while not stop.is_set():
                status = client.health()
                triton = client.health(TRITON_HEALTH)
                with lock:
                    stats["probes"] += 1
                    stats["probes_not_serving"] += status != "SERVING"
                    if killed and triton != "SERVING":
                        triton_down = True
                    elif killed and triton_down and not triton_serving:
                        triton_serving.append(time.monotonic())
                time.sleep(0.05)

    threads = [threading.Thread(target=load) for _ in range(workers)] + [threading.Thread(target=probe)]
    for thread in threads:
        thread.start()
    restarted_at: float | None = None
    try:
        time.sleep(warm_s)
        assert triton.process is not None, "Triton is not running"
        restarts = triton.restarts
        os.killpg(triton.process.pid, signal.SIGKILL)
        with lock:
            killed.append(time.monotonic())
        while time.monotonic() - killed[0] < recover_within_s:
            time.sleep(0.1)
            if triton.restarts > restarts and restarted_at is None:
                restarted_at = time.monotonic()
            if triton.restarts > restarts and time.monotonic() - max(last_degraded[0], killed[0]) > after_s:
                break
        restarted = triton.restarts > restarts
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    start = killed[0] if killed else time.monotonic()
    return {
        **stats,
        "triton_restarted": restarted,
        "restarted_after_s": _since(restarted_at, start),
        "models_ready_after_s": _since(triton_serving[0] if triton_serving else None, start),
        "first_undegraded_after_s": _since(first_whole[0] if first_whole else None, start),
        "undegraded_after_s": round(max(last_degraded[0], start) - start, 2),
        "degraded_reasons": dict(reasons.most_common(6)),
        "errors": errors[:5],
        "workers": workers,
    }
