"""The embedded Triton SIGKILLed under load: restarted by its supervisor, models reloaded by the server,
readiness SERVING throughout, no request failed; the Triton health service and metric follow Triton."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from export.triton import EmbeddedTriton
from server.app import TRITON_HEALTH
from server.bundle import load_bundle
from server.killtest import kill_under_load
from tests.stack import Artifacts, ServerThread, settings_for


@pytest.fixture(scope="module")
def supervised(serving_artifacts: Artifacts) -> Iterator[EmbeddedTriton]:
    with EmbeddedTriton(serving_artifacts.repository, startup_timeout=120, supervise=True) as triton:
        yield triton


@pytest.mark.slow
def test_triton_killed_under_load_comes_back_by_itself(serving_artifacts: Artifacts, supervised: EmbeddedTriton,
                                                       tmp_path: Path) -> None:
    bundle = load_bundle(serving_artifacts.bundle)
    user = next(iter(bundle.user_index))
    # One variant: fewer models to reload, so the test is about supervision, not about loading speed.
    settings = settings_for(serving_artifacts, supervised.grpc_url, tmp_path, variants=["torchscript_fp32"])
    with ServerThread(settings) as server:
        with RecommenderClient(server.target, retry=NO_RETRY) as client:
            deadline = time.monotonic() + 60
            while client.health(TRITON_HEALTH) != "SERVING" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.health(TRITON_HEALTH) == "SERVING"
        report = kill_under_load(server.target, supervised, user, workers=3, recover_within_s=150)
        print("triton kill under load:", report)
        assert report["triton_restarted"] and report["failed"] == 0, report
        assert report["probes"] > 10 and report["probes_not_serving"] == 0, report
        assert report["whole_before_kill"] > 0, report  # the models answered before the kill
        assert report["degraded"] > 0, report  # it was down: some answers had to do without it
        # The timeline is complete: Triton back, then its models (the Triton health service), then answers.
        assert report["models_ready_after_s"] is not None, report
        assert report["restarted_after_s"] <= report["models_ready_after_s"], report
        assert report["first_undegraded_after_s"] is not None, report
        # Reloading the models (a Python stub importing torch each) is most of it on 2 busy cores.
        assert report["undegraded_after_s"] < 150, report
        with RecommenderClient(server.target, retry=NO_RETRY) as client:
            assert client.health(TRITON_HEALTH) == "SERVING"
            answer = client.recommend(user, k=5, budget_ms=2000)
            assert not answer.degraded and all(c.ok for c in answer.model_calls)
