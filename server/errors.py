"""Domain errors, and the one place they become gRPC status codes."""

from __future__ import annotations

import grpc


class RecsysError(Exception):
    """Base: the message is written for the caller (what is wrong, what to send instead)."""

    code = grpc.StatusCode.INTERNAL


class InvalidRequest(RecsysError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RecsysError):
    code = grpc.StatusCode.NOT_FOUND


class BudgetExhausted(RecsysError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(RecsysError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RecsysError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Overloaded(RecsysError):
    """Rate limit or concurrency limit: retry after ``retry_after_s`` (also sent as ``retry-after-ms``)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(f"{message}; retry after {retry_after_s * 1000:.0f} ms")
        self.retry_after_s = retry_after_s


class TooLarge(RecsysError):
    """A request over ``max_message_bytes`` or ``max_metadata_bytes``: no retry helps."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NoAnswer(RecsysError):
    """Nothing at all can be served (not even the local fallback)."""

    code = grpc.StatusCode.UNAVAILABLE


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, RecsysError):
        return error.code, str(error)
    return grpc.StatusCode.INTERNAL, "internal error; the server log has the details under this request id"
