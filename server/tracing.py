"""OpenTelemetry tracing: a span per RPC (gRPC instrumentation), per Recommend stage and per Triton call.

Off unless a tracer provider is installed: then every stage is a no-op context and the gRPC
interceptor is not added, so an untraced server pays next to nothing. A provider comes from

- the ``tracing_otlp_endpoint`` setting: spans go in batches to that OTLP/gRPC collector;
- ``install(provider)``: an embedding program (or a test) hands its own, before the server starts.

The caller's W3C ``traceparent`` (gRPC metadata) is the RPC span's parent, through the global
propagator (W3C trace context and baggage unless ``OTEL_PROPAGATORS`` says otherwise). Each
Triton call passes the context on in its own ``traceparent`` header, for a Triton that traces with
OpenTelemetry itself (``--trace-config mode=opentelemetry``; not exercised by the tests). A
Recommend's trace:

    /recsys.v1.Recommender/Recommend (SERVER)
      validation, profile, plan, models > triton.infer (CLIENT, one per call), fusion, reply
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from server.buildinfo import build_info
from server.settings import Settings

NAME = "recsys.server"


class _Answered(Protocol):  # what ModelPool.infer returns (server.triton_models.CallResult, frozen)
    @property
    def version(self) -> str: ...
    @property
    def ms(self) -> float: ...


R = TypeVar("R", bound=_Answered)
_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


def install(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` from now on (None: tracing off); not the global provider, so
    servers and tests in one process never fight over OpenTelemetry's set-once global."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer(NAME, build_info()["version"]) if provider is not None else trace.NoOpTracer()


def enabled() -> bool:
    return _provider is not None


def configure(settings: Settings) -> TracerProvider | None:
    """Install an OTLP-exporting provider when ``tracing_otlp_endpoint`` is set; returns it, to shut down."""
    if not settings.tracing_otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    service = {"service.name": settings.tracing_service_name, "service.version": build_info()["version"]}
    resource = Resource.create(service)
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)))
    # http:// is plaintext, https:// TLS (the exporter reads the scheme).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint)))
    install(provider)
    return provider


def shutdown(provider: TracerProvider | None) -> None:
    """Flush and stop a provider ``configure`` made; tracing goes off if it was the installed one."""
    if provider is None:
        return
    if provider is _provider:
        install(None)
    provider.shutdown()


def server_interceptors() -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """The RPC-span interceptor, outermost (refused calls are traced too); none when tracing is off.
    Health checks and reflection are left out: probes would flood the traces."""
    if _provider is None:
        return []
    probes = filters.any_of(filters.service_prefix("grpc.health."), filters.service_prefix("grpc.reflection."))
    interceptor = aio_server_interceptor(tracer_provider=_provider, filter_=filters.negate(probes))  # type: ignore[no-untyped-call]
    return [interceptor]


def stage(name: str) -> contextlib.AbstractContextManager[trace.Span]:
    """A child span of the current one for a stage of the request; a no-op when tracing is off."""
    if _provider is None:
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return _tracer.start_as_current_span(name)


def start_stage(name: str) -> trace.Span:
    """A stage span ended by the caller (``span.end()``): for a stage that is not one block of code."""
    return _tracer.start_span(name) if _provider is not None else trace.INVALID_SPAN


def annotate(**attributes: str | int | float | bool) -> None:
    """Attributes on the current span (the RPC's, outside any stage), as ``recsys.<key>``."""
    if _provider is not None:
        trace.get_current_span().set_attributes({f"recsys.{k}": v for k, v in attributes.items()})


def traceparent_headers() -> dict[str, str]:
    """The current context as W3C headers for an outgoing call; empty when tracing is off."""
    carrier: dict[str, str] = {}
    if _provider is not None:
        propagate.inject(carrier)
    return carrier


def triton_call(infer: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Wrap ``ModelPool.infer(model, ...)`` in a CLIENT span with the model, version and latency;
    a failed call (``ModelCallError``) marks the span as an error with its reason."""

    @functools.wraps(infer)
    async def traced(pool: Any, model: str, *args: Any, **kwargs: Any) -> R:
        if _provider is None:
            return await infer(pool, model, *args, **kwargs)
        attributes = {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "recsys.model": model}
        with _tracer.start_as_current_span("triton.infer", kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            result = await infer(pool, model, *args, **kwargs)
            span.set_attributes({"recsys.model_version": str(result.version), "recsys.ms": float(result.ms)})
            return result

    return traced
