"""Hyperparameter search on the validation slice carved from train (never the test part).

    python -m training.train --tune --budget-minutes 20

Optuna's TPE sampler searches each learned model's space (below) for the best validation
NDCG@10; the epoch count is not searched but found by early stopping on the same slice inside
every trial. The first trial of each study is the model's default config, so a search can only
keep or improve on the defaults. The fusion weights are then searched by ``fit_fusion`` over
the tuned members, also on validation. The models take turns, one trial each per round, while
the budget lasts: a model's trial starts only if its median trial time so far still fits what is
left (each model's first trial, its defaults, always runs), so a cheap model goes on alone once an
expensive one no longer fits. An even split of the time instead gave the SAE (~45 s a trial on
ml-100k) only its default trial while the two-tower model (~3 s) got dozens. Trials
are cheapened (``TRIAL_*``, ``PRUNE_*`` below) so that several fit a small budget: capped epochs
and patience, the SAE's rating paths skipped, and a median pruner on per-epoch validation NDCG@10.

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
4. Each change gets a row in docs/models-and-quality.md "How the defaults were derived", with the
   validation figures.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from training.models.base import TrainingData
from training.models.fitting import listening

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

# Settings every trial runs with that the final training does not: a trial is judged on NDCG@10,
# so the SAE skips both rating paths (they never feed its ranking scores). Settings pinned by the
# caller win.
TRIAL_ONLY: dict[str, dict[str, Any]] = {"sae": {"item_hidden": None, "train_rating_path": False}}
# What makes trials cheap enough that several fit a small budget: an epoch cap and a shorter
# patience (best epochs on ml-100k u1 are 5-30; a trial only has to rank settings, the final
# training runs the model's own patience), and a median pruner on the per-epoch validation
# NDCG@10 that stops a trial below the median of earlier trials at the same epoch.
TRIAL_MAX_EPOCHS, TRIAL_PATIENCE = 60, 8
PRUNE_STARTUP_TRIALS, PRUNE_WARMUP_EPOCHS = 2, 5


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
    on_trial: Callable[..., None] | None = None,
    prune: bool = True,
    max_trials: int | None = None,
) -> TuningResult:
    """Search each of ``names`` in turns within ``budget_minutes``; ``fixed`` settings are never searched.

    ``on_trial(model, number, overrides, ndcg, seconds, state=...)`` sees every trial, pruned ones
    (state ``"pruned"``, with their last validated NDCG@10) included.
    """
    started = time.perf_counter()
    deadline = started + 60.0 * budget_minutes
    searched = [n for n in names if n in SPACES]
    result = TuningResult({}, {})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies: dict[str, optuna.Study] = {}
    seconds: dict[str, list[float]] = {name: [] for name in searched}
    for name in searched:
        studies[name] = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(PRUNE_STARTUP_TRIALS, PRUNE_WARMUP_EPOCHS),
        )
        studies[name].enqueue_trial(_default_params(name))

    def fits(name: str) -> bool:
        if max_trials is not None and len(seconds[name]) >= max_trials:
            return False
        spent = seconds[name]
        return not spent or statistics.median(spent) <= deadline - time.perf_counter()

    while turn := [name for name in searched if fits(name)]:
        for name in turn:
            if not fits(name):  # the others' trials of this round used the time
                continue
            trial_started = time.perf_counter()
            _run_trial(
                studies[name], name, data, (fixed or {}).get(name, {}), seed, device, max_epochs, prune, on_trial
            )
            seconds[name].append(time.perf_counter() - trial_started)
    for name, study in studies.items():
        best = study.best_trial
        result.settings[name] = {
            **SPACES[name](optuna.trial.FixedTrial(best.params)),
            **dict((fixed or {}).get(name, {})),
        }
        result.best[name] = study.best_value
        result.trials[name] = [
            {
                "number": t.number,
                "params": t.params,
                "state": t.state.name.lower(),
                "ndcg@10": t.value,
                "last_ndcg@10": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None,
                "best_epoch": t.user_attrs.get("best_epoch"),
            }
            for t in study.trials
        ]
        log.info(
            "tuned model=%s trials=%d pruned=%d best ndcg@10=%.4f settings=%s",
            name,
            len(study.trials),
            sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            best.value,
            result.settings[name],
        )
    result.seconds = time.perf_counter() - started
    return result


def _run_trial(
    study: optuna.Study,
    name: str,
    data: TrainingData,
    pinned: Mapping[str, Any],
    seed: int,
    device: str,
    max_epochs: int | None,
    prune: bool,
    on_trial: Callable[..., None] | None,
) -> None:
    """One trial of ``name``'s study: train with the sampled settings (capped, pruned on the
    per-epoch validation NDCG@10), tell the study its validation NDCG@10."""
    from training.models.base import validation_metrics
    from training.pipeline import MODELS, make_config

    trial = study.ask()
    overrides = {**SPACES[name](trial), **pinned}
    config = make_config(
        name, {**TRIAL_ONLY.get(name, {}), **overrides}, seed=seed, device=device, max_epochs=max_epochs
    )
    config = replace(
        config, max_epochs=min(config.max_epochs, TRIAL_MAX_EPOCHS), patience=min(config.patience, TRIAL_PATIENCE)
    )
    started = time.perf_counter()
    last = {"ndcg@10": 0.0}

    def report(fit_name: str, monitor: str, epoch: int, record: dict[str, float]) -> None:
        if monitor != "ndcg@10":
            return
        last["ndcg@10"] = record[monitor]
        trial.report(record[monitor], epoch)
        if prune and trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: ndcg@10 {record[monitor]:.4f} below the median")

    try:
        with listening(report):
            model, history = MODELS[name][0](data, config, progress=False)
    except optuna.TrialPruned:
        seconds = time.perf_counter() - started
        log.info("tune model=%s trial=%d pruned seconds=%.0f %s", name, trial.number, seconds, overrides)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        if on_trial is not None:
            on_trial(name, trial.number, overrides, last["ndcg@10"], seconds, state="pruned")
        return
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    value = validation_metrics(model, data).get("ndcg@10", 0.0)
    trial.set_user_attr("best_epoch", history.best_epoch)
    study.tell(trial, value)
    seconds = time.perf_counter() - started
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
        on_trial(name, trial.number, overrides, value, seconds, state="complete")
