"""The feedback loop's moving parts for ``make bench-feedback-loop`` (loadtest.benches.feedback_loop):
replicas over one Valkey (and one rollout pointer), the u1.test replay with retries, the cache
probe, PSI scrapes and the live rollout of the retrained bundle."""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from clients.admin import RolloutAdminClient, ship
from clients.errors import RecsysError
from clients.feedback import Feedback
from clients.sync import RecommenderClient
from loadtest.server_process import start_server, stop_server
from server.triton.launcher import free_port


@dataclass
class Replica:
    process: object
    target: str
    metrics_port: int
    admin_port: int

    def metric(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return {
            tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == name
        }

    def requests(self, rpc: str) -> float:
        return sum(v for k, v in self.metric("recsys_requests_total").items() if ("rpc", rpc) in k)

    def psi(self) -> dict[str, float]:
        return {dict(k)["feature"]: v for k, v in self.metric("recsys_drift_psi").items() if not np.isnan(v)}


def start_replicas(
    triton_url: str, state: Path, store: str, bundle: Path, repository: Path, count: int = 2
) -> list[Replica]:
    replicas = []
    for n in range(count):
        port, admin_port = free_port(), free_port()
        folder = state / f"replica{n}"
        folder.mkdir(parents=True, exist_ok=True)
        # One rollout pointer for all: a rollout started on one replica is followed by the others.
        process, target = start_server(
            triton_url,
            folder,
            "--store",
            store,
            "--bundle",
            str(bundle),
            "--model-repository",
            str(repository),
            "--metrics-port",
            str(port),
            "--cache-ttl-s",
            "60",
            "--admin-port",
            str(admin_port),
            "--rollout-state-dir",
            str(state / "rollout"),
        )
        replicas.append(Replica(process, target, port, admin_port))
    return replicas


def stop_replicas(replicas: list[Replica]) -> None:
    for replica in replicas:
        stop_server(replica.process)  # type: ignore[arg-type]


@dataclass
class Replay:
    events_sent: int = 0  # unique events
    retried_events: int = 0  # events sent again by a simulated retry (same ids)
    new_events: int = 0  # what the servers reported stored
    duplicates_ignored: int = 0
    held_back: pd.DataFrame = field(default_factory=pd.DataFrame)


def replay(
    client: RecommenderClient,
    ratings: pd.DataFrame,
    prefix: str,
    retry_share: float = 0.1,
    batch: int = 10,
    seed: int = 0,
) -> Replay:
    """Send ``ratings`` (raw ids) as feedback, each user's last rating held back; a ``retry_share`` of
    the calls is sent twice with the same event ids, as the SDK does when a response is lost."""
    rng = random.Random(seed)
    ordered = ratings.sort_values(["user", "timestamp"], kind="stable")
    last = ordered.groupby("user").tail(1)
    result = Replay(held_back=last)
    sent = ordered.drop(last.index)
    for user, rows in sent.groupby("user"):
        for start in range(0, len(rows), batch):
            chunk = rows.iloc[start : start + batch]
            events = [
                Feedback(int(r.item), float(r.rating), int(r.timestamp) * 1000, f"{prefix}-{r.user}-{r.item}")
                for r in chunk.itertuples()
            ]
            attempts = 2 if rng.random() < retry_share else 1
            for _ in range(attempts):
                receipt = client.record_feedback(str(user), events=events)
                result.new_events += receipt.new_events
                result.duplicates_ignored += receipt.duplicates
            result.events_sent += len(events)
            result.retried_events += len(events) * (attempts - 1)
    return result


def cache_probe(
    client: RecommenderClient,
    users: list[int],
    calls: int,
    zipf_s: float = 1.1,
    twice_share: float = 0.2,
    seed: int = 0,
) -> dict[str, float]:
    """Recommend for Zipf-distributed users (a share asking twice in a row): hit rate and p50s."""
    rng = random.Random(seed)
    order = list(users)
    rng.shuffle(order)
    weights = [1 / rank**zipf_s for rank in range(1, len(order) + 1)]
    timings: dict[bool, list[float]] = {True: [], False: []}
    made = 0
    while made < calls:
        user = str(rng.choices(order, weights=weights)[0])
        for _ in range(2 if rng.random() < twice_share else 1):
            started = time.perf_counter()
            answer = client.recommend(user, k=10)
            if not answer.degraded:
                timings[answer.cached].append((time.perf_counter() - started) * 1000)
            made += 1
    hits, misses = timings[True], timings[False]
    return {
        "hit_rate": round(len(hits) / max(len(hits) + len(misses), 1), 4),
        "p50_ms_hit": round(float(np.median(hits)), 3) if hits else float("nan"),
        "p50_ms_miss": round(float(np.median(misses)), 3) if misses else float("nan"),
        "calls": made,
    }


def roll_out(replicas: list[Replica], bundle: Path, users: list[str], stage_s: float) -> dict[str, Any]:
    """Ship ``bundle`` live through the first replica's admin service (what ``python -m clients rollout
    ship`` does: shadow, canary 10%, full, retire, each held ``stage_s`` while the guardrails watch),
    with Recommend traffic over every replica meanwhile; then wait until every replica answers with
    the promoted bundle. Returns the outcome, the bundle each replica answers with, and the traffic."""
    answered: dict[str, int] = {}
    failures, stop = [0], threading.Event()

    def traffic() -> None:
        rng = random.Random(1)
        with RecommenderClient([r.target for r in replicas], timeout=10) as client:
            while not stop.is_set():
                try:
                    version = client.recommend(rng.choice(users), k=10).bundle_version
                    answered[version] = answered.get(version, 0) + 1
                except RecsysError:
                    failures[0] += 1

    log: list[str] = []
    driver = threading.Thread(target=traffic, daemon=True)
    started = time.monotonic()
    driver.start()
    try:
        with RolloutAdminClient(f"127.0.0.1:{replicas[0].admin_port}", timeout=600) as admin:
            try:
                state = ship(
                    admin,
                    str(bundle.resolve()),
                    shadow_s=stage_s,
                    canary_s=stage_s,
                    canary_percent=10,
                    print_=log.append,
                )
            except RecsysError as err:  # refused, or rolled back by a guardrail: reported, not hidden
                log.append(f"stopped: {err.message}")
                state = admin.get()
        versions = _converged(replicas, state.promoted_bundle, timeout_s=120)
    finally:
        stop.set()
        driver.join(30)
    return {
        "method": "admin rollout (clients.admin.ship) on replica 0, followed by the others",
        "outcome": state.outcome,
        "promoted_bundle": state.promoted_bundle,
        "replica_bundles": versions,
        "stage_s": stage_s,
        "seconds": round(time.monotonic() - started, 1),
        "answers_by_bundle": answered,
        "failed_calls": failures[0],
        "log": log,
    }


def _converged(replicas: list[Replica], version: str, timeout_s: float) -> list[str]:
    """The bundle each replica answers with, once all answer with ``version`` (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = []
        for replica in replicas:
            with RecommenderClient(replica.target, timeout=10) as client:
                seen.append(client.list_models().bundle_version)
        if set(seen) == {version} or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)
