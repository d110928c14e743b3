"""Locust users that speak gRPC through our SDK, with a weighted mix of what real callers send.

    locust -f loadtest/locustfile.py --headless -u 32 -r 8 -t 60s --host 127.0.0.1:50051
    ... --token-file svc.token --tls-ca ca.pem [--client-cert c.pem --client-key c-key.pem]   (a secured server)

Each SDK call is reported to locust's stats under its scenario name, with its time and, for an
SDK error, the failure. Degraded answers are not failures (the server answered in time, with
less); they are counted per scenario and written beside locust's CSVs as ``degraded.json``
(``--degraded-out``) for the summary. Item ids come from the server itself (one onboarding
call: 100 popular items over many genres); known user ids from ``--known-users``, drawn from a
Zipf law (``--zipf-s``; the rank order is a fixed shuffle of the ids), as real traffic has a few
very active users. One scenario asks for the same user twice in a row (a page reload), so the
response cache is exercised as in production; cache hits and misses and their latencies are
written beside the degraded counts (``cache`` in the same JSON).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# gRPC must cooperate with gevent (locust's concurrency) before any channel exists.
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task
from locust.env import Environment

from clients.errors import RecsysError
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from loadtest.credentials import add_options as add_credential_options
from loadtest.credentials import credentials_from

grpc_gevent.init_gevent()

TIGHT_BUDGET_MS = 15
catalog: list[int] = []  # item ids learnt from the server by the first user to start
answers: Counter[str] = Counter()
degraded: Counter[str] = Counter()
cache_ms: dict[str, list[float]] = {"hit": [], "miss": []}  # Recommend latencies by cache outcome
zipf: dict[str, Any] = {}  # the shuffled known ids and their cumulative Zipf weights, made once


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--degraded-out", default="", help="write per-scenario degraded counts here (JSON)")
    parser.add_argument("--known-users", default="1-900", help="known user ids, as FIRST-LAST")
    parser.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of known users' activity")
    add_credential_options(parser)


@events.quitting.add_listener
def _write_degraded(environment: Environment, **_: Any) -> None:
    out = environment.parsed_options.degraded_out if environment.parsed_options else ""
    if out:
        Path(out).write_text(
            json.dumps({"answers": dict(answers), "degraded": dict(degraded), "cache": cache_summary()})
        )


def _p50(values: list[float]) -> float | None:
    return round(sorted(values)[len(values) // 2], 3) if values else None


def cache_summary() -> dict[str, Any]:
    hits, misses = len(cache_ms["hit"]), len(cache_ms["miss"])
    return {
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        "p50_ms_hit": _p50(cache_ms["hit"]),
        "p50_ms_miss": _p50(cache_ms["miss"]),
    }


class RecommenderUser(User):
    """One caller with its own channel; tasks are the scenario mix (weights = relative frequency)."""

    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        if not self.host:
            raise ValueError("the load test's users need --host (the server's address)")
        self.client = RecommenderClient(
            self.host, timeout=5.0, retry=NO_RETRY, credentials=credentials_from(self.environment.parsed_options)
        )
        first, _, last = self.environment.parsed_options.known_users.partition("-")
        self.known = (int(first), int(last or first))
        if not catalog:
            catalog.extend(sorted({i.item_id for i in self.client.onboarding_items(k=100).items}))
        if not zipf:
            ids = list(range(self.known[0], self.known[1] + 1))
            random.Random(0).shuffle(ids)
            weights = [1 / rank**self.environment.parsed_options.zipf_s for rank in range(1, len(ids) + 1)]
            zipf.update(ids=ids, cum=list(itertools.accumulate(weights)))

    def on_stop(self) -> None:
        self.client.close()

    def _call(self, name: str, call: Callable[[], Any]) -> None:
        started = time.perf_counter()
        exception, result = None, None
        try:
            result = call()
        except RecsysError as err:
            exception = err
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=elapsed_ms,
            response_length=len(getattr(result, "items", []) or []),
            exception=exception,
            context={},
        )
        if result is not None:
            answers[name] += 1
            degraded[name] += int(getattr(result, "degraded", False))
            if name.startswith("Recommend/") and not result.degraded:
                cache_ms["hit" if result.cached else "miss"].append(elapsed_ms)

    def _known_user(self) -> str:
        return str(random.choices(zipf["ids"], cum_weights=zipf["cum"])[0])

    @task(5)
    def known_user(self) -> None:
        self._call("Recommend/known", lambda: self.client.recommend(self._known_user(), k=10))

    @task(2)
    def asks_twice(self) -> None:
        user = self._known_user()
        self._call("Recommend/known", lambda: self.client.recommend(user, k=10))
        self._call("Recommend/repeat", lambda: self.client.recommend(user, k=10))

    @task(2)
    def new_user_with_ratings(self) -> None:
        rated = random.sample(catalog, k=min(4, len(catalog)))
        ratings = {item: float(random.randint(3, 5)) for item in rated}
        self._call("Recommend/inline", lambda: self.client.recommend(k=10, ratings=ratings))

    @task(1)
    def no_history(self) -> None:
        self._call("Recommend/cold", lambda: self.client.recommend(f"visitor-{random.randint(0, 10**9)}", k=10))

    @task(1)
    def tight_budget(self) -> None:
        self._call(
            "Recommend/tight", lambda: self.client.recommend(self._known_user(), k=10, budget_ms=TIGHT_BUDGET_MS)
        )

    @task(1)
    def similar(self) -> None:
        self._call("SimilarItems", lambda: self.client.similar_items(random.choice(catalog), k=10))

    @task(1)
    def feedback(self) -> None:
        user = f"load-{random.randint(0, 999)}"
        self._call(
            "RecordFeedback",
            lambda: self.client.record_feedback(user, ratings={random.choice(catalog): float(random.randint(1, 5))}),
        )
