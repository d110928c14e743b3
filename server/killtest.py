"""Triton SIGKILLed under load: what callers and probes saw until answers were whole again.

The embedded Triton must be supervised (``EmbeddedTriton(supervise=True)``): nothing here restarts it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from clients.errors import RecsysError
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from export.triton import EmbeddedTriton


def kill_under_load(target: str, triton: EmbeddedTriton, user: str, *, workers: int = 4, pause_s: float = 0.02,
                    warm_s: float = 2.0, recover_within_s: float = 60.0, after_s: float = 2.0) -> dict[str, Any]:
    """Load from ``workers`` threads (each pausing ``pause_s`` between calls, so a restarted Triton
    gets CPU to reload its models on a small machine); SIGKILL Triton's process group; run until
    answers are undegraded again (plus ``after_s``). Counts requests, failures, degraded answers and
    readiness probes."""
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"requests": 0, "failed": 0, "degraded": 0, "probes": 0, "probes_not_serving": 0}
    errors: list[str] = []
    last_degraded = [0.0]

    def load() -> None:
        with RecommenderClient(target, retry=NO_RETRY, timeout=5) as client:
            while not stop.is_set():
                try:
                    result = client.recommend(user, k=10, budget_ms=1000)
                    with lock:
                        stats["requests"] += 1
                        if result.degraded:
                            stats["degraded"] += 1
                            last_degraded[0] = time.monotonic()
                except RecsysError as err:
                    with lock:
                        stats["requests"] += 1
                        stats["failed"] += 1
                        errors.append(str(err)[:200])
                time.sleep(pause_s)

    def probe() -> None:
        with RecommenderClient(target, retry=NO_RETRY, timeout=1) as client:
            while not stop.is_set():
                status = client.health()
                with lock:
                    stats["probes"] += 1
                    stats["probes_not_serving"] += status != "SERVING"
                time.sleep(0.05)

    threads = [threading.Thread(target=load) for _ in range(workers)] + [threading.Thread(target=probe)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(warm_s)
        assert triton.process is not None, "Triton is not running"
        restarts = triton.restarts
        killed = time.monotonic()
        os.killpg(triton.process.pid, signal.SIGKILL)
        restarted_s: float | None = None
        while time.monotonic() - killed < recover_within_s:
            time.sleep(0.1)
            if triton.restarts > restarts and restarted_s is None:
                restarted_s = time.monotonic() - killed
            if triton.restarts > restarts and time.monotonic() - max(last_degraded[0], killed) > after_s:
                break
        recovered_s = max(last_degraded[0], killed) - killed
        restarted = triton.restarts > restarts
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    return {**stats, "triton_restarted": restarted,
            "restarted_after_s": None if restarted_s is None else round(restarted_s, 2),
            "undegraded_after_s": round(recovered_s, 2),
            "errors": errors[:5], "workers": workers}
