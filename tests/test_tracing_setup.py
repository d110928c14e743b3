"""Tracing set-up without a server: off by default, and spans exported to a configured OTLP collector."""

from __future__ import annotations

from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from server import tracing
from server.settings import Settings


def test_tracing_is_off_by_default() -> None:
    assert tracing.configure(Settings()) is None and not tracing.enabled()
    assert tracing.server_interceptors() == [] and tracing.traceparent_headers() == {}
    with tracing.stage("plan") as span:
        assert not span.is_recording()


class Collector(otlp_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[otlp.ExportTraceServiceRequest] = []

    def Export(self, request: otlp.ExportTraceServiceRequest, context: object) -> otlp.ExportTraceServiceResponse:
        self.requests.append(request)
        return otlp.ExportTraceServiceResponse()


def test_spans_are_exported_to_the_configured_otlp_endpoint() -> None:
    collector, server = Collector(), grpc.server(futures.ThreadPoolExecutor(2))
    otlp_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        settings = Settings(tracing_otlp_endpoint=f"http://127.0.0.1:{port}", tracing_service_name="recsys-test")
        provider = tracing.configure(settings)
        assert provider is not None and tracing.enabled() and tracing.server_interceptors()
        with tracing.stage("plan"):
            assert "traceparent" in tracing.traceparent_headers()
        tracing.shutdown(provider)  # flushes the batch
        assert not tracing.enabled()
    finally:
        server.stop(0)
    (resource,) = [r for request in collector.requests for r in request.resource_spans]
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    names = [s.name for scope in resource.scope_spans for s in scope.spans]
    assert service == "recsys-test" and names == ["plan"]
