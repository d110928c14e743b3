"""The blocking client.

with RecommenderClient("localhost:50051") as client:
    for item in client.recommend(42, k=10).items:
        print(item.title)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import grpc

from clients.api import RecommenderApi
from clients.channel import ClientCore, HeaderHook
from clients.credentials import Credentials
from clients.results import FeedbackReceipt, Models, Onboarding, Recommendations, SimilarItems
from clients.retry import DEFAULT_RETRY, RetryPolicy


class RecommenderClient(RecommenderApi[Recommendations, SimilarItems, Onboarding, FeedbackReceipt, Models, str]):
    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout: float | None = 5.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        header_hook: HeaderHook | None = None,
        credentials: Credentials | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        """``target``: HOST:PORT, several (a list or comma-separated) or dns:///NAME:PORT; calls are
        spread round-robin over every address (clients.targets)."""
        credentials = credentials or Credentials()
        self.core = ClientCore(channel or credentials.channel(target), timeout, retry, header_hook, credentials)

    def _call(self, method: str, request: Any, parse: Callable[[Any], Any], timeout: float | None) -> Any:
        call, metadata = self.core.method(method), self.core.metadata()
        deadline = self.core.deadline(timeout)
        delays = self.core.retry.delays()
        while True:
            try:
                return parse(call(request, timeout=self.core.left(deadline), metadata=metadata))
            except grpc.RpcError as error:
                time.sleep(self.core.retry_after(error, next(delays, None), deadline))

    def close(self) -> None:
        self.core.channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
