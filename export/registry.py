"""Champion models from the MLflow registry, with the tags that say what data they were trained on."""

from __future__ import annotations

from typing import Any

MODELS = ("popularity", "sae", "rbm", "two_tower", "ensemble")


class ExportError(RuntimeError):
    """The registry or data cannot support an export; the message says what to do."""


def load_champions(alias: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """Models, the tags they were trained with, and their registry versions."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.evaluate import from_registry
    from training.tracking import CHAMPION, registry_name

    client = MlflowClient()
    try:
        found = {m: (client.get_model_version_by_alias(registry_name(m), alias) if not alias.isdigit()
                     else client.get_model_version(registry_name(m), alias)) for m in MODELS}
    except MlflowException as err:
        raise ExportError(f"no registered models under {alias!r} ({err.message}); run `make train` first"
                          f"{'' if alias == CHAMPION else ' or pick another alias/version'}") from None
    tags = found["sae"].tags
    return from_registry(list(MODELS), alias), tags, {m: int(v.version) for m, v in found.items()}
