"""Faults, end to end: a model that turns slow, too many calls, shutdown with calls in flight, Triton killed.

The slow models are the only fake: the real SAE (the two-tower item scorer, EASE) behind a
test-only Python model that sleeps for as long as a file says (tests/fixtures/slow_model.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import pytest
from recsys import contract
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from clients.errors import RecsysError, ResourceExhausted
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from server.app import RecommendationServer
from server.bundle import load_bundle
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for, slow_repository

BUDGET_MS = 80
MARGIN_MS = 25  # the stated margin: a reply leaves within its budget plus this (loopback, 2 busy cores)
SLOW_MODEL = "sae_torchscript_fp32"
T = TypeVar("T")
SLOW_GENERATOR = "two_tower_items_torchscript_fp32"
SLOW_EASE = "ease_torchscript_fp32"
RANKERS = {f"{m}_torchscript_fp32" for m in contract.CATALOG_SCORERS}


@pytest.fixture(scope="module")
def delay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("delay") / "delay_ms"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def generator_delay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("delay") / "generator_delay_ms"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def ease_delay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("delay") / "ease_delay_ms"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def slow_artifacts(
    serving_artifacts: Artifacts,
    delay: Path,
    generator_delay: Path,
    ease_delay: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Artifacts:
    repository = slow_repository(
        serving_artifacts,
        tmp_path_factory.mktemp("slow") / "repo",
        {SLOW_MODEL: delay, SLOW_GENERATOR: generator_delay, SLOW_EASE: ease_delay},
    )
    return Artifacts(repository, serving_artifacts.bundle, serving_artifacts.models)


@pytest.fixture(scope="module")
def triton(slow_artifacts: Artifacts) -> Iterator[EmbeddedTriton]:
    with EmbeddedTriton(slow_artifacts.repository, startup_timeout=120) as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    slow_artifacts: Artifacts,
    triton: EmbeddedTriton,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerThread]:
    settings = settings_for(
        slow_artifacts, triton.grpc_url, tmp_path_factory.mktemp("state"), max_concurrent_rpcs=4, latency_max_age_s=3.0
    )
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def user(serving_artifacts: Artifacts) -> str:
    bundle = load_bundle(serving_artifacts.bundle)
    row = int(np.flatnonzero(np.diff(bundle.histories.indptr) >= 15)[0])
    return next(u for u, i in bundle.user_index.items() if i == row)


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_a_model_turning_slow_never_makes_an_answer_late(stack: ServerThread, delay: Path, user: str) -> None:
    with RecommenderClient(stack.target, retry=NO_RETRY) as client:
        delay.write_text("0")
        first = client.recommend(user, k=5, budget_ms=BUDGET_MS, variant="fp32")
        assert not first.degraded, (first.degraded_reasons, first.model_calls, first.plan)
        delay.write_text("400")
        results = []
        for _ in range(6):
            result, wall_ms = _timed(lambda: client.recommend(user, k=5, budget_ms=BUDGET_MS, variant="fp32"))
            assert wall_ms <= BUDGET_MS + MARGIN_MS, f"answered after {wall_ms:.0f} ms"
            assert result.timings_ms["total"] <= BUDGET_MS + 1 and len(result.items) == 5
            assert result.degraded and any(r.startswith("sae:") for r in result.degraded_reasons)
            results.append(result)
        # First the hard limit cuts the slow call off; once the estimate has learnt, the plan leaves it out.
        assert "no answer within the budget" in results[0].degraded_reasons[0]
        cut = next(c for c in results[0].model_calls if c.model == SLOW_MODEL)
        assert not cut.ok and "cancelled" in cut.error
        assert results[-1].plan == "fp32:drop=sae" and "left out to fit the budget" in results[-1].degraded_reasons[0]
        assert {c.model for c in results[-1].model_calls if c.ok} >= {"rbm_torchscript_fp32"}
        # With precision "auto" the planner downgrades to the int8 SAE instead, and nothing is missing.
        auto = client.recommend(user, k=5, budget_ms=BUDGET_MS)
        assert (auto.plan, auto.degraded) == ("int8", False)
        assert "sae_torchscript_int8" in {c.model for c in auto.model_calls if c.ok}
        # Samples age out: once the model is fast again it is tried, measured, and back in the plan.
        delay.write_text("0")
        time.sleep(3.5)
        assert client.recommend(user, k=5, budget_ms=BUDGET_MS, variant="fp32").plan == "full"


def test_a_slow_candidate_generator_does_not_take_the_rankers_down(
    stack: ServerThread, generator_delay: Path, user: str
) -> None:
    budget_ms = 400
    with RecommenderClient(stack.target, retry=NO_RETRY) as client:
        generator_delay.write_text("0")
        staged = client.recommend(user, k=5, budget_ms=budget_ms, variant="fp32")
        assert (staged.plan, staged.degraded) == ("full", False)
        # Two stages: the two-tower generates candidates before the catalogue scorers rank them.
        order = [c.model for c in staged.model_calls]
        assert order[:2] == ["two_tower_user_torchscript_fp32", SLOW_GENERATOR]
        assert set(order[2:]) == RANKERS
        generator_delay.write_text("2000")
        try:
            for _ in range(3):
                result, wall_ms = _timed(lambda: client.recommend(user, k=5, budget_ms=budget_ms, variant="fp32"))
                assert wall_ms <= budget_ms + MARGIN_MS, f"answered after {wall_ms:.0f} ms"
                # The rankers stopped waiting in time and ranked the local candidates instead.
                assert {c.model for c in result.model_calls if c.ok} >= RANKERS
                assert result.degraded and all(r.startswith("two_tower:") for r in result.degraded_reasons)
        finally:
            generator_delay.write_text("0")
            time.sleep(3.5)  # the slow samples age out before the next test plans


def test_a_failing_or_late_ease_degrades_the_answer(stack: ServerThread, ease_delay: Path, user: str) -> None:
    """EASE is a member like the others: an error or a late answer costs its list, never the answer.

    The budget is generous so that on a loaded machine only EASE is missing, by construction."""
    budget_ms = 1500
    with RecommenderClient(stack.target, retry=NO_RETRY) as client:
        try:
            for state in ("fail", "3000"):
                ease_delay.write_text(state)
                result, wall_ms = _timed(lambda: client.recommend(user, k=5, budget_ms=budget_ms, variant="fp32"))
                assert wall_ms <= budget_ms + MARGIN_MS and len(result.items) == 5, state
                assert result.degraded and any(r.startswith("ease:") for r in result.degraded_reasons), state
                assert not next(c for c in result.model_calls if c.model == SLOW_EASE).ok, state
                assert RANKERS - {SLOW_EASE} <= {c.model for c in result.model_calls if c.ok}, state
        finally:
            ease_delay.write_text("0")
            time.sleep(3.5)  # the slow samples age out before the next test plans


def test_tiny_budget_answers_locally_at_once(stack: ServerThread, user: str) -> None:
    with RecommenderClient(stack.target, retry=NO_RETRY) as client:
        result, wall_ms = _timed(lambda: client.recommend(user, k=5, budget_ms=2))
    assert (result.plan, result.degraded, result.model_calls, len(result.items)) == ("local", True, [], 5)
    assert wall_ms <= 2 + MARGIN_MS


def _outcomes(server: RecommendationServer, outcome: str) -> float:
    return sum(
        server.metrics.registry.get_sample_value(
            "recsys_requests_total", {"rpc": "Recommend", "strategy": s, "outcome": outcome}
        )
        or 0
        for s in ("", "sae")
    )


def _seen_by_the_model(delay: Path, event: str) -> int:
    """How many delayed requests the slow model has ``started``, or seen ``cancelled`` by Triton."""
    events = Path(f"{delay}.events")
    return events.read_text().splitlines().count(event) if events.exists() else 0


def _slow_sae_call(channel: grpc.Channel, user: str, timeout: float | None = None) -> grpc.Future:
    return pb_grpc.RecommenderStub(channel).Recommend.future(
        pb.RecommendRequest(
            user_id=user, k=3, strategy=pb.STRATEGY_SAE, variant=pb.VARIANT_FP32, latency_budget_ms=5000
        ),
        timeout=timeout,
    )


def test_a_cancelled_call_stops_its_triton_calls(stack: ServerThread, delay: Path, user: str) -> None:
    assert stack.server is not None
    server = stack.server
    before, started, seen = (
        _outcomes(server, "cancelled"),
        _seen_by_the_model(delay, "started"),
        _seen_by_the_model(delay, "cancelled"),
    )
    delay.write_text("1500")
    try:
        with grpc.insecure_channel(stack.target) as channel:
            call = _slow_sae_call(channel, user)
            _wait_for(lambda: _seen_by_the_model(delay, "started") > started, 5, "the call to reach the slow model")
            call.cancel()
            # gRPC cancels the handler, and with it the Triton call: nothing is left in flight long
            # before the slow model would have answered; counted as its own outcome, not as ok.
            cancelled_at = time.monotonic()
            _wait_for(lambda: server.metrics.inflight._value.get() == 0, 1.0, "the handler to stop")
            assert time.monotonic() - cancelled_at < 1.0 and _outcomes(server, "cancelled") == before + 1
            # ...and Triton itself saw the request cancelled, so the model stopped working on it.
            _wait_for(lambda: _seen_by_the_model(delay, "cancelled") == seen + 1, 1.0, "Triton to cancel the request")
    finally:
        delay.write_text("0")


def test_an_expired_call_stops_its_triton_calls_and_is_counted_as_expired(
    stack: ServerThread, delay: Path, user: str
) -> None:
    """A server too busy to answer by the caller's deadline (its event loop held, as under overload):
    the caller gets DEADLINE_EXCEEDED, the metrics say ``deadline_exceeded`` (not ok or degraded,
    though the handler may still finish its answer late), and the Triton call is cancelled too."""
    assert stack.server is not None
    server = stack.server
    counts = {o: _outcomes(server, o) for o in ("deadline_exceeded", "ok", "degraded", "cancelled")}
    started, seen = _seen_by_the_model(delay, "started"), _seen_by_the_model(delay, "cancelled")
    delay.write_text("5000")
    try:
        with grpc.insecure_channel(stack.target) as channel:
            call = _slow_sae_call(channel, user, timeout=3.0)
            _wait_for(lambda: _seen_by_the_model(delay, "started") > started, 2.5, "the call to reach the slow model")
            stack.loop.call_soon_threadsafe(time.sleep, 3.0)  # past the deadline, and past the budget's hard limit
            with pytest.raises(grpc.RpcError) as failed:
                call.result()
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            _wait_for(lambda: server.metrics.inflight._value.get() == 0, 2.0, "the handler to stop")
            after = {o: _outcomes(server, o) for o in counts}
            assert after == {**counts, "deadline_exceeded": counts["deadline_exceeded"] + 1}, (counts, after)
            _wait_for(lambda: _seen_by_the_model(delay, "cancelled") == seen + 1, 1.0, "Triton to cancel the request")
    finally:
        delay.write_text("0")


def test_too_many_concurrent_calls_are_refused(stack: ServerThread, delay: Path, user: str) -> None:
    delay.write_text("300")
    try:
        with RecommenderClient(stack.target, retry=NO_RETRY) as client, ThreadPoolExecutor(12) as pool:

            def call() -> str:
                try:
                    client.recommend(user, k=3, strategy="sae", variant="fp32", budget_ms=5000)
                    return "ok"
                except ResourceExhausted:
                    return "exhausted"

            outcomes = list(pool.map(lambda _: call(), range(12)))
    finally:
        delay.write_text("0")
    assert outcomes.count("exhausted") >= 1 and outcomes.count("ok") >= 4


def test_shutdown_drains_calls_in_flight(
    slow_artifacts: Artifacts, triton: EmbeddedTriton, delay: Path, tmp_path: Path, user: str
) -> None:
    server = ServerThread(settings_for(slow_artifacts, triton.grpc_url, tmp_path)).start()
    delay.write_text("500")
    outcome: dict[str, object] = {}
    try:
        with RecommenderClient(server.target, retry=NO_RETRY) as client:

            def slow_call() -> None:
                outcome["result"] = client.recommend(user, k=3, strategy="sae", variant="fp32", budget_ms=5000)

            worker = threading.Thread(target=slow_call)
            worker.start()
            time.sleep(0.2)
            server.stop(grace=5.0)
            worker.join(10)
    finally:
        delay.write_text("0")
    assert not outcome["result"].degraded  # type: ignore[attr-defined]
    with RecommenderClient(server.target, retry=NO_RETRY, timeout=2) as client, pytest.raises(RecsysError) as caught:
        client.list_models()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_triton_killed_then_back(stack: ServerThread, triton: EmbeddedTriton, user: str) -> None:
    with RecommenderClient(stack.target, retry=NO_RETRY) as client:
        _wait_for(lambda: client.health() == "SERVING", 30, "SERVING before the kill")
        assert triton.process is not None
        os.killpg(triton.process.pid, signal.SIGKILL)
        triton.process.wait(10)
        for _ in range(5):
            result, wall_ms = _timed(lambda: client.recommend(user, k=5, budget_ms=200))
            assert result.degraded and len(result.items) == 5 and wall_ms <= 200 + MARGIN_MS
        # Readiness means "can answer" (degraded): it stays SERVING; Triton's own health service does not.
        _wait_for(lambda: client.health("recsys.v1.Triton") == "NOT_SERVING", 10, "Triton NOT_SERVING while down")
        assert client.health() == "SERVING" and client.health("recsys.v1.Recommender") == "SERVING"
        assert client.health("liveness") == "SERVING"  # alive: no reason for a liveness probe to restart it
        assert not client.list_models().triton_ready
        triton.stop()
        triton.start()  # the same ports; no models loaded: the server loads what it needs by itself
        _wait_for(lambda: client.health("recsys.v1.Triton") == "SERVING", 120, "Triton SERVING after its restart")
        back = client.recommend(user, k=5, budget_ms=2000)
        assert not back.degraded and back.rung == "full" and all(c.ok for c in back.model_calls)
