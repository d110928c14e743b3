"""Locust users for the rollout bench: Recommend calls, each written down as one JSON line.

    locust -f loadtest/benches/rollout_locust.py --headless -u 32 --host 127.0.0.1:50051 --rows-out rows.jsonl

A row holds when the call started (unix seconds), its time, whether it failed, the bundle that
answered and every model call's (model, version), so the bench can split the run into rollout
phases and check that no answer mixed bundles. The mix is ``loadtest/locustfile.py``'s Recommend
part (known users, new users with inline ratings, visitors without history).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any, TextIO

import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task

from clients.errors import RecsysError
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient

grpc_gevent.init_gevent()

catalog: list[int] = []
rows: list[TextIO] = []


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--rows-out", default="rows.jsonl", help="one JSON line per call")
    parser.add_argument("--known-users", default="1-900", help="known user ids, as FIRST-LAST")
    parser.add_argument("--wait-ms", default="100-300", help="pause between a user's calls, MIN-MAX ms")


class RolloutUser(User):
    wait_time = between(0.1, 0.3)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        low, _, high = options.wait_ms.partition("-")
        self.wait_time = lambda: random.uniform(float(low), float(high or low)) / 1000  # type: ignore[method-assign]
        if not self.host:
            raise ValueError("the rollout bench's users need --host (the server's address)")
        self.client = RecommenderClient(self.host, timeout=5.0, retry=NO_RETRY)
        first, _, last = options.known_users.partition("-")
        self.known = (int(first), int(last or first))
        if not rows:
            rows.append(open(options.rows_out, "a", buffering=1))  # noqa: SIM115 - one per process, closed at exit
        if not catalog:
            catalog.extend(sorted({i.item_id for i in self.client.onboarding_items(k=100).items}))

    def on_stop(self) -> None:
        self.client.close()

    def _call(self, name: str, call: Callable[[], Any]) -> None:
        started, wall = time.perf_counter(), time.time()
        row: dict[str, Any] = {"t": wall, "name": name}
        try:
            result = call()
            row.update(
                ok=True,
                bundle=result.bundle_version,
                degraded=result.degraded,
                calls=[[c.model, c.version] for c in result.model_calls if c.ok],
            )
            exception = None
        except RecsysError as err:
            row.update(ok=False, error=str(err))
            exception = err
        row["ms"] = (time.perf_counter() - started) * 1000
        rows[0].write(json.dumps(row) + "\n")
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=row["ms"], response_length=0, exception=exception, context={}
        )

    @task(5)
    def known_user(self) -> None:
        self._call("Recommend/known", lambda: self.client.recommend(str(random.randint(*self.known)), k=10))

    @task(2)
    def new_user_with_ratings(self) -> None:
        ratings = {item: float(random.randint(3, 5)) for item in random.sample(catalog, k=min(4, len(catalog)))}
        self._call("Recommend/inline", lambda: self.client.recommend(k=10, ratings=ratings))

    @task(1)
    def no_history(self) -> None:
        self._call("Recommend/cold", lambda: self.client.recommend(f"visitor-{random.randint(0, 10**9)}", k=10))
