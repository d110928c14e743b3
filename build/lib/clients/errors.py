"""One exception type per failure kind, each carrying the gRPC status, the server's message and request id."""

from __future__ import annotations

import grpc


class RecsysError(Exception):
    """Base of every SDK error; ``code`` is the gRPC status, ``request_id`` the server's id for the call."""

    def __init__(self, code: grpc.StatusCode, message: str, request_id: str = "") -> None:
        super().__init__(f"{code.name}: {message}")
        self.code, self.message, self.request_id = code, message, request_id


class InvalidArgument(RecsysError):
    """The request is wrong; the message says which field and what to send instead."""


class NotFound(RecsysError):
    """An id (item) the catalogue does not know."""


class DeadlineExceeded(RecsysError):
    """No answer within the call's deadline."""


class Unavailable(RecsysError):
    """The server (or everything behind it) cannot answer now; retried with backoff by the clients."""


class ResourceExhausted(RecsysError):
    """Too many concurrent calls, or a message over the size limit."""


ERRORS = {grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument, grpc.StatusCode.NOT_FOUND: NotFound,
          grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded, grpc.StatusCode.UNAVAILABLE: Unavailable,
          grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted}


def from_rpc_error(error: grpc.RpcError) -> RecsysError:
    code = error.code()  # type: ignore[attr-defined]
    trailing = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    return ERRORS.get(code, RecsysError)(code, error.details() or "", str(trailing.get("x-request-id", "")))
