"""MLflow tracking and Model Registry: one parent run per training call, one child run per model.

Each child run logs its config, per-epoch losses and validation metrics, final validation
metrics, a learning-curve PNG, and the model as an MLflow pyfunc (``training.pyfunc``: user ids
in, top-K out) whose ``model`` artifact holds the weights, config, id maps and known ratings. Each
model is registered as ``recsys-<name>``; the alias ``champion`` moves to the new version only
when it passes the baseline gate (``training.gates``: it beats popularity on validation NDCG@10
by the configured margin) and beats the current champion's validation NDCG@10 measured on the
same data and split. A champion trained on other data cannot be compared, so a gated-in new
version replaces it (logged). Every version carries a ``gate`` tag (``passed`` or ``failed``)
and the gate's reason, which export checks before shipping an ensemble.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import scipy.sparse as sp
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from training.gates import PASSED, GateDecision
from training.models.fitting import FitHistory
from training.pipeline import TrainedModels
from training.pyfunc import HISTORIES, known_ratings, log_pyfunc, model_folder

log = logging.getLogger(__name__)
EXPERIMENT = "recsys-training"
CHAMPION = "champion"
MONITOR_TAG = "validation_ndcg_at_10"
GATE_TAG, GATE_REASON_TAG = "gate", "gate_reason"


def metric_key(name: str) -> str:
    """MLflow allows no '@' in metric names: ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def registry_name(model: str) -> str:
    return f"recsys-{model.replace('_', '-')}"


def configure(state_dir: Path) -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or a local SQLite store under ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(state_dir / "mlartifacts").resolve().as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return uri


