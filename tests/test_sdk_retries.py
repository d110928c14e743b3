"""The SDK's retry loop (and the CLI's --json) against a real gRPC server whose answers the test scripts.

A server that is refused or down cannot tell "retried" from "gave up at once" (both end in
UNAVAILABLE), so this one counts the attempts it receives: UNAVAILABLE a set number of times, then
an answer; or a code that must never be retried.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

import clients.__main__ as client_cli
from clients.aio import AsyncRecommenderClient
from clients.errors import InvalidArgument, RecsysError, Unavailable
from clients.retry import NO_RETRY, RetryPolicy
from clients.sync import RecommenderClient

FAST = RetryPolicy(attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


@dataclass
class Scripted(pb_grpc.RecommenderServicer):
    """Fails the first ``failures`` calls with ``code``, then answers; records each attempt's request id."""

    failures: int = 0
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    request_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        with self.lock:
            self.request_ids.append(str(dict(context.invocation_metadata()).get("x-request-id", "")))
            attempt = len(self.request_ids)
        if attempt <= self.failures:
            context.abort(self.code, f"scripted failure {attempt}")
        return pb.ListModelsResponse(bundle_version="7")


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, str]]:
    servicer = Scripted()  # type: ignore[abstract]  # the generated base answers UNIMPLEMENTED for the RPCs left out
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_RecommenderServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_client_retries_unavailable_only(scripted: tuple[Scripted, str]) -> None:
    servicer, target = scripted
    servicer.failures = 2
    with RecommenderClient(target, timeout=5, retry=FAST) as client:
        assert client.list_models().bundle_version == "7"
    # Two refusals, then the answer: three attempts, all one call (the same request id).
    assert len(servicer.request_ids) == 3 and len(set(servicer.request_ids)) == 1

    servicer.request_ids.clear()
    servicer.failures, servicer.code = 1, grpc.StatusCode.INVALID_ARGUMENT
    with RecommenderClient(target, timeout=5, retry=FAST) as client, pytest.raises(InvalidArgument):
        client.list_models()
    assert len(servicer.request_ids) == 1  # the request is wrong: repeating it cannot help


def test_retries_stop_after_the_policy_attempts(scripted: tuple[Scripted, str]) -> None:
    servicer, target = scripted
    servicer.failures = 100
    with RecommenderClient(target, timeout=5, retry=FAST) as client, pytest.raises(Unavailable):
        client.list_models()
    assert len(servicer.request_ids) == FAST.attempts
    servicer.request_ids.clear()
    with RecommenderClient(target, timeout=5, retry=NO_RETRY) as client, pytest.raises(Unavailable):
        client.list_models()
    assert len(servicer.request_ids) == 1


def test_async_client_retries_unavailable(scripted: tuple[Scripted, str]) -> None:
    servicer, target = scripted
    servicer.failures = 2

    async def call() -> str:
        async with AsyncRecommenderClient(target, timeout=5, retry=FAST) as client:
            return (await client.list_models()).bundle_version

    assert asyncio.run(call()) == "7"
    assert len(servicer.request_ids) == 3 and len(set(servicer.request_ids)) == 1


def test_retries_never_outlast_the_deadline() -> None:
    """Nothing listens on port 1: every attempt is UNAVAILABLE, and the loop gives up by the deadline."""
    started = time.monotonic()
    slow = RetryPolicy(attempts=50, initial_backoff_s=0.2, max_backoff_s=1.0)
    with RecommenderClient("127.0.0.1:1", timeout=2, retry=slow) as client, pytest.raises(RecsysError) as caught:
        client.list_models()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() - started < 2.5


def test_client_cli_json_prints_the_typed_result(
    scripted: tuple[Scripted, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, target = scripted
    assert client_cli.main(["--target", target, "--json", "models"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["bundle_version"] == "7" and shown["models"] == []
