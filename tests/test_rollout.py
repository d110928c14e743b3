"""Rollouts against the real embedded Triton: pinned versions, refused bundles, the stages, rollback
(by hand and by a guardrail), two replicas converging on one bundle, one restarted mid-rollout.

Candidates are copies of the session's exported bundle as new bundle and model versions
(tests/rollout_bundles.py); the "bad" ones are broken in one way each.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from clients.admin import RolloutAdminClient, RolloutRefused
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from export.clone import clone_bundle, edit_manifest
from server.bundle import load_bundle
from server.router import bucket
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for

pytestmark = pytest.mark.slow
USERS = [str(u) for u in range(1, 61)]


@pytest.fixture(scope="module")
def bundles(serving_artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    live = root / "1"
    shutil.copytree(load_bundle(serving_artifacts.bundle).folder, live)
    repo = serving_artifacts.repository
    return {
        "live": live,
        "good": clone_bundle(live, root / "2", repo, model_version=2, bundle_version=2),
        "wrong": clone_bundle(live, root / "3", repo, model_version=3, bundle_version=3, scramble=True),
        "root": root,
    }


# For tests about stages and replicas, not guardrails: under a busy CI machine a good candidate's
# degraded share or latency can drift past a threshold and roll it back mid-test.
NO_GUARDRAILS = {"rollout_min_samples": 10**9}


def start(
    serving_artifacts: Artifacts, triton: EmbeddedTriton, bundle: Path, state: Path, **overrides: object
) -> ServerThread:
    # Loose latency guardrails: on 2 shared cores a tiny window's p99 is noise; the overlap one is tested.
    values = {
        "rollout_drain_s": 1.0,
        "health_interval_s": 0.2,
        "rollout_shadow_share": 1.0,
        "rollout_min_samples": 20,
        "rollout_max_p99_ratio": 10.0,
        "rollout_p99_slack_ms": 100.0,
        # fp32 only: every model version is a Triton load of seconds, twice as many with int8.
        "variants": ["torchscript_fp32"],
        **overrides,
    }
    settings = settings_for(
        Artifacts(serving_artifacts.repository, bundle, serving_artifacts.models), triton.grpc_url, state, **values
    )
    return ServerThread(settings).start()


@pytest.fixture()
def stack(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, bundles: dict[str, Path], tmp_path: Path
) -> Iterator[ServerThread]:
    server = start(serving_artifacts, serving_triton, bundles["live"], tmp_path)
    yield server
    server.stop()


def admin_of(server: ServerThread) -> RolloutAdminClient:
    assert server.server is not None
    return RolloutAdminClient(f"127.0.0.1:{server.server.admin_port}", timeout=120)


def answers(server: ServerThread, users: list[str] = USERS) -> dict[str, str]:
    """user -> bundle version that answered; every model call must be that bundle's pinned version."""
    out = {}
    with RecommenderClient(server.target, timeout=10, retry=NO_RETRY) as client:
        for user in users:
            result = client.recommend(user, k=10, budget_ms=3000)  # every model, however busy the cores
            assert all(c.ok for c in result.model_calls), result.model_calls
            pins = load_bundle_pins(server, result.bundle_version)
            assert {c.model: c.version for c in result.model_calls} == {
                c.model: pins[c.model] for c in result.model_calls
            }
            out[user] = result.bundle_version
    return out


def load_bundle_pins(server: ServerThread, version: str) -> dict[str, str]:
    assert server.server is not None
    for runtime in server.server.router.runtimes:
        if runtime.version == version:
            return runtime.pool.pins
    raise AssertionError(f"bundle {version} answered but this server has no runtime for it")


