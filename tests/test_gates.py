"""Baseline gates: models that do not beat popularity are not promoted, fused or exported."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from export.registry import ExportError, check_members
from training import tracking
from training.gates import MARGIN_ENV, decide, gate_all, margin_from_settings
from training.models.base import TrainingData
from training.pipeline import gate_and_fuse, train_models

TAGS = {"data_fingerprint": "abc", "split": "u1", "validation_seed": "0"}
VALIDATION = {"popularity": {"ndcg@10": 0.10}, "good": {"ndcg@10": 0.12}, "close": {"ndcg@10": 0.104}}


def test_the_bar_is_popularity_times_one_plus_margin() -> None:
    decisions = gate_all(VALIDATION, margin=0.05)
    assert decisions["good"].passed and decisions["good"].bar == pytest.approx(0.105)
    assert not decisions["close"].passed and "does not beat popularity" in decisions["close"].reason
    assert decisions["popularity"].passed  # the baseline is the floor, not a candidate
    assert decide("close", VALIDATION, margin=0.0).passed
    assert decide("close", {**VALIDATION, "close": {"ndcg@10": 0.001}}, margin=-1.0).passed  # gate off
    assert not decide("missing", VALIDATION, 0.05).passed


def test_margin_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MARGIN_ENV, "0.2")
    assert margin_from_settings() == 0.2 and margin_from_settings(0.01) == 0.01
    monkeypatch.setenv(MARGIN_ENV, "lots")
    with pytest.raises(ValueError, match=MARGIN_ENV):
        margin_from_settings()
    with pytest.raises(ValueError, match="margin"):
        margin_from_settings(-1.5)


def test_a_failing_member_is_left_out_of_the_fusion_with_its_reason(
    tiny_data: TrainingData, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        # No model can beat popularity by 500%: every learned member must be gated out.
        result = train_models(
            tiny_data, ["sae"], {"sae": {"max_epochs": 2}}, progress=False, device="cpu", gate_margin=5.0
        )
    assert not result.gates["sae"].passed and not result.gates["ensemble"].passed
    assert result.ensemble is not None
    assert set(result.ensemble.members) == {"popularity"}
    assert "fusion leaves out model=sae" in caplog.text and "does not beat popularity" in caplog.text


def test_the_fitted_fusion_is_never_below_its_best_member_on_validation(tiny_data: TrainingData) -> None:
    result = train_models(
        tiny_data,
        ["sae", "two_tower"],
        {"sae": {"max_epochs": 3}, "two_tower": {"max_epochs": 3}},
        progress=False,
        device="cpu",
        gate_margin=0.0,
    )
    assert result.ensemble is not None
    members = result.ensemble.members
    assert result.validation["ensemble"]["ndcg@10"] >= max(result.validation[m]["ndcg@10"] for m in members)


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure(tmp_path)
    return MlflowClient()


def _register(client: MlflowClient, tmp_path: Path, model: str, score: float, passed: bool | None) -> dict:
    gate = None if passed is None else decide(model, {"popularity": {"ndcg@10": 0.2}, model: {"ndcg@10": score}}, 0.05)
    assert gate is None or gate.passed == passed
    with mlflow.start_run() as run:
        (tmp_path / "m").mkdir(exist_ok=True)
        (tmp_path / "m" / "model.json").write_text("{}")
        mlflow.log_artifacts(str(tmp_path / "m"), artifact_path="model")
        return tracking.register(client, model, run.info.run_id, mlflow.get_artifact_uri("model"), score, TAGS, gate)


def test_a_gated_out_version_is_registered_but_never_champion(store: MlflowClient, tmp_path: Path) -> None:
    failed = _register(store, tmp_path, "rbm", 0.1, passed=False)
    assert failed["version"] == 1 and not failed["champion"] and failed["gate"] == "failed"
    version = store.get_model_version("recsys-rbm", "1")
    assert version.tags["gate"] == "failed" and "does not beat popularity" in version.tags["gate_reason"]
    passed = _register(store, tmp_path, "rbm", 0.3, passed=True)
    assert passed["champion"] and passed["gate"] == "passed"


def test_export_refuses_an_ensemble_with_a_gated_out_member(store: MlflowClient, tmp_path: Path) -> None:
    _register(store, tmp_path, "sae", 0.3, passed=True)  # v1: champion, gated in
    _register(store, tmp_path, "rbm", 0.1, passed=False)  # v1: gated out
    _register(store, tmp_path, "sae", 0.25, passed=True)  # v2: gated in, not champion
    check_members(store, {"sae": 1})
    check_members(store, {"sae": 2})
    with pytest.raises(ExportError, match=r"recsys-rbm v1 \(validation ndcg@10 0.1000 does not beat"):
        check_members(store, {"sae": 1, "rbm": 1})


def test_an_ungated_version_ships_only_as_champion(store: MlflowClient, tmp_path: Path) -> None:
    """Versions registered before gates existed carry no gate tag: only the champion is trusted."""
    first = _register(store, tmp_path, "sae", 0.3, passed=True)
    source = store.get_model_version("recsys-sae", str(first["version"]))
    assert source.source is not None
    old = store.create_model_version("recsys-sae", source=source.source, run_id=source.run_id, tags=TAGS)
    store.set_registered_model_alias("recsys-sae", tracking.CHAMPION, old.version)
    check_members(store, {"sae": 2})
    store.set_registered_model_alias("recsys-sae", tracking.CHAMPION, "1")
    with pytest.raises(ExportError, match="registered without a baseline gate"):
        check_members(store, {"sae": 2})


def test_ease_is_gated_and_fused_like_the_learned_members(tiny_data: TrainingData) -> None:
    result = train_models(tiny_data, ["ease"], progress=False, device="cpu", gate_margin=0.0)
    gate = result.gates["ease"]
    assert gate.passed and gate.ndcg == result.validation["ease"]["ndcg@10"] > gate.bar
    assert (
        result.ensemble is not None and "ease" in result.ensemble.spec.weights
    )  # a member the fusion fit weighs (zero is its call)
    shut = train_models(tiny_data, ["ease"], progress=False, device="cpu", gate_margin=5.0)
    assert shut.ensemble is not None
    assert not shut.gates["ease"].passed and set(shut.ensemble.members) == {"popularity"}


def test_export_refuses_four_members_unless_each_is_champion_or_gated_in(store: MlflowClient, tmp_path: Path) -> None:
    members = ("sae", "rbm", "two_tower", "ease")
    for model in members:
        _register(store, tmp_path, model, 0.3, passed=True)
    check_members(store, dict.fromkeys(members, 1))
    _register(store, tmp_path, "ease", 0.1, passed=False)  # v2: gated out
    with pytest.raises(ExportError, match=r"recsys-ease v2 \(validation ndcg@10 0.1000 does not beat"):
        check_members(store, {**dict.fromkeys(members, 1), "ease": 2})


def test_models_trained_apart_fuse_as_one_call_does(tiny_data: TrainingData) -> None:
    """The fold bench trains each model in a task of its own and gates and fuses them once."""
    quick = {"rbm": {"max_epochs": 3}, "two_tower": {"max_epochs": 3}}
    whole = train_models(tiny_data, ["rbm", "two_tower", "ease"], quick, progress=False, device="cpu")
    merged = train_models(tiny_data, ["ease"], progress=False, device="cpu", ensemble=False)
    assert merged.ensemble is None
    for name in ("rbm", "two_tower"):
        part = train_models(tiny_data, [name], quick, progress=False, device="cpu", ensemble=False)
        merged.models[name], merged.validation[name] = part.models[name], part.validation[name]
        merged.train_seconds[name] = part.train_seconds[name]
    gate_and_fuse(merged)
    assert merged.ensemble is not None and whole.ensemble is not None
    assert merged.ensemble.spec == whole.ensemble.spec and merged.validation == whole.validation
    assert {n: g.passed for n, g in merged.gates.items()} == {n: g.passed for n, g in whole.gates.items()}
