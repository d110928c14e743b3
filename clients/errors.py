"""One exception type per failure kind, each carrying the gRPC status, the server's message and request id."""

from __future__ import annotations

import grpc


class RecsysError(Exception):
    """Base of every SDK error; ``code`` is the gRPC status, ``request_id`` the server's id for the call."""

    def __init__(
        self, code: grpc.StatusCode, message: str, request_id: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code, self.message, self.request_id = code, message, request_id
        self.retry_after_s = retry_after_s  # the server's hint (rate limit, busy), when it gave one


class InvalidArgument(RecsysError):
    """The request is wrong; the message says which field and what to send instead."""


class NotFound(RecsysError):
    """An id (item) the catalogue does not know."""


class DeadlineExceeded(RecsysError):
    """No answer within the call's deadline."""


class Unavailable(RecsysError):
    """The server (or everything behind it) cannot answer now; retried with backoff by the clients."""


class ResourceExhausted(RecsysError):
    """Too many concurrent calls, a rate limit (``retry_after_s`` says when to retry), or a message over the size
    limit."""


class Unauthenticated(RecsysError):
    """No token, or one the server does not accept (bad signature, expired, unknown key)."""


class PermissionDenied(RecsysError):
    """The token is valid but its roles do not allow this call (or this user id)."""


ERRORS = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def from_rpc_error(error: grpc.RpcError) -> RecsysError:
    code = error.code()
    # Values are str, or bytes for keys ending in -bin; the two read here are plain strings.
    # grpc-stubs types the items as objects with .key/.value, but they are (key, value) pairs:
    # namedtuples from the blocking stack, plain tuples from asyncio's.
    trailing: dict[str, str | bytes] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    hint = trailing.get("retry-after-ms")
    return ERRORS.get(code, RecsysError)(
        code, error.details() or "", str(trailing.get("x-request-id", "")), None if hint is None else int(hint) / 1000
    )
