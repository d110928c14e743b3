"""The SDK's side of idempotent feedback and of spreading calls: ids and times fixed once per call
(every retry carries the same), and the targets it accepts."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from clients.feedback import Feedback
from clients.retry import RetryPolicy
from clients.sync import RecommenderClient
from clients.targets import channel_target


class LosesFirstResponse(pb_grpc.RecommenderServicer):
    """Stores the call, then fails it the first time: the lost response a retry must not duplicate.
    (A test double: a response lost after the store committed is hard to provoke on a real server.)"""

    def __init__(self) -> None:
        self.seen: list[pb.RecordFeedbackRequest] = []

    def RecordFeedback(
        self,
        request: pb.RecordFeedbackRequest,
        context: grpc.ServicerContext,
    ) -> pb.RecordFeedbackResponse:
        self.seen.append(request)
        if len(self.seen) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return pb.RecordFeedbackResponse(accepted=len(request.events), duplicates=len(request.events))


@pytest.fixture()
def lossy() -> Iterator[tuple[LosesFirstResponse, str]]:
    servicer = LosesFirstResponse()  # type: ignore[abstract]  # the generated base answers UNIMPLEMENTED for the RPCs left out
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_RecommenderServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_a_retried_call_carries_the_same_event_ids_and_times(lossy: tuple[LosesFirstResponse, str]) -> None:
    servicer, target = lossy
    retry = RetryPolicy(attempts=3, initial_backoff_s=0.01)
    with RecommenderClient(target, retry=retry) as client:
        receipt = client.record_feedback(
            "u", ratings={1: 5.0}, clicks=[2], events=[Feedback(3, 4.0, timestamp_ms=123, event_id="mine")]
        )
    first, second = servicer.seen
    assert first == second and len(first.events) == 3  # byte-for-byte the same request
    ids = [e.event_id for e in first.events]
    assert len(set(ids)) == 3 and ids[2] == "mine" and all(ids)
    assert first.events[2].timestamp_ms == 123 and first.events[0].timestamp_ms > 1_600_000_000_000
    assert (first.events[1].kind, receipt.duplicates) == (pb.FEEDBACK_KIND_CLICK, 3)
    with RecommenderClient(target, retry=retry) as client:
        client.record_feedback("u", ratings={1: 5.0})
    assert servicer.seen[2].events[0].event_id not in ids  # a new call is new events


def test_targets_a_list_a_comma_list_or_a_dns_name() -> None:
    rr = [("grpc.lb_policy_name", "round_robin")]
    assert channel_target(["127.0.0.1:1", "localhost:2"]) == ("ipv4:127.0.0.1:1,127.0.0.1:2", rr)
    assert channel_target("127.0.0.1:1, 127.0.0.1:2") == ("ipv4:127.0.0.1:1,127.0.0.1:2", rr)
    assert channel_target("dns:///recsys-headless:50051") == ("dns:///recsys-headless:50051", rr)
    for bad in ([], "a:1,b", ["host-that-does-not-resolve.invalid:1", "127.0.0.1:2"]):
        with pytest.raises(ValueError, match="target"):
            channel_target(bad)
