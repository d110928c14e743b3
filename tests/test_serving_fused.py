"""The full-rung model end to end (issue #14): the whole two-stage ensemble in one Triton call.

Two servers on one Triton, the full-rung model tried first (``fused_full_rung``) or not: the
answers are the same. The full-rung model is the real one behind the test-only slow model
(tests/fixtures/slow_model.py), so it can be made to fail or to turn slow: the per-model plans
answer instead, never an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from recsys import contract

from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from server.bundle import load_bundle
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for, slow_repository

pytestmark = pytest.mark.slow  # starts the embedded Triton and two servers

FULL_RUNG = contract.model_name(contract.FULL_RUNG, "torchscript_fp32")
PER_MODEL = {
    *(f"{m}_torchscript_fp32" for m in contract.CATALOG_SCORERS),
    "two_tower_user_torchscript_fp32",
    "two_tower_items_torchscript_fp32",
}


@pytest.fixture(scope="module")
def delay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("delay") / "full_rung_delay_ms"
    path.write_text("0")
    return path


@pytest.fixture(scope="module")
def artifacts(serving_artifacts: Artifacts, delay: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    repository = slow_repository(serving_artifacts, tmp_path_factory.mktemp("fused") / "repo", {FULL_RUNG: delay})
    return Artifacts(repository, serving_artifacts.bundle, serving_artifacts.models)


@pytest.fixture(scope="module")
def triton(artifacts: Artifacts) -> Iterator[EmbeddedTriton]:
    with EmbeddedTriton(artifacts.repository, startup_timeout=120) as server:
        yield server


def _server(artifacts: Artifacts, triton: EmbeddedTriton, state: Path, fused: bool) -> ServerThread:
    return ServerThread(settings_for(artifacts, triton.grpc_url, state, fused_full_rung=fused, latency_max_age_s=3.0))


@pytest.fixture(scope="module")
def servers(
    artifacts: Artifacts, triton: EmbeddedTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[bool, ServerThread]]:
    with (
        _server(artifacts, triton, tmp_path_factory.mktemp("on"), True) as on,
        _server(artifacts, triton, tmp_path_factory.mktemp("off"), False) as off,
    ):
        yield {True: on, False: off}


@pytest.fixture(scope="module")
def users(serving_artifacts: Artifacts) -> list[str]:
    bundle = load_bundle(serving_artifacts.bundle)
    rows = np.flatnonzero(np.diff(bundle.histories.indptr) >= 15)[:6]
    index_to_user = {i: u for u, i in bundle.user_index.items()}
    return [index_to_user[int(r)] for r in rows]


def test_one_call_answers_what_the_per_model_calls_answer(servers: dict[bool, ServerThread], users: list[str]) -> None:
    with (
        RecommenderClient(servers[True].target, timeout=10, retry=NO_RETRY) as on,
        RecommenderClient(servers[False].target, timeout=10, retry=NO_RETRY) as off,
    ):
        for user in users:
            fused = on.recommend(user, k=10, explain=True, budget_ms=2000)
            per_model = off.recommend(user, k=10, explain=True, budget_ms=2000)
            assert (fused.plan, fused.degraded, per_model.plan, per_model.degraded) == ("fused", False, "full", False)
            # The model that answered: one call to the full-rung model instead of one per model.
            assert [(c.model, c.ok) for c in fused.model_calls] == [(FULL_RUNG, True)]
            assert {c.model for c in per_model.model_calls} == PER_MODEL
            assert [i.item_id for i in fused.items] == [i.item_id for i in per_model.items], user
            np.testing.assert_allclose([i.score for i in fused.items], [i.score for i in per_model.items], rtol=1e-6)
            assert [i.reasons for i in fused.items] == [i.reasons for i in per_model.items], user
        # Filters apply at pick time either way; a filtered request takes the per-model plans, whose
        # rankers score only eligible candidates, so its answer is the same as without the full rung.
        filtered = on.recommend(users[0], k=5, genres=["Drama"], budget_ms=2000)
        assert filtered.plan == "full" and {c.model for c in filtered.model_calls} == PER_MODEL
        # One model alone, the content rung: never the full-rung model.
        alone = on.recommend(users[0], k=5, strategy="rbm", budget_ms=2000)
        assert [c.model for c in alone.model_calls] == ["rbm_torchscript_fp32"]


def test_a_failing_or_slow_full_rung_leaves_the_answer_to_the_per_model_plans(
    servers: dict[bool, ServerThread], delay: Path, users: list[str]
) -> None:
    user = users[1]
    with (
        RecommenderClient(servers[True].target, timeout=10, retry=NO_RETRY) as on,
        RecommenderClient(servers[False].target, timeout=10, retry=NO_RETRY) as off,
    ):
        expected = [i.item_id for i in off.recommend(user, k=10, budget_ms=2000).items]
        try:
            delay.write_text("fail")
            failed = on.recommend(user, k=10, budget_ms=2000)
            assert failed.plan == "full:after_fused" and not failed.degraded, failed.degraded_reasons
            assert failed.model_calls[0].model == FULL_RUNG and not failed.model_calls[0].ok
            assert {c.model for c in failed.model_calls[1:] if c.ok} == PER_MODEL
            assert [i.item_id for i in failed.items] == expected
            # Not tried again at once: the next answers come straight from the per-model plan.
            again = on.recommend(user, k=10, budget_ms=2000)
            assert again.plan == "full" and FULL_RUNG not in {c.model for c in again.model_calls}
            time.sleep(5.5)  # the retry pause (server.recommend.FUSED_RETRY_S)
            delay.write_text("3000")
            started = time.perf_counter()
            late = on.recommend(user, k=10, budget_ms=1500)
            wall_ms = (time.perf_counter() - started) * 1000
            # Cut off early enough for the per-model plan to answer within the budget.
            # (A margin for a busy machine: uncut, the 3 s call alone would take twice the budget.)
            assert late.plan.endswith(":after_fused") and wall_ms < 1500 + 150, (late.plan, wall_ms)
            assert [i.item_id for i in late.items] == expected and not late.degraded, late.degraded_reasons
        finally:
            delay.write_text("0")
        time.sleep(5.5)  # the retry pause again; the slow sample has aged out (latency_max_age_s)
        back = on.recommend(user, k=10, budget_ms=2000)
        assert back.plan == "fused" and [i.item_id for i in back.items] == expected
