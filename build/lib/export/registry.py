"""Champion models from the MLflow registry, with the tags that say what data they were trained on."""

from __future__ import annotations

import json
from typing import Any


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
        ensemble = (client.get_model_version(name, alias) if alias.isdigit()
                    else client.get_model_version_by_alias(name, alias))
    except MlflowException as err:
        raise ExportError(f"no registered ensemble under {alias!r} ({err.message}); run `make train` first"
                          f"{'' if alias == CHAMPION else ' or pick another alias/version'}") from None
    pinned = json.loads((download("ensemble", str(ensemble.version)) / "members.json").read_text())
    models = from_registry(["ensemble"], str(ensemble.version))
    members = models["ensemble"].members
    versions = {**{m: int(v) for m, v in pinned.items()}, "ensemble": int(ensemble.version)}
    return {**members, **models}, ensemble.tags, versions