def triton_ready(triton: EmbeddedTriton, model: str) -> set[str]:
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        index = client.get_model_repository_index(as_json=True, headers=triton.control_headers)["models"]
    return {m.get("version", "") for m in index if m["name"] == model and m.get("state") == "READY"}


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_readiness_needs_the_pinned_versions(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, bundles: dict[str, Path], tmp_path: Path
) -> None:
    absent = tmp_path / "bundles" / "9"
    shutil.copytree(bundles["live"], absent)
    pinned = json.loads((absent / "manifest.json").read_text())["repository"]
    edit_manifest(absent, repository={m: 77 for m in pinned})
    # Another bundle's versions already loaded (as in a full test run): Triton then accepts a load of
    # {those, 77} without folder 77, which the pool must count as failed (it once reloaded forever).
    for model in pinned:
        if model.endswith("_fp32"):
            serving_triton.load(model)
    server = start(serving_artifacts, serving_triton, absent, tmp_path / "state")
    try:
        with RecommenderClient(server.target, timeout=5, retry=NO_RETRY) as client:
            # Readiness means "can answer" (degraded without its models); the Triton health service is
            # what needs the bundle's own versions: version 1 is loaded, but this bundle pins 77.
            assert client.health() == "SERVING"
            assert client.health("recsys.v1.Triton") == "NOT_SERVING"
    finally:
        server.stop()


def _tamper_id_maps(folder: Path, repository: Path) -> None:
    maps = json.loads((folder / "id_maps.json").read_text())
    maps["items"][0], maps["items"][1] = maps["items"][1], maps["items"][0]
    (folder / "id_maps.json").write_text(json.dumps(maps))


def _tamper_golden(folder: Path, repository: Path) -> None:
    golden = json.loads((folder / "golden.json").read_text())
    for request in golden["requests"]:
        for name, values in request["outputs"].items():
            if name.startswith("TOP_IDX"):
                request["outputs"][name] = values[::-1][:3] + [v + 100000 for v in values[3:]]
    (folder / "golden.json").write_text(json.dumps(golden))


def _broken_model(folder: Path, repository: Path) -> None:
    (repository / "sae_torchscript_fp32" / "98").mkdir(exist_ok=True)
    (repository / "sae_torchscript_fp32" / "98" / "model.pt").write_bytes(b"not a TorchScript file")
    pins = json.loads((folder / "manifest.json").read_text())["repository"]
    edit_manifest(folder, repository={**pins, "sae_torchscript_fp32": 98})


BAD = {
    "id maps": (_tamper_id_maps, "id_maps.json is not the one its manifest was written with"),
    "schema": (lambda f, r: edit_manifest(f, schema_version=99), "schema version 99"),
    "sizes": (lambda f, r: edit_manifest(f, catalog={"items": 5, "users": 3}), "does not fit together"),
    "missing files": (lambda f, r: edit_manifest(f, repository={"sae_torchscript_fp32": 42}), "has no version of"),
    "missing version folder": (
        lambda f, r: edit_manifest(
            f, repository={**json.loads((f / "manifest.json").read_text())["repository"], "rbm_torchscript_fp32": 42}
        ),
        "model files missing",
    ),
    "no golden": (lambda f, r: (f / "golden.json").unlink(), "no golden requests"),
    "parity": (_tamper_golden, "golden requests fail"),
    "triton cannot load": (_broken_model, "Triton could not load sae_torchscript_fp32"),
}


def test_pinned_versions_and_bad_bundles_refused(
    stack: ServerThread,
    bundles: dict[str, Path],
    serving_artifacts: Artifacts,
    serving_triton: EmbeddedTriton,
    tmp_path: Path,
) -> None:
    assert set(answers(stack).values()) == {"1"}  # every model call names bundle 1's version (answers checks)
    with admin_of(stack) as admin:
        for number, (case, (breaks, message)) in enumerate(BAD.items(), start=20):
            folder = tmp_path / str(number)
            shutil.copytree(bundles["good"], folder)
            edit_manifest(folder, bundle_version=number)
            breaks(folder, serving_artifacts.repository)
            with pytest.raises(RolloutRefused, match=message):
                admin.start(str(folder))
            assert admin.get().stage == "idle", case
        with pytest.raises(RolloutRefused, match="is the live bundle"):
            admin.start(str(bundles["live"]))
        assert set(answers(stack).values()) == {"1"}
        # Another version of every model loaded beside bundle 1's does not move its calls (shadow).
        admin.start(str(bundles["good"]))
        assert set(answers(stack).values()) == {"1"}
        assert triton_ready(serving_triton, "sae_torchscript_fp32") >= {"1", "2"}
        # A second rollout while one runs.
        with pytest.raises(RolloutRefused, match="is at stage shadow"):
            admin.start(str(bundles["wrong"]))
        admin.rollback("test over")


