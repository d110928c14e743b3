"""Retries with exponential backoff and jitter, for UNAVAILABLE only.

Other codes say something about the request (it is wrong, or took too long) and repeating it
would not help; UNAVAILABLE says the server could not take it now. Retries never outlast the
call's deadline.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # including the first
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0

    def delays(self) -> Iterator[float]:
        """The pause before each retry (full jitter)."""
        backoff = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield random.uniform(0, backoff)
            backoff = min(backoff * self.multiplier, self.max_backoff_s)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def retryable(error: grpc.RpcError) -> bool:
    return error.code() == grpc.StatusCode.UNAVAILABLE