def learning_curve(history: FitHistory, path: Path) -> Path:
    epochs = [e["epoch"] for e in history.epochs]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    # A closed-form model (EASE) has no loss: its rows are the λ values it tried.
    loss_ax.plot(epochs, [e.get("loss", np.nan) for e in history.epochs], color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    metric_ax = loss_ax.twinx()
    for key, colour in (("ndcg@10", "tab:green"), ("rmse", "tab:red")):
        points = [(e["epoch"], e[key]) for e in history.epochs if key in e]
        if points:
            metric_ax.plot(*zip(*points, strict=True), color=colour, label=f"validation {key}")
    if history.best_epoch >= 0:
        metric_ax.axvline(history.best_epoch, color="grey", linestyle=":", label="best epoch")
    fig.legend(loc="upper right", fontsize=8)
    loss_ax.set_title(f"{history.model}: learning curve")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _champion_score(client: MlflowClient, name: str, tags: dict[str, str]) -> float | None:
    """The current champion's validation NDCG@10 if it was measured on the same data; else None."""
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    same_data = all(current.tags.get(k) == tags[k] for k in ("data_fingerprint", "split", "validation_seed"))
    if not same_data:
        log.warning(
            "champion model=%s version=%s was trained on other data; it will be replaced", name, current.version
        )
        return None
    return float(current.tags[MONITOR_TAG])


def register(
    client: MlflowClient,
    model: str,
    run_id: str,
    artifact_uri: str,
    score: float,
    tags: dict[str, str],
    gate: GateDecision | None = None,
    model_id: str | None = None,
) -> dict[str, Any]:
    """Register a model version; move ``champion`` to it if it passed its gate and beats the current one.

    ``model_id`` links the version to the logged (pyfunc) model that ``artifact_uri`` names."""
    name = registry_name(model)
    with contextlib.suppress(MlflowException):  # raised when it is already registered
        client.create_registered_model(name, description=f"{model} recommender trained on MovieLens")
    # The score is stored exactly: a rounded tag would let an equal score look better next time.
    gated_in = gate is None or gate.passed
    gate_tags = {
        GATE_TAG: PASSED if gated_in else "failed",
        GATE_REASON_TAG: gate.reason[:500] if gate is not None else "no gate applied",
    }
    version = client.create_model_version(
        name,
        source=artifact_uri,
        run_id=run_id,
        tags={**tags, **gate_tags, MONITOR_TAG: repr(float(score))},
        model_id=model_id,
    )
    previous = _champion_score(client, name, tags) if gated_in else None
    promoted = gated_in and (previous is None or score > previous)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    log.info(
        "registered model=%s version=%s validation_ndcg@10=%.4f gate=%s champion_before=%s promoted=%s",
        name,
        version.version,
        score,
        gate_tags[GATE_TAG],
        previous,
        promoted,
    )
    return {
        "name": name,
        "version": int(version.version),
        "validation_ndcg@10": score,
        "previous_champion_ndcg@10": previous,
        "champion": promoted,
        "gate": gate_tags[GATE_TAG],
        "gate_reason": gate_tags[GATE_REASON_TAG],
    }


@contextlib.contextmanager
def tuning_run(params: dict[str, Any]) -> Iterator[Callable[..., None]]:
    """A ``tune`` parent run; yields the callback that logs each trial (pruned ones too) as a nested run."""
    with mlflow.start_run(run_name="tune"):
        mlflow.log_params(params)
        mlflow.set_tag("stage", "tune")

        def on_trial(
            model: str, number: int, overrides: dict[str, Any], value: float, seconds: float, state: str = "complete"
        ) -> None:
            with mlflow.start_run(run_name=f"{model}-trial-{number}", nested=True):
                mlflow.log_params({f"{model}.{k}": v for k, v in overrides.items()})
                mlflow.set_tags({"model": model, "trial": str(number), "stage": "tune", "state": state})
                mlflow.log_metrics({"validation_ndcg_at_10": value, "seconds": seconds})

        yield on_trial


def log_training(
    result: TrainedModels,
    params: dict[str, Any],
    id_maps: dict[str, list[int]],
    artifacts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log a finished training call to MLflow; returns the registry outcome per model.

    ``artifacts`` are JSON documents logged with the parent run (e.g. ``tuned_settings.json``).
    """
    client = MlflowClient()
    tags = {k: str(params[k]) for k in ("data_fingerprint", "split", "validation_seed", "data")}
    outcome: dict[str, Any] = {}
    members = dict(result.models)
    if result.ensemble is not None:
        members["ensemble"] = result.ensemble
    histories = known_ratings(result.data)
    example_user = id_maps["users"][0]
    with mlflow.start_run(run_name="train") as parent, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(params)
        mlflow.set_tags(tags)
        mlflow.log_dict({n: g.to_dict() for n, g in result.gates.items()}, "gates.json")
        for file_name, document in (artifacts or {}).items():
            mlflow.log_dict(document, file_name)
        outcome["run_id"] = parent.info.run_id
        for name, model in members.items():
            with mlflow.start_run(run_name=name, nested=True) as run:
                folder = Path(tmp) / name  # the pyfunc keeps it as artifacts/<name>
                model.save(folder)
                (folder / "id_maps.json").write_text(json.dumps(id_maps))
                sp.save_npz(folder / HISTORIES, histories)
                member_folders: dict[str, Path] = {}
                if (
                    name == "ensemble" and result.ensemble is not None
                ):  # pin the member versions this fusion was fitted on
                    versions = {m: outcome[m]["version"] for m in result.ensemble.members}
                    (folder / "members.json").write_text(json.dumps(versions))
                    member_folders = {m: Path(tmp) / m for m in result.ensemble.members}
                mlflow.log_params({f"{name}.{k}": v for k, v in model.config_dict().items()})
                mlflow.set_tags({**tags, "model": name})
                history = result.histories.get(name)
                if history is not None:
                    for record in history.epochs:
                        step = int(record["epoch"])
                        mlflow.log_metrics({metric_key(k): v for k, v in record.items() if k != "epoch"}, step=step)
                    mlflow.log_artifact(str(learning_curve(history, Path(tmp) / f"{name}.png")))
                    mlflow.log_metrics({"best_epoch": history.best_epoch, "stopped_early": history.stopped_early})
                final = {f"validation_{metric_key(k)}": v for k, v in result.validation.get(name, {}).items()}
                mlflow.log_metrics({**final, "train_seconds": result.train_seconds.get(name, 0.0)})
                logged = log_pyfunc(folder, member_folders, example_user)
                outcome[name] = register(
                    client,
                    name,
                    run.info.run_id,
                    logged.model_uri,
                    result.validation[name].get("ndcg@10", 0.0),
                    tags,
                    result.gates.get(name),
                    model_id=logged.model_id,
                )
    return outcome


def model_uri(model: str, alias_or_version: str = CHAMPION) -> str:
    """The registry URI of a model by alias (``champion``) or version number (what ``mlflow models`` takes)."""
    reference = f"@{alias_or_version}" if not alias_or_version.isdigit() else f"/{alias_or_version}"
    return f"models:/{registry_name(model)}{reference}"


def download(model: str, alias_or_version: str = CHAMPION) -> Path:
    """Local folder of a registered model's saved files (``Scorer.save``), by alias or version number."""
    return model_folder(Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri(model, alias_or_version))))
