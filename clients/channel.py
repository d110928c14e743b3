"""What both client flavours share: stubs on a channel, call metadata, the retry loop's decisions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from clients.credentials import Credentials
from clients.errors import from_rpc_error
from clients.retry import RetryPolicy, retryable

# Called before every call; returns extra headers (auth tokens, trace ids).
HeaderHook = Callable[[], Sequence[tuple[str, str]]]
# The blocking or the asyncio channel: each flavour closes its own kind.
ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)


class ClientCore(Generic[ChannelT]):
    def __init__(
        self,
        channel: ChannelT,
        timeout: float | None,
        retry: RetryPolicy,
        header_hook: HeaderHook | None,
        credentials: Credentials | None = None,
    ) -> None:
        self.channel: ChannelT = channel
        self.timeout, self.retry, self.header_hook = timeout, retry, header_hook
        self.credentials = credentials or Credentials()
        self.stubs = {"": pb_grpc.RecommenderStub(channel), "health": health_pb2_grpc.HealthStub(channel)}

    def method(self, name: str) -> Any:
        service, _, rpc = name.rpartition(".")
        return getattr(self.stubs[service], rpc)

    def metadata(self) -> list[tuple[str, str]]:
        headers = [*self.credentials.metadata(), *(self.header_hook() if self.header_hook else ())]
        if not any(k == "x-request-id" for k, _ in headers):
            headers.append(("x-request-id", uuid.uuid4().hex))  # the same id on every retry of one call
        return headers

    def deadline(self, timeout: float | None) -> float | None:
        timeout = self.timeout if timeout is None else timeout
        return None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def left(deadline: float | None) -> float | None:
        return None if deadline is None else max(deadline - time.monotonic(), 0.0)

    @staticmethod
    def retry_after(error: grpc.RpcError, delay: float | None, deadline: float | None) -> float:
        """The pause before retrying, or raise the SDK error when the call must not be retried."""
        if delay is None or not retryable(error) or (deadline is not None and time.monotonic() + delay >= deadline):
            raise from_rpc_error(error) from None
        return delay
