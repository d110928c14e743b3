"""Hyperparameter search on the validation slice carved from train (never the test part).

    python -m training.train --tune --budget-minutes 20

Optuna's TPE sampler searches each learned model's space (below) for the best validation
NDCG@10; the epoch count is not searched but found by early stopping on the same slice inside
every trial. The first trial of each study is the model's default config, so a search can only
keep or improve on the defaults. The fusion weights are then searched by ``fit_fusion`` over
the tuned members, also on validation. The budget is split evenly across models; a trial that
starts before its model's share runs out finishes, so a run can overshoot by one trial.

Every trial is an MLflow run nested under a ``tune`` run, and the chosen settings are logged
there as ``tuned_settings.json`` (and again with the training run that uses them).

How a search result becomes a default (what the model configs' defaults are meant to be):

1. Run ``--tune`` on every tuning data set: ml-100k u1 (its validation slice) and the synthetic
   10k-item holdout (``training.data.synthetic``). Never on u2-u5, the synthetic test parts or any
   held-back release: those stay checks.
2. For each searched setting, a new default must win on *every* tuning data set: the tuned
   trial's validation NDCG@10 beats the default trial (trial 0, the defaults) by more than 1%
   relative, about the spread between seeds. A setting that wins on one data set only stays.
3. The new value is the median of the chosen values over the data sets (on a log scale for
   learning rates and decays); a categorical takes the value most data sets chose.
4. Each change gets a row in README "How the defaults were derived", with the validation figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from training.models.base import TrainingData

log = logging.getLogger(__name__)
Space = Callable[[optuna.trial.BaseTrial], dict[str, Any]]  # a Trial while searching, a FixedTrial to replay

# Search spaces: hidden sizes, learning rate, corruption/dropout and negatives per positive.
SPACES: dict[str, Space] = {
    "sae": lambda t: {
        "ranking_hidden": [t.suggest_categorical("ranking_hidden", [100, 200, 400, 600])],
        "ranking_lr": t.suggest_float("ranking_lr", 3e-4, 3e-3, log=True),
        "input_dropout": t.suggest_float("input_dropout", 0.2, 0.8),
        "weight_decay": t.suggest_float("weight_decay", 1e-7, 1e-4, log=True),
    },
    "rbm": lambda t: {
        "hidden": t.suggest_categorical("hidden", [50, 100, 200, 400]),
        "lr": t.suggest_float("lr", 1e-3, 5e-2, log=True),
        "negatives": t.suggest_categorical("negatives", [3.0, 10.0, 30.0, None]),
        "weight_decay": t.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
    },
    "two_tower": lambda t: {
        "dim": t.suggest_categorical("dim", [32, 64, 128]),
        "hidden": t.suggest_categorical("hidden", [128, 256, 512]),
        "lr": t.suggest_float("lr", 5e-4, 5e-3, log=True),
        "history_dropout": t.suggest_float("history_dropout", 0.2, 0.8),
    },
}

# Settings every trial runs with that the final training does not: the SAE's item-based rating
# path never touches the ranking scores (it trains on its own random streams), so a trial judged
# on NDCG@10 skips it. Settings pinned by the caller win.
TRIAL_ONLY: dict[str, dict[str, Any]] = {"sae": {"item_hidden": None}}


@dataclass
class TuningResult:
    settings: dict[str, dict[str, Any]]  # model -> overrides chosen (empty: the defaults won)
    best: dict[str, float]  # model -> best validation NDCG@10
    trials: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0


def _default_params(name: str) -> dict[str, Any]:
    """The default config expressed in the search space's parameter names (the first trial)."""
    from training.pipeline import make_config

    config = make_config(name)
    params = {}
    for key in SPACES[name](optuna.trial.FixedTrial(_probe(name))):
        value = getattr(config, key)
        params[key] = value[0] if isinstance(value, tuple) else value
    return params


def _probe(name: str) -> dict[str, Any]:
    """Any valid point of a space, to read its parameter names without sampling."""
    recorder = optuna.create_study()
    trial = recorder.ask()
    SPACES[name](trial)
    return trial.params


def tune(
    data: TrainingData,
    names: list[str],
    budget_minutes: float,
    *,
    seed: int = 0,
    device: str = "auto",
    max_epochs: int | None = None,
    fixed: Mapping[str, Mapping[str, Any]] | None = None,
    on_trial: Callable[[str, int, dict[str, Any], float, float], None] | None = None,
) -> TuningResult:
    """Search each of ``names`` within its share of ``budget_minutes``; ``fixed`` settings are never searched."""
    from training.pipeline import MODELS

    started = time.perf_counter()
    searched = [n for n in names if n in SPACES]
    result = TuningResult({}, {})
    share = 60.0 * budget_minutes / max(1, len(searched))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in searched:
        pinned = dict((fixed or {}).get(name, {}))

        def objective(trial: optuna.Trial, name: str = name, pinned: dict[str, Any] = pinned) -> float:
            from training.models.base import validation_metrics
            from training.pipeline import make_config

            overrides = {**SPACES[name](trial), **pinned}
            config = make_config(
                name, {**TRIAL_ONLY.get(name, {}), **overrides}, seed=seed, device=device, max_epochs=max_epochs
            )
            trial_started = time.perf_counter()
            model, history = MODELS[name][0](data, config, progress=False)
            value = validation_metrics(model, data).get("ndcg@10", 0.0)
            trial.set_user_attr("best_epoch", history.best_epoch)
            seconds = time.perf_counter() - trial_started
            log.info(
                "tune model=%s trial=%d ndcg@10=%.4f best_epoch=%d seconds=%.0f %s",
                name,
                trial.number,
                value,
                history.best_epoch,
                seconds,
                overrides,
            )
            if on_trial is not None:
                on_trial(name, trial.number, overrides, value, seconds)
            return value

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.enqueue_trial(_default_params(name))
        study.optimize(objective, timeout=share, n_trials=None, catch=())
        best = study.best_trial
        result.settings[name] = {**SPACES[name](optuna.trial.FixedTrial(best.params)), **pinned}
        result.best[name] = study.best_value
        result.trials[name] = [
            {"number": t.number, "params": t.params, "ndcg@10": t.value, "best_epoch": t.user_attrs.get("best_epoch")}
            for t in study.trials
        ]
        log.info(
            "tuned model=%s trials=%d best ndcg@10=%.4f settings=%s",
            name,
            len(study.trials),
            best.value,
            result.settings[name],
        )
    result.seconds = time.perf_counter() - started
    return result
