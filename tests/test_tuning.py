"""The validation-only search: defaults first, every trial logged, chosen settings as an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from training import train, tuning
from training.models.base import TrainingData
from training.pipeline import make_config
from training.tuning import SPACES, _default_params, tune


def test_every_space_names_real_settings_and_starts_from_the_defaults() -> None:
    for name in SPACES:
        params = _default_params(name)
        config = make_config(name)
        for key, value in params.items():
            current = getattr(config, key)
            assert (current[0] if isinstance(current, tuple) else current) == value, (name, key)


def test_tune_keeps_the_best_validation_trial(tiny_data: TrainingData) -> None:
    seen: list[tuple[str, int, float]] = []
    result = tune(
        tiny_data,
        ["rbm"],
        budget_minutes=0.05,
        device="cpu",
        max_epochs=2,
        fixed={"rbm": {"cd_k": 1}},
        on_trial=lambda m, n, o, v, s, state: seen.append((m, n, v)),
    )
    trials = result.trials["rbm"]
    assert trials and seen[0][:2] == ("rbm", 0)
    assert result.best["rbm"] == max(t["ndcg@10"] for t in trials)
    assert result.settings["rbm"]["cd_k"] == 1  # a fixed setting is never searched
    make_config("rbm", result.settings["rbm"])  # the chosen settings are a valid config


def test_models_take_turns_so_each_gets_trials_within_the_budget(tiny_data: TrainingData) -> None:
    """One trial per model per round, not a fixed share of the time each: an expensive model is not
    left with its default trial while a cheap one gets the rest of its share."""
    seen: list[tuple[str, int]] = []
    result = tune(
        tiny_data,
        ["rbm", "two_tower"],
        budget_minutes=10.0,
        device="cpu",
        max_epochs=2,
        max_trials=3,
        on_trial=lambda m, n, o, v, s, state: seen.append((m, n)),
    )
    assert seen == [("rbm", 0), ("two_tower", 0), ("rbm", 1), ("two_tower", 1), ("rbm", 2), ("two_tower", 2)]
    assert {m: len(t) for m, t in result.trials.items()} == {"rbm": 3, "two_tower": 3}


def test_a_trial_that_would_not_fit_what_is_left_is_not_started(tiny_data: TrainingData) -> None:
    seen: list[str] = []
    result = tune(
        tiny_data,
        ["rbm"],
        budget_minutes=1e-6,  # over once the default trial ends: it runs (a study needs one), no other
        device="cpu",
        max_epochs=1,
        on_trial=lambda m, n, o, v, s, state: seen.append(m),
    )
    assert seen == ["rbm"] and len(result.trials["rbm"]) == 1


def test_trials_are_capped_and_a_hopeless_one_is_pruned(
    tiny_data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    default_lr = make_config("sae").ranking_lr
    # Two points: the defaults and a learning rate too small to move the ranking path off its random start.
    monkeypatch.setitem(
        SPACES, "sae", lambda t: {"ranking_lr": t.suggest_categorical("ranking_lr", [default_lr, 1e-9])}
    )
    monkeypatch.setattr(tuning, "TRIAL_MAX_EPOCHS", 6)
    monkeypatch.setattr(tuning, "PRUNE_STARTUP_TRIALS", 1)
    monkeypatch.setattr(tuning, "PRUNE_WARMUP_EPOCHS", 1)
    states: list[str] = []
    result = tune(
        tiny_data,
        ["sae"],
        budget_minutes=10.0,
        device="cpu",
        fixed={"sae": {"patience": 100}},
        max_trials=4,
        on_trial=lambda m, n, o, v, s, state: states.append(state),
    )
    trials = result.trials["sae"]
    assert states == [t["state"] for t in trials]  # every trial is reported, pruned ones too
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned and all(t["params"]["ranking_lr"] == 1e-9 for t in pruned)
    assert all(t["best_epoch"] < 6 for t in trials if t["state"] == "complete")
    assert result.settings["sae"]["ranking_lr"] == default_lr


def test_tune_cli_logs_trials_and_the_chosen_settings(
    synthetic_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = train.main(
        [
            "--data",
            str(synthetic_dirs["ml-100k"]),
            "--state-dir",
            str(tmp_path),
            "--tune",
            "--budget-minutes",
            "0.05",
            "--models",
            "rbm",
            "--max-epochs",
            "2",
            "--device",
            "cpu",
            "--no-progress",
            "--set",
            "rbm.hidden=8",
        ]
    )
    chosen = summary["tuned_settings.json"]["settings"]["rbm"]
    assert chosen["hidden"] == 8  # --set wins over the search
    runs = mlflow.search_runs(experiment_names=["recsys-training"], output_format="list")
    tune_run = next(r for r in runs if r.info.run_name == "tune")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == tune_run.info.run_id]
    assert trials and all("validation_ndcg_at_10" in r.data.metrics for r in trials)
    saved = Path(mlflow.artifacts.download_artifacts(run_id=tune_run.info.run_id, artifact_path="tuned_settings.json"))
    assert json.loads(saved.read_text())["settings"]["rbm"] == chosen
