"""The real serving stack for tests: tiny trained models exported to a repository + bundle, the
embedded Triton, and our server running on its own event loop in a thread, on free loopback ports."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.bundle import write_bundle, write_drift_reference
from export.pipeline import export_models
from server.app import RecommendationServer, create_server
from server.settings import Settings
from training.data.splits import make_split
from training.fusion import Ensemble, FusionSpec
from training.models.base import TrainingData
from training.models.popularity import Popularity
from training.models.two_tower import TwoTower
from training.pipeline import LEARNED, train_models

VARIANTS = ("torchscript_fp32", "torchscript_int8")
# The real ensemble's weights (ml-100k), so every model takes part whatever a tiny fit would pick.
WEIGHTS = {"popularity": 0.3, "sae": 0.3, "rbm": 0.1, "two_tower": 0.2, "ease": 0.1}
T = TypeVar("T")  # what a coroutine run on the server thread returns
SLOW_MODEL = Path(__file__).resolve().parent / "fixtures" / "slow_model.py"


@dataclass(frozen=True)
class Artifacts:
    repository: Path
    bundle: Path
    models: tuple[str, ...]


def build_artifacts(data: TrainingData, root: Path) -> Artifacts:
    dataset = data.dataset
    split = make_split(dataset, "u1")
    trained = train_models(data, list(LEARNED), max_epochs=4, progress=False, device="cpu", ensemble=False)
    repository = root / "model_repository"
    # With the full-rung model of the bundle's fusion (settings_for turns fused_full_rung off).
    rows = export_models(
        trained.models,
        dataset,
        split.train,
        split.test,
        repository,
        variants=VARIANTS,
        top_n=20,
        full_rung=True,
        fusion_weights=WEIGHTS,
    )
    manifest: dict[str, Any] = {
        "registry_versions": {},
        "alias": "test",
        "top_n": 20,
        "repository": {r["repository_model"]: r["version"] for r in rows},
        "full_rung_members": next((r["members"] for r in rows if "members" in r), None),
    }
    ensemble = Ensemble(trained.models, FusionSpec("rrf", dict(WEIGHTS)))
    folder = write_bundle(
        root / "serving_bundle",
        dataset,
        cast(Popularity, trained.models["popularity"]),
        cast(TwoTower, trained.models["two_tower"]),
        ensemble,
        manifest,
        repository=repository,
    )
    write_drift_reference(folder, dataset, split.train, trained.models)
    return Artifacts(repository, root / "serving_bundle", tuple(manifest["repository"]))


def slow_repository(artifacts: Artifacts, target: Path, delays: dict[str, Path]) -> Path:
    """A copy of the repository where each model in ``delays`` answers correctly, after the
    delay (ms) its file says."""
    shutil.copytree(artifacts.repository, target)
    for model, delay_file in delays.items():
        folder = target / model
        config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
        config.backend = "python"
        config.default_model_filename = "model.py"
        config.parameters["delay_file"].string_value = str(delay_file)
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
        for version in (p for p in folder.iterdir() if p.is_dir()):
            shutil.copy(SLOW_MODEL, version / "model.py")
    return target


class ServerThread:
    """Our server on a private event loop; ``start()`` returns once it serves, ``stop()`` drains it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: RecommendationServer | None = None
        self.port = 0

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 180) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self.thread.start()

        async def start() -> tuple[RecommendationServer, int]:
            server, port = create_server(self.settings)
            await server.start()
            return server, port

        self.server, self.port = self._run(start())
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self._run(coro, timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        if self.server is not None:
            self._run(self.server.stop(grace))
            self.server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def settings_for(artifacts: Artifacts, triton_url: str, state: Path, **overrides: object) -> Settings:
    values: dict[str, Any] = {
        "model_repository": artifacts.repository,
        "bundle": artifacts.bundle,
        "triton_url": triton_url,
        "grpc_port": 0,
        "metrics_port": 0,
        "feedback_db": state / "feedback.sqlite",
        "log_json": False,
        "admin_port": 0,
        "rollout_state_dir": state / "rollout",
        "health_interval_s": 0.2,
        "variants": list(VARIANTS),
        # Off unless a test turns it on: most tests observe how an answer is computed, and a
        # repeated request would be answered from the cache instead.
        "cache_ttl_s": 0,
        # Likewise: most tests observe the per-model calls (a slow SAE, a failing EASE, the plans),
        # which the full-rung model, one call for them all, would answer instead.
        "fused_full_rung": False,
        **overrides,
    }
    return Settings(**values)
