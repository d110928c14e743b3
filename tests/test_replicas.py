"""Replicas that agree: two servers, one Triton, one Valkey; and no acknowledged feedback lost
when a replica is killed (SIGKILL) mid-stream, on either store backend."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from clients.errors import InvalidArgument, RecsysError
from clients.feedback import Feedback
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from loadtest.server_process import start_server
from server.bundle import Bundle, load_bundle
from server.store import open_store, sqlite_url
from server.store.valkey_server import ValkeyServer
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    with ValkeyServer(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture(scope="module")
def bundle(serving_artifacts: Artifacts) -> Bundle:
    return load_bundle(serving_artifacts.bundle)


def _served(server: ServerThread, rpc: str) -> float:
    assert server.server is not None
    registry = server.server.metrics.registry
    return sum(
        s.value
        for m in registry.collect()
        if m.name == "recsys_requests"
        for s in m.samples
        if s.name == "recsys_requests_total" and s.labels["rpc"] == rpc
    )


def test_two_replicas_share_feedback_and_the_cache(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, valkey: ValkeyServer, bundle: Bundle, tmp_path: Path
) -> None:
    redis.Redis.from_url(valkey.url).flushdb()
    ids = [int(i) for i in bundle.item_ids[np.argsort(-bundle.popularity, kind="stable")[:12]]]

    def make(name):
        return settings_for(
            serving_artifacts, serving_triton.grpc_url, tmp_path / name, store=valkey.url, cache_ttl_s=30
        )

    with (
        ServerThread(make("a")) as a,
        ServerThread(make("b")) as b,
        RecommenderClient(a.target, retry=NO_RETRY) as on_a,
        RecommenderClient(b.target, retry=NO_RETRY) as on_b,
    ):
        before = on_b.recommend("shared-user", k=5)
        events = [
            Feedback(ids[0], 5.0, event_id="e0"),
            Feedback(ids[1], 4.0, event_id="e1"),
            Feedback(ids[2], event_id="e2"),
        ]
        receipt = on_a.record_feedback("shared-user", events=events)
        assert (receipt.accepted, receipt.new_events, receipt.duplicates) == (3, 3, 0)
        retried = on_b.record_feedback("shared-user", events=events)  # a retry landing on the other replica
        assert (retried.new_events, retried.duplicates, retried.profile_size) == (0, 3, 3)
        with pytest.raises(InvalidArgument, match="event_id"):
            on_a.record_feedback("shared-user", events=[Feedback(ids[0], 5.0, event_id="x" * 200)])
        after = on_b.recommend("shared-user", k=5)  # B never saw the RPC: it reads the shared store
        assert (before.rung, after.rung, after.history_size, after.profile_version) == ("popularity", "content", 3, 3)
        assert not set(ids[:3]) & {i.item_id for i in after.items}

        # The cache is shared too: A answers B's computed request, until feedback changes the key.
        hit = on_a.recommend("shared-user", k=5)
        assert hit.cached and not after.cached and [i.item_id for i in hit.items] == [i.item_id for i in after.items]
        on_b.record_feedback("shared-user", ratings={i: 4 for i in ids[3:12]})
        fresh = on_a.recommend("shared-user", k=5)
        assert not fresh.cached and fresh.rung == "full" and fresh.profile_version == 12
        # A degraded answer (a budget too small for any model) is never cached.
        first, second = (on_b.recommend("shared-user", k=5, budget_ms=2) for _ in range(2))
        assert first.degraded and second.degraded and not second.cached

        # One SDK client over both replicas: round-robin spreads the calls.
        served = (_served(a, "SimilarItems"), _served(b, "SimilarItems"))
        with RecommenderClient([a.target, b.target], retry=NO_RETRY) as both:
            both.health()
            for _ in range(20):
                both.similar_items(ids[0], k=3)
        spread = (_served(a, "SimilarItems") - served[0], _served(b, "SimilarItems") - served[1])
        assert sum(spread) == 20 and min(spread) >= 5, spread


@pytest.mark.parametrize("backend", ["sqlite", "valkey"])
def test_replica_killed_mid_stream_loses_no_acknowledged_event(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, bundle: Bundle, tmp_path: Path, backend: str
) -> None:
    if backend == "valkey":
        server = ValkeyServer(tmp_path / "valkey").start()
        url = server.url
    else:
        server, url = None, sqlite_url(tmp_path / "fb.sqlite")
    try:
        process, target = start_server(
            serving_triton.grpc_url,
            tmp_path,
            "--store",
            url,
            "--bundle",
            str(serving_artifacts.bundle),
            "--variants",
            '["torchscript_fp32"]',
            "--metrics-port",
            "null",
        )
        items = [int(i) for i in bundle.item_ids[:50]]
        acked: list[str] = []
        stop = threading.Event()

        def stream() -> None:
            with RecommenderClient(target, retry=NO_RETRY, timeout=5) as client:
                n = 0
                while not stop.is_set():
                    event_id = f"{backend}-{n}"
                    try:
                        client.record_feedback(f"u{n % 7}", events=[Feedback(items[n % 50], 4.0, n + 1, event_id)])
                    except RecsysError:
                        return  # the replica is gone: this event was never acknowledged
                    acked.append(event_id)
                    n += 1

        writer = threading.Thread(target=stream)
        writer.start()
        time.sleep(1.5)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        writer.join(10)
        stop.set()
        store = open_store(url)
        stored = {e.event_id for e in store.events_after()}
        store.close()
        assert len(acked) > 20 and set(acked) <= stored and len(stored) <= len(acked) + 1
    finally:
        if server is not None:
            server.stop()
