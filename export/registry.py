"""Champion models from the MLflow registry, with the tags that say what data they were trained on."""

from __future__ import annotations

import json
from typing import Any

from training.gates import PASSED


class ExportError(RuntimeError):
    """The registry or data cannot support an export; the message says what to do."""


def load_champions(alias: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """The ensemble under ``alias`` (or version) and exactly the member versions it was fitted on.

    The ensemble is the serving unit: its fusion weights only hold for the members it pins, so
    members are not taken from their own ``champion`` aliases (which move independently).
    Returns the models (members and "ensemble"), the tags they were trained with, and versions.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.evaluate import from_registry
    from training.tracking import CHAMPION, download, registry_name

    client = MlflowClient()
    name = registry_name("ensemble")
    try:
        ensemble = (
            client.get_model_version(name, alias) if alias.isdigit() else client.get_model_version_by_alias(name, alias)
        )
    except MlflowException as err:
        raise ExportError(
            f"no registered ensemble under {alias!r} ({err.message}); run `make train` first"
            f"{'' if alias == CHAMPION else ' or pick another alias/version'}"
        ) from None
    pinned = json.loads((download("ensemble", str(ensemble.version)) / "members.json").read_text())
    check_members(client, {m: int(v) for m, v in pinned.items()})
    models = from_registry(["ensemble"], str(ensemble.version))
    members = models["ensemble"].members
    versions = {**{m: int(v) for m, v in pinned.items()}, "ensemble": int(ensemble.version)}
    return {**members, **models}, ensemble.tags, versions


def check_members(client: Any, pinned: dict[str, int]) -> None:
    """Refuse an ensemble unless every pinned member version is its model's champion or passed its gate.

    A member that failed the baseline gate is worse than recommending the most popular films;
    shipping a fusion that weights it would serve that.
    """
    from mlflow.exceptions import MlflowException

    from training.tracking import CHAMPION, GATE_REASON_TAG, GATE_TAG, registry_name

    refused = []
    for member, version in sorted(pinned.items()):
        name = registry_name(member)
        found = client.get_model_version(name, str(version))
        try:
            champion = int(client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException:
            champion = None
        if champion != version and found.tags.get(GATE_TAG) != PASSED:
            reason = found.tags.get(GATE_REASON_TAG, "registered without a baseline gate")
            refused.append(f"{name} v{version} ({reason})")
    if refused:
        raise ExportError(
            "the ensemble pins members that are neither champions nor gated in: "
            f"{'; '.join(refused)}; retrain (`make train`) so the fusion leaves them out"
        )
