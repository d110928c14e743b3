"""The plain parts of rollouts: guardrail verdicts, the canary hash, the pointer file, the schema check."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from server.bundle import BundleError, load_bundle
from server.guardrails import Guardrails
from server.rollout_state import PointerFile, RolloutState, promoted_bundle
from server.router import BUCKETS, bucket
from server.settings import Settings


def guardrails(**overrides: object) -> Guardrails:
    return Guardrails(Settings(rollout_min_samples=10, **overrides))  # type: ignore[arg-type]


def feed(g: Guardrails, candidate: bool, n: int, ms: float, error_every: int = 0, degraded_every: int = 0) -> None:
    for i in range(n):
        g.record(
            candidate, ms, bool(error_every and i % error_every == 0), bool(degraded_every and i % degraded_every == 0)
        )


def test_no_verdict_before_enough_samples() -> None:
    g = guardrails()
    feed(g, False, 50, 10.0)
    feed(g, True, 9, 500.0, error_every=1)
    assert g.breach() == ("", "")


@pytest.mark.parametrize(
    ("candidate_ms", "error_every", "degraded_every", "overlap", "trigger"),
    [
        (10.0, 0, 0, 0.9, ""),
        (10.0, 5, 0, 0.9, "error_rate"),
        (40.0, 0, 0, 0.9, "p99"),
        (10.0, 0, 4, 0.9, "degraded_share"),
        (10.0, 0, 0, 0.1, "overlap"),
    ],
)
def test_each_guardrail_fires_on_its_own(
    candidate_ms: float, error_every: int, degraded_every: int, overlap: float, trigger: str
) -> None:
    g = guardrails()
    feed(g, False, 100, 10.0)
    feed(g, True, 100, candidate_ms, error_every, degraded_every)
    for _ in range(20):
        g.record_overlap(overlap)
    assert g.breach()[0] == trigger


def test_p99_allows_the_ratio_and_the_slack() -> None:
    g = guardrails(rollout_max_p99_ratio=1.5, rollout_p99_slack_ms=5.0)
    feed(g, False, 100, 10.0)
    feed(g, True, 100, 19.9)  # under 10 x 1.5 + 5
    assert g.breach() == ("", "")


def test_canary_bucket_is_stable_and_spread() -> None:
    assert bucket("42") == bucket("42")  # sha1, not the per-process salted hash()
    share = sum(bucket(str(u)) < BUCKETS // 10 for u in range(5000)) / 5000
    assert 0.08 < share < 0.12


def _bump(folder: str) -> None:
    for _ in range(50):
        PointerFile(Path(folder)).update(lambda s: s.log("bump"))


def test_pointer_updates_from_processes_are_not_lost(tmp_path: Path) -> None:
    workers = [multiprocessing.Process(target=_bump, args=(str(tmp_path),)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert PointerFile(tmp_path).read().generation == 150


def test_a_refused_change_writes_nothing(tmp_path: Path) -> None:
    pointer = PointerFile(tmp_path)
    pointer.update(lambda s: setattr(s, "stage", "shadow"))

    def refuse(state: RolloutState) -> None:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        pointer.update(refuse)
    assert (pointer.read().generation, pointer.read().stage) == (1, "shadow")


def test_start_on_the_promoted_bundle_else_the_configured(tmp_path: Path) -> None:
    configured = tmp_path / "configured"
    assert promoted_bundle(tmp_path / "state", configured) == configured
    promoted = tmp_path / "b" / "2"
    promoted.mkdir(parents=True)
    (promoted / "manifest.json").write_text("{}")
    PointerFile(tmp_path / "state").update(lambda s: setattr(s, "promoted", str(promoted)))
    assert promoted_bundle(tmp_path / "state", configured) == promoted
    shutil.rmtree(promoted)
    assert promoted_bundle(tmp_path / "state", configured) == configured  # gone: the configured one, said so


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "manifest.json").write_text(json.dumps({"schema_version": 7, "scale": {"low": 1, "high": 5}}))
    with pytest.raises(BundleError, match="schema version 7"):
        load_bundle(tmp_path)
