"""The one interceptor in front of every method: decode, authenticate, authorize, rate-limit, admit.

- Malformed bytes are INVALID_ARGUMENT (gRPC's own deserializer failure reads UNKNOWN): unary
  handlers get the raw bytes and this decodes them.
- Authorization sees the decoded request, so a ``user`` token is checked against the user id it names.
- Our own concurrency limit replaces gRPC's ``maximum_concurrent_rpcs``, which counted health
  checks and reflection streams too: a busy server then failed its own probes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server.auth import Authenticator, Principal
from server.certidentity import peer_identities
from server.errors import InvalidRequest, Overloaded, RecsysError, TooLarge
from server.metrics import Metrics
from server.policy import Rule, authorize, rule_for
from server.ratelimit import RateLimiter


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic in grpc-stubs only, not at run time
    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter | None,
        max_inflight: int,
        metrics: Metrics,
        max_message_bytes: int | None = None,
        max_metadata_bytes: int | None = None,
    ) -> None:
        self.authenticator, self.limiter, self.metrics = authenticator, limiter, metrics
        self.max_inflight, self.max_message_bytes = max_inflight, max_message_bytes
        self.max_metadata_bytes = max_metadata_bytes
        self.inflight = 0

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        method, rule = details.method, rule_for(details.method)
        if rule is not None and rule.public:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, rule, handler), response_serializer=handler.response_serializer
            )
        if handler.stream_stream is not None:  # server reflection
            inner = handler.stream_stream

            async def stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await self._admit_or_abort(method, rule, context, None)
                async for reply in inner(requests, context):
                    yield reply

            return grpc.stream_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def server_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await self._admit_or_abort(method, rule, context, request)
                async for reply in inner_stream(request, context):
                    yield reply

            return grpc.unary_stream_rpc_method_handler(
                server_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return None  # client-streaming: nothing here serves one, so nothing here lets one through

    def _unary(self, method: str, rule: Rule | None, handler: Any) -> Callable[[bytes, Any], Awaitable[Any]]:
        decode, inner = handler.request_deserializer, handler.unary_unary

        async def unary(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.max_message_bytes is not None and len(raw) > self.max_message_bytes:
                await self._abort(
                    method, context, TooLarge(f"{len(raw)} bytes; requests may be at most {self.max_message_bytes}")
                )
            try:
                request = decode(raw)
            except DecodeError:
                await self._abort(
                    method,
                    context,
                    InvalidRequest(f"the request is not a valid protobuf message for {method} ({len(raw)} bytes)"),
                )
            await self._admit_or_abort(method, rule, context, request)
            if rule is None or not rule.limited:
                return await inner(request, context)
            if self.inflight >= self.max_inflight:
                await self._abort(
                    method, context, Overloaded(f"the server is busy ({self.inflight} requests in flight)", 0.05)
                )
            self.inflight += 1
            try:
                return await inner(request, context)
            finally:
                self.inflight -= 1

        return unary

    async def _admit_or_abort(
        self, method: str, rule: Rule | None, context: grpc.aio.ServicerContext[Any, Any], request: object | None
    ) -> Principal | None:
        try:
            metadata = context.invocation_metadata() or ()
            if self.max_metadata_bytes is not None:
                # HTTP/2 counts each header as name + value + 32 bytes (RFC 7540 6.5.2), as gRPC's limit does.
                size = sum(len(k) + len(v) + 32 for k, v in metadata)
                if size > self.max_metadata_bytes:
                    raise TooLarge(
                        f"{size} bytes of request metadata ({len(metadata)} headers); at most {self.max_metadata_bytes}"
                    )
            certificate = peer_identities(context.auth_context()) if self.authenticator.cert_principals else ()
            principal = self.authenticator.authenticate(metadata, certificate)
            authorize(method, rule, principal, request)
            if rule is not None and rule.limited and self.limiter is not None and not principal.dev:
                wait = self.limiter.take(principal.name)
                if wait > 0:
                    raise Overloaded(f"rate limit for {principal.name} ({self.limiter.rps:g}/s)", wait)
            return principal
        except RecsysError as err:
            await self._abort(method, context, err)
        return None

    async def _abort(self, method: str, context: grpc.aio.ServicerContext[Any, Any], err: RecsysError) -> None:
        self.metrics.refused.labels(method.rpartition("/")[2], err.code.name).inc()
        if isinstance(err, Overloaded):
            context.set_trailing_metadata((("retry-after-ms", str(max(1, round(err.retry_after_s * 1000)))),))
        await context.abort(err.code, str(err))
