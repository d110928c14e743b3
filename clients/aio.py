"""The asyncio client: the same methods as the blocking one, awaited.

async with AsyncRecommenderClient("localhost:50051") as client:
    result = await client.recommend(42, k=10, budget_ms=50)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import grpc

from clients.api import RecommenderApi
from clients.channel import ClientCore, HeaderHook
from clients.credentials import Credentials
from clients.results import FeedbackReceipt, Models, Onboarding, Recommendations, SimilarItems
from clients.retry import DEFAULT_RETRY, RetryPolicy


class AsyncRecommenderClient(
    RecommenderApi[
        Awaitable[Recommendations],
        Awaitable[SimilarItems],
        Awaitable[Onboarding],
        Awaitable[FeedbackReceipt],
        Awaitable[Models],
        Awaitable[str],
    ]
):
    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout: float | None = 5.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        header_hook: HeaderHook | None = None,
        credentials: Credentials | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        """``target``: HOST:PORT, several (a list or comma-separated) or dns:///NAME:PORT; calls are
        spread round-robin over every address (clients.targets)."""
        credentials = credentials or Credentials()
        self.core = ClientCore(channel or credentials.aio_channel(target), timeout, retry, header_hook, credentials)

    async def _call(self, method: str, request: Any, parse: Callable[[Any], Any], timeout: float | None) -> Any:
        call, metadata = self.core.method(method), self.core.metadata()
        deadline = self.core.deadline(timeout)
        delays = self.core.retry.delays()
        while True:
            try:
                return parse(await call(request, timeout=self.core.left(deadline), metadata=metadata))
            except grpc.RpcError as error:
                await asyncio.sleep(self.core.retry_after(error, next(delays, None), deadline))

    async def close(self) -> None:
        await self.core.channel.close(None)  # no grace: calls still in flight are cancelled

    async def __aenter__(self) -> AsyncRecommenderClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
