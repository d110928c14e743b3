"""From a data set and a split to trained models, fitted fusion and their validation scores."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import scipy.sparse as sp

from training.data.dataset import MovieLens
from training.data.matrices import to_csr
from training.data.splits import Split, validation_split
from training.evaluation.ranking import ranking_task
from training.fusion import Ensemble, fit_fusion
from training.gates import GateDecision, decide, gate_all, margin_from_settings
from training.models import ease, popularity, rbm, sae, two_tower
from training.models.base import Scorer, TrainingData, read_meta, validation_metrics
from training.models.fitting import FitHistory

log = logging.getLogger(__name__)

# name -> (train function, config class, loader)
MODELS: dict[str, tuple[Callable[..., Any], type, Callable[[Path], Scorer]]] = {
    "popularity": (popularity.train, popularity.PopularityConfig, popularity.Popularity.load),
    "sae": (sae.train, sae.SAEConfig, sae.SAE.load),
    "rbm": (rbm.train, rbm.RBMConfig, rbm.RBM.load),
    "two_tower": (two_tower.train, two_tower.TwoTowerConfig, two_tower.TwoTower.load),
    "ease": (ease.train_member, ease.EASEConfig, ease.EASE.load),
}
# The mission models must each beat popularity on their own (issue #11); EASE, closed form, joins
# them as a fusion member and is trained and served like them.
MISSION = ("sae", "rbm", "two_tower")
LEARNED = (*MISSION, "ease")


@dataclass
class TrainedModels:
    models: dict[str, Scorer]
    histories: dict[str, FitHistory]
    train_seconds: dict[str, float]
    validation: dict[str, dict[str, float]]  # validation metrics per model (and "ensemble")
    data: TrainingData
    ensemble: Ensemble | None = None
    gates: dict[str, GateDecision] = field(default_factory=dict)  # baseline gate per model (and "ensemble")


def prepare(dataset: MovieLens, split: Split, val_fraction: float = 0.1, seed: int = 0) -> TrainingData:
    """Learn from ``split.train`` minus a per-user validation slice; stop and fit weights on that slice."""
    carved = validation_split(split.train, fraction=val_fraction, seed=seed)
    fit_matrix = to_csr(carved.train, dataset.n_users, dataset.n_items)
    return TrainingData(dataset, fit_matrix, ranking_task(fit_matrix, carved.test), carved.test)


def make_config(name: str, overrides: Mapping[str, Any] | None = None, **common: Any) -> Any:
    """The model's config with ``overrides`` (and common keys like seed/device where it has them)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    cls = MODELS[name][1]
    known = {f.name for f in fields(cls)}
    unknown = set(overrides or {}) - known
    if unknown:
        raise ValueError(f"{name} has no setting(s) {sorted(unknown)}; it has {sorted(known)}")
    values = {k: v for k, v in common.items() if k in known and v is not None}
    values.update(overrides or {})
    for key in ("hidden", "ranking_hidden", "l2_grid"):  # JSON gives lists; configs are frozen tuples
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return replace(cls(), **values)


def train_models(
    data: TrainingData,
    names: list[str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
    max_epochs: int | None = None,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    ensemble: bool = True,
    fusion_steps: int = 10,
    gate_margin: float | None = None,
) -> TrainedModels:
    """Train each named model (popularity always, it is the floor and the fallback) and fit the fusion.

    Only models that pass the baseline gate (see ``training.gates``) enter the fusion; the others
    are still returned, with the gate's reason, so they are registered but never promoted.
    """
    margin = margin_from_settings(gate_margin)
    names = ["popularity", *[n for n in names if n != "popularity"]]
    result = TrainedModels({}, {}, {}, {}, data)
    for name in names:
        config = make_config(name, (overrides or {}).get(name), seed=seed, device=device, max_epochs=max_epochs)
        started = time.perf_counter()
        if name == "popularity":
            model = popularity.train(data, config)
        else:
            checkpoint = checkpoint_dir / f"{name}.pt" if checkpoint_dir else None
            model, result.histories[name] = MODELS[name][0](data, config, progress=progress, checkpoint=checkpoint)
        result.train_seconds[name] = time.perf_counter() - started
        result.models[name] = model
        result.validation[name] = validation_metrics(model, data)
        log.info("validated model=%s %s", name, " ".join(f"{k}={v:.4f}" for k, v in result.validation[name].items()))
    return gate_and_fuse(result, ensemble=ensemble, fusion_steps=fusion_steps, margin=margin)


def gate_and_fuse(
    result: TrainedModels, *, ensemble: bool = True, fusion_steps: int = 10, margin: float | None = None
) -> TrainedModels:
    """Gate every trained model against popularity and fit the fusion over those that pass.

    ``train_models`` ends with this; a caller that trained the models in separate processes (the
    fold bench) merges their ``TrainedModels`` and calls it once over all of them.
    """
    margin = margin_from_settings(margin)
    data = result.data
    result.gates = gate_all(result.validation, margin) if data.validation is not None else {}
    if ensemble and len(result.models) > 1 and data.validation is not None:
        started = time.perf_counter()
        members = {n: m for n, m in result.models.items() if result.gates[n].passed}
        for name in sorted(set(result.models) - set(members)):
            log.warning("fusion leaves out model=%s: %s", name, result.gates[name].reason)
        # The simplex grid holds every single member at weight 1, so on validation the fitted
        # fusion is never below its best member.
        spec = fit_fusion(members, data.validation, steps=fusion_steps)
        result.ensemble = Ensemble(members, spec)
        result.train_seconds["ensemble"] = time.perf_counter() - started + sum(result.train_seconds.values())
        result.validation["ensemble"] = {"ndcg@10": spec.validation_ndcg}
        result.gates["ensemble"] = decide("ensemble", result.validation, margin)
    return result


def load_model(folder: Path, members: Mapping[str, Scorer] | None = None) -> Scorer:
    """A saved model from its folder; an ensemble also needs its members, already loaded."""
    kind = read_meta(folder)["model"]
    if kind == "ensemble":
        if members is None:
            raise ValueError(f"{folder} is an ensemble; load its member models first")
        return Ensemble(members, Ensemble.read_spec(folder))
    if kind not in MODELS:
        raise ValueError(f"{folder}: unknown model kind {kind!r}")
    return MODELS[kind][2](folder)


def full_history(dataset: MovieLens, train: pd.DataFrame) -> sp.csr_matrix:
    """Everything known at test time: the whole train part, validation slice included."""
    return to_csr(train, dataset.n_users, dataset.n_items)
