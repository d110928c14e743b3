"""`python -m clients --json ...`: every subcommand prints one JSON document, errors included.

A real gRPC server with canned answers stands in for the recommendation server, its health
service and its admin service, so each command's whole path (argv -> SDK -> wire -> JSON) runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from recsys.admin.v1 import admin_pb2 as apb
from recsys.admin.v1 import admin_pb2_grpc as apb_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

import clients.__main__ as client_cli

ITEM = pb.ScoredItem(item_id=50, title="Star Wars (1977)", genres=["Action", "Sci-Fi"], year=1977, score=0.9)


class Canned(pb_grpc.RecommenderServicer):
    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> pb.RecommendResponse:
        if request.user_id == "refused":
            context.set_trailing_metadata((("x-request-id", "rid-refused"),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "k must be at most 100")
        return pb.RecommendResponse(
            items=[ITEM],
            strategy_used=request.strategy,
            rung=pb.RUNG_FULL,
            request_id="rid-1",
            timings=[pb.StageTiming(stage="total", ms=3.5)],
            history_size=len(request.ratings),
        )

    def SimilarItems(self, request: pb.SimilarItemsRequest, context: grpc.ServicerContext) -> pb.SimilarItemsResponse:
        return pb.SimilarItemsResponse(item=pb.ScoredItem(item_id=request.item_id, title="Seed"), items=[ITEM])

    def GetOnboardingItems(self, request: pb.OnboardingRequest, context: grpc.ServicerContext) -> pb.OnboardingResponse:
        return pb.OnboardingResponse(items=[ITEM] * request.k, request_id="rid-o")

    def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: grpc.ServicerContext
    ) -> pb.RecordFeedbackResponse:
        n = len(request.events)
        return pb.RecordFeedbackResponse(accepted=n, new_events=n, profile_size=n, request_id="rid-f")

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            bundle_version="7",
            models=[pb.ModelStatus(name="sae_fp32", role="sae", ready=True, versions=["1"], calls=3)],
            fusion_weights={"sae": 1.0},
        )


@dataclass
class Admin(apb_grpc.RolloutAdminServicer):
    """A rollout that moves through the stages as it is told; records each call."""

    state: apb.Rollout = field(default_factory=lambda: apb.Rollout(stage="idle", promoted_bundle="1"))
    calls: list[str] = field(default_factory=list)

    def _moved(self, name: str, **change: Any) -> apb.Rollout:
        self.calls.append(name)
        for key, value in change.items():
            setattr(self.state, key, value)
        return self.state

    def StartRollout(self, request: apb.StartRolloutRequest, context: grpc.ServicerContext) -> apb.Rollout:
        if request.bundle.endswith("missing"):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no bundle there")
        return self._moved("start", rollout_id=4, stage="shadow", candidate_bundle="2")

    def GetRollout(self, request: apb.GetRolloutRequest, context: grpc.ServicerContext) -> apb.Rollout:
        return self._moved("get")

    def Promote(self, request: apb.PromoteRequest, context: grpc.ServicerContext) -> apb.Rollout:
        if request.stage == "retire":
            return self._moved("retire", stage="idle", promoted_bundle="2", candidate_bundle="", outcome="retired")
        return self._moved(request.stage, stage=request.stage, canary_percent=request.canary_percent)

    def Rollback(self, request: apb.RollbackRequest, context: grpc.ServicerContext) -> apb.Rollout:
        return self._moved("rollback", stage="idle", candidate_bundle="", outcome=f"rolled back: {request.reason}")


@pytest.fixture
def server() -> Iterator[tuple[str, Admin]]:
    admin = Admin()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_RecommenderServicer_to_server(Canned(), grpc_server)
    apb_grpc.add_RolloutAdminServicer_to_server(admin, grpc_server)
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield f"127.0.0.1:{port}", admin
    finally:
        grpc_server.stop(grace=None)


def run_json(capsys: pytest.CaptureFixture[str], target: str, *argv: str, status: int = 0) -> Any:
    """Run the CLI with --json; stdout must be exactly one JSON document."""
    assert client_cli.main(["--target", target, "--json", *argv]) == status
    return json.loads(capsys.readouterr().out)


def test_recommend(server: tuple[str, Admin], capsys: pytest.CaptureFixture[str]) -> None:
    shown = run_json(capsys, server[0], "recommend", "--rate", "1=5", "--strategy", "sae", "-k", "1")
    assert shown["strategy"] == "sae" and shown["rung"] == "full" and shown["history_size"] == 1
    (item,) = shown["items"]
    assert item == {
        "item_id": 50,
        "title": "Star Wars (1977)",
        "genres": ["Action", "Sci-Fi"],
        "year": 1977,
        "score": pytest.approx(0.9),  # a float32 on the wire
        "reasons": [],
    }
    assert shown["timings_ms"] == {"total": 3.5} and shown["request_id"] == "rid-1"


def test_similar_onboarding_feedback_models(server: tuple[str, Admin], capsys: pytest.CaptureFixture[str]) -> None:
    target = server[0]
    similar = run_json(capsys, target, "similar", "12", "-k", "1")
    assert similar["item"]["item_id"] == 12 and similar["items"][0]["item_id"] == 50
    assert len(run_json(capsys, target, "onboarding", "-k", "3")["items"]) == 3
    receipt = run_json(capsys, target, "feedback", "--user", "u9", "--rate", "1=4", "--click", "50")
    assert receipt["accepted"] == 2 and receipt["new_events"] == 2 and receipt["request_id"] == "rid-f"
    models = run_json(capsys, target, "models")
    assert models["bundle_version"] == "7" and models["fusion_weights"] == {"sae": 1.0}
    assert models["models"][0]["name"] == "sae_fp32" and models["models"][0]["versions"] == ["1"]


def test_health_keeps_its_exit_status(server: tuple[str, Admin], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(capsys, server[0], "health", status=1) == {"status": "NOT_SERVING"}


def test_a_refused_call_is_a_json_error(server: tuple[str, Admin], capsys: pytest.CaptureFixture[str]) -> None:
    assert client_cli.main(["--target", server[0], "--json", "recommend", "--user", "refused"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "error": {"code": "INVALID_ARGUMENT", "message": "k must be at most 100", "request_id": "rid-refused"}
    }
    assert err.strip() == "error: INVALID_ARGUMENT: k must be at most 100"


def test_a_usage_error_is_a_json_error_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert client_cli.main(["--target", "127.0.0.1:1", "--json", "recommend", "--rate", "5=x"]) == 2
    shown = json.loads(capsys.readouterr().out)
    assert shown["error"]["code"] == "" and "expected ITEM=RATING" in shown["error"]["message"]


def test_rollout_steps(server: tuple[str, Admin], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target, admin = server
    started = run_json(capsys, target, "rollout", "--admin", target, "start", "serving_bundle")
    # The .proto field names; uint64 fields are strings in protobuf's JSON mapping.
    assert started["stage"] == "shadow" and started["rollout_id"] == "4" and started["candidate_bundle"] == "2"
    assert started["canary_percent"] == 0 and started["events"] == []  # fields left at their defaults are shown
    got = run_json(capsys, target, "rollout", "--admin", target, "get")
    assert got == started
    canary = run_json(
        capsys, target, "rollout", "--admin", target, "promote", "--stage", "canary", "--canary-percent", "5"
    )
    assert canary["stage"] == "canary" and canary["canary_percent"] == 5
    back = run_json(capsys, target, "rollout", "--admin", target, "rollback", "--reason", "p99")
    assert back["stage"] == "idle" and back["outcome"] == "rolled back: p99"
    assert admin.calls == ["start", "get", "canary", "rollback"]

    refused = run_json(capsys, target, "rollout", "--admin", target, "start", str(tmp_path / "missing"), status=1)
    assert refused["error"]["code"] == "FAILED_PRECONDITION" and refused["error"]["message"] == "no bundle there"


def test_rollout_ship_keeps_progress_off_stdout(server: tuple[str, Admin], capsys: pytest.CaptureFixture[str]) -> None:
    target, admin = server
    argv = ["--target", target, "--json", "rollout", "--admin", target, "ship", "b", "--shadow-s", "0"]
    assert client_cli.main([*argv, "--canary-s", "0"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["outcome"] == "retired"  # stdout holds the final state alone
    assert "in shadow beside" in err and "promoted bundle 2" in err
    assert admin.calls == ["start", "get", "canary", "get", "full", "get", "retire"]