def test_stages_then_promoted_bundle_survives_a_restart(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, bundles: dict[str, Path], tmp_path: Path
) -> None:
    server = start(serving_artifacts, serving_triton, bundles["live"], tmp_path, **NO_GUARDRAILS)
    try:
        with admin_of(server) as admin:
            assert admin.start(str(bundles["good"])).stage == "shadow"
            state = admin.promote("canary", 50)
            assert (state.stage, state.canary_percent) == ("canary", 50)
            expected = {u: "2" if bucket(u) < 5000 else "1" for u in USERS}
            assert answers(server) == expected == answers(server)  # stable per user
            assert server.server is not None
            drift = server.server.drift  # watches the live bundle's answers only, against its reference
            assert drift.version == "1" and len(drift.windows["history_length"]) == list(expected.values()).count("1")
            assert admin.promote().stage == "full"
            assert set(answers(server).values()) == {"2"}
            state = admin.promote()
            assert (state.stage, state.promoted_bundle, state.outcome) == ("idle", "2", "retired")
            # Promoted: the monitor follows bundle 2's own reference, with empty windows.
            assert drift.version == "2" and drift.item_index is server.server.router.live.bundle.item_index
            assert not any(len(w) for w in drift.windows.values())
        eventually(lambda: "1" not in triton_ready(serving_triton, "sae_torchscript_fp32"))
    finally:
        server.stop()
    # Configured with bundle 1, a restarted server comes back on the promoted bundle 2.
    server = start(serving_artifacts, serving_triton, bundles["live"], tmp_path)
    try:
        assert set(answers(server).values()) == {"2"}
    finally:
        server.stop()


def test_rollback_by_hand_and_by_guardrail(
    stack: ServerThread, bundles: dict[str, Path], serving_triton: EmbeddedTriton
) -> None:
    with admin_of(stack) as admin:
        admin.start(str(bundles["good"]))
        admin.promote("canary", 100)
        state = admin.rollback("operator changed their mind")
        assert (state.stage, state.outcome) == ("idle", "rolled back (operator): operator changed their mind")
        assert set(answers(stack).values()) == {"1"}
        eventually(lambda: "2" not in triton_ready(serving_triton, "sae_torchscript_fp32"))
        # A wrong model that export shipped consistently: golden requests pass, the overlap guardrail does not.
        assert admin.start(str(bundles["wrong"])).stage == "shadow"
        deadline = time.monotonic() + 60
        while admin.get().stage != "idle":
            answers(stack, USERS[:20])
            assert time.monotonic() < deadline, admin.get()
        state = admin.get()
        assert state.outcome.startswith("rolled back (overlap): guardrail: top-10 overlap"), state.outcome
    assert stack.server is not None
    samples = stack.server.metrics.registry.get_sample_value("recsys_rollout_rollbacks_total", {"trigger": "overlap"})
    assert samples == 1


def test_two_replicas_converge_and_a_restarted_one_rejoins(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, bundles: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "shared"
    first = start(serving_artifacts, serving_triton, bundles["live"], state, **NO_GUARDRAILS)
    second = start(serving_artifacts, serving_triton, bundles["live"], state, **NO_GUARDRAILS)
    try:
        assert second.server is not None
        router = second.server.router
        with admin_of(first) as admin:
            admin.start(str(bundles["good"]))
            eventually(lambda: router.stage == "shadow")
            admin.promote("canary", 30)
            eventually(lambda: router.stage == "canary")
            assert answers(first) == answers(second)  # the same users on the same bundle on both replicas
            # A replica restarted mid-rollout comes back on the promoted bundle, never the candidate...
            second.stop()
            second = start(serving_artifacts, serving_triton, bundles["live"], state, **NO_GUARDRAILS)
            assert second.server is not None
            router = second.server.router
            assert (router.live.version, router.candidate) == ("1", None)
            # ...then rejoins the rollout where the pointer says it is.
            eventually(lambda: router.candidate is not None and router.stage == "canary")
            assert answers(first) == answers(second)
            admin.promote("full")
            eventually(lambda: router.stage == "full")
            admin.promote("retire")
        eventually(lambda: router.live.version == "2" and router.candidate is None)
        assert set(answers(first).values()) == set(answers(second).values()) == {"2"}
    finally:
        first.stop()
        second.stop()
