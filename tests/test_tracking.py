"""MLflow registry behaviour against a real local SQLite tracking store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from training import tracking

TAGS = {"data_fingerprint": "abc", "split": "u1", "validation_seed": "0"}


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure(tmp_path)
    return MlflowClient()


def _register(client: MlflowClient, tmp_path: Path, score: float, tags: dict[str, str] = TAGS) -> dict:
    with mlflow.start_run() as run:
        (tmp_path / "m").mkdir(exist_ok=True)
        (tmp_path / "m" / "model.json").write_text("{}")
        mlflow.log_artifacts(str(tmp_path / "m"), artifact_path="model")
        return tracking.register(client, "sae", run.info.run_id, mlflow.get_artifact_uri("model"), score, tags)


def _champion(client: MlflowClient) -> int:
    return int(client.get_model_version_by_alias("recsys-sae", tracking.CHAMPION).version)


def test_champion_moves_only_on_a_better_validation_ndcg(store: MlflowClient, tmp_path: Path) -> None:
    first = _register(store, tmp_path, 0.30)
    assert first["champion"] and _champion(store) == 1
    worse = _register(store, tmp_path, 0.25)
    assert worse["version"] == 2 and not worse["champion"] and _champion(store) == 1
    better = _register(store, tmp_path, 0.35)
    assert better["champion"] and better["previous_champion_ndcg@10"] == pytest.approx(0.30)
    assert _champion(store) == 3


def test_an_equal_score_does_not_move_the_champion(store: MlflowClient, tmp_path: Path) -> None:
    score = 0.1139364912345678  # more digits than a rounded tag would keep
    _register(store, tmp_path, score)
    again = _register(store, tmp_path, score)
    assert not again["champion"] and _champion(store) == 1


def test_a_champion_from_other_data_is_replaced(store: MlflowClient, tmp_path: Path) -> None:
    _register(store, tmp_path, 0.9)
    moved = _register(store, tmp_path, 0.1, {**TAGS, "data_fingerprint": "other"})
    assert moved["champion"] and _champion(store) == 2


def test_registered_artifacts_download_by_alias_and_version(store: MlflowClient, tmp_path: Path) -> None:
    _register(store, tmp_path, 0.3)
    assert (tracking.download("sae") / "model.json").is_file()
    assert (tracking.download("sae", "1") / "model.json").is_file()
