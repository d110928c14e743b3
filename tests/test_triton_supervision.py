"""The embedded Triton SIGKILLed under load: restarted by its supervisor, models reloaded by the server,
readiness SERVING throughout, no request failed; the Triton health service and metric follow Triton."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from loadtest.benches.killtest import kill_under_load
from server.app import TRITON_HEALTH
from server.bundle import load_bundle
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for


@pytest.fixture(scope="module")
def supervised(serving_artifacts: Artifacts) -> Iterator[EmbeddedTriton]:
    with EmbeddedTriton(serving_artifacts.repository, startup_timeout=120, supervise=True) as triton:
        yield triton


@pytest.mark.slow
def test_triton_killed_under_load_comes_back_by_itself(
    serving_artifacts: Artifacts, supervised: EmbeddedTriton, tmp_path: Path
) -> None:
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


@pytest.mark.slow
def test_a_reload_brings_the_full_plans_models_back_first(
    serving_artifacts: Artifacts, supervised: EmbeddedTriton
) -> None:
    """The watcher's staged refresh loads what the full plan calls first (the default variant of its
    branches), then the rest of the default variant, then the other variants: answers are whole
    again without waiting for every model (what a restarted Triton needs)."""
    import asyncio

    from server.bundle import load_bundle
    from server.latency import LatencyBook
    from server.triton_models import ModelPool

    models = ["rbm_torchscript_fp32", "sae_torchscript_fp32", "sae_torchscript_int8"]
    for model in models:  # as a restarted Triton has them: not loaded
        supervised.unload(model)
    deadline = time.monotonic() + 60
    while any(supervised.client.is_model_ready(m) for m in models) and time.monotonic() < deadline:
        time.sleep(0.2)

    async def refresh_thrice() -> list[set[str]]:
        pool = ModelPool(
            supervised.grpc_url,
            models,
            ["torchscript_fp32", "torchscript_int8"],
            "torchscript_fp32",
            LatencyBook(),
            repository=serving_artifacts.repository,
            control_key=supervised.control_key,
        )
        pool.load_first(["two_tower", "rbm"])  # a fusion that weights RBM and not SAE
        assert pool.first == [{"rbm_torchscript_fp32"}]  # no two-tower or full-rung model in this pool's repository
        # The versions the bundle pins: other tests add versions (some broken on purpose) to the
        # shared repository, so the newest folder is not necessarily loadable.
        pins = load_bundle(serving_artifacts.bundle).manifest["repository"]
        pool.want("test", {m: str(pins[m]) for m in models})
        await pool.open()
        try:
            seen = []
            for _ in range(3):
                assert await pool.refresh(load=True, staged=True)
                seen.append(set(pool.ready))
            return seen
        finally:
            await pool.close()

    seen = asyncio.run(refresh_thrice())
    assert seen[0] == {"rbm_torchscript_fp32"}, seen  # the full plan's, at the first check
    assert seen[1] == {"rbm_torchscript_fp32", "sae_torchscript_fp32"}, seen  # the default variant's rest
    assert seen[2] == set(models), seen  # the other variants at the next


@pytest.mark.slow
def test_a_crash_is_restarted_at_once_and_a_crash_loop_backs_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first exit is restarted without delay (each second is a second of degraded answers); an
    exit soon after that restart waits the first backoff step, so a Triton that keeps dying cannot spin."""
    (tmp_path / "repository").mkdir()
    with (
        caplog.at_level(logging.WARNING, logger="server.triton.launcher"),
        EmbeddedTriton(tmp_path / "repository", supervise=True) as triton,
    ):
        for _ in range(2):
            restarts = triton.restarts
            assert triton.process is not None
            os.killpg(triton.process.pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while triton.restarts == restarts and time.monotonic() < deadline:
                time.sleep(0.05)
            assert triton.restarts == restarts + 1 and triton.is_ready()
    waits = [r.getMessage().rsplit("restarting in ", 1)[1] for r in caplog.records if "restarting in" in r.getMessage()]
    assert waits == ["0.0 s", "0.5 s"], waits
