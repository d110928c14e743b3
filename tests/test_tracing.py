"""Tracing on the real server: stage and Triton-call spans under the caller's traceparent.

Off-by-default and OTLP export: tests/test_tracing_setup.py (no server, and no provider left installed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from server import tracing
from server.bundle import load_bundle
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for

STAGES = {"validation", "profile", "plan", "models", "fusion", "reply"}
TRACE_ID, PARENT_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331


@pytest.fixture(scope="module")
def traced(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        settings = settings_for(serving_artifacts, serving_triton.grpc_url, tmp_path_factory.mktemp("state"))
        with ServerThread(settings) as server:
            yield server, exporter
    finally:
        tracing.install(None)


def _known_user(artifacts: Artifacts) -> str:
    bundle = load_bundle(artifacts.bundle)
    row = int(np.flatnonzero(np.diff(bundle.histories.indptr) >= 15)[0])
    return next(u for u, i in bundle.user_index.items() if i == row)


def attrs(span: ReadableSpan) -> Mapping[str, Any]:
    assert span.attributes is not None, span.name
    return span.attributes


def test_stages_and_triton_calls_are_spans_under_the_callers_traceparent(
    traced: tuple[ServerThread, InMemorySpanExporter], serving_artifacts: Artifacts
) -> None:
    stack, exporter = traced
    traceparent = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
    with RecommenderClient(stack.target, retry=NO_RETRY, header_hook=lambda: [("traceparent", traceparent)]) as c:
        result = c.recommend(_known_user(serving_artifacts), k=5)
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == TRACE_ID]
    (rpc,) = [s for s in spans if s.name == "/recsys.v1.Recommender/Recommend"]
    assert rpc.kind == SpanKind.SERVER and rpc.parent is not None and rpc.parent.is_remote
    assert rpc.parent.span_id == PARENT_ID and attrs(rpc)["recsys.request_id"] == result.request_id
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    for name in STAGES:
        (stage,) = by_name[name]
        assert stage.parent is not None and stage.parent.span_id == rpc.context.span_id, name
    assert attrs(by_name["plan"][0])["recsys.plan"] == result.plan
    calls = by_name["triton.infer"]
    assert sorted(str(attrs(s)["recsys.model"]) for s in calls) == sorted(c.model for c in result.model_calls)
    models_stage = by_name["models"][0].context.span_id
    for call in calls:
        assert call.kind == SpanKind.CLIENT and call.parent is not None and call.parent.span_id == models_stage
        assert attrs(call)["recsys.model_version"] == "1" and call.status.status_code != StatusCode.ERROR


def test_a_call_without_traceparent_starts_its_own_trace(
    traced: tuple[ServerThread, InMemorySpanExporter], serving_artifacts: Artifacts
) -> None:
    stack, exporter = traced
    exporter.clear()
    with RecommenderClient(stack.target, retry=NO_RETRY) as client:
        client.recommend(_known_user(serving_artifacts), k=3)
        client.health()  # probes are not traced
    rpcs = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert [s.name for s in rpcs] == ["/recsys.v1.Recommender/Recommend"] and rpcs[0].parent is None
