from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.triton import EmbeddedTriton
from tests.stack import Artifacts, build_artifacts
from training.data import MovieLens, load_movielens
from training.data.splits import make_split
from training.data.synthetic import SyntheticSpec, write
from training.models.base import TrainingData
from training.pipeline import prepare

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens" / "ml-100k"


@pytest.fixture(scope="session")
def synthetic_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return {
        fmt: write(root / fmt, SyntheticSpec(users=120, items=150, mean_ratings=25, format=fmt))
        for fmt in ("ml-100k", "ml-1m", "csv")
    }


@pytest.fixture(scope="session")
def tiny(synthetic_dirs: dict[str, Path]) -> MovieLens:
    return load_movielens(synthetic_dirs["ml-100k"])


@pytest.fixture(scope="session")
def tiny_data(tiny: MovieLens) -> TrainingData:
    return prepare(tiny, make_split(tiny, "u1"))


@pytest.fixture(scope="session")
def ml100k() -> MovieLens:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"real MovieLens data not found at {ML100K}")
    return load_movielens(ML100K)


@pytest.fixture(scope="session")
def serving_artifacts(tiny_data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """Tiny trained models exported (fp32 + int8 TorchScript) with their serving bundle."""
    return build_artifacts(tiny_data, tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="session")
def serving_triton(serving_artifacts: Artifacts) -> Iterator[EmbeddedTriton]:
    """The embedded Triton over those artifacts, no model preloaded: servers load what they need."""
    with EmbeddedTriton(serving_artifacts.repository, startup_timeout=120) as server:
        yield server


# What makes a test slow is what it stands on: these session fixtures train and export models,
# start the embedded Triton or read the real ml-100k. A test using any of them (directly or
# through another fixture) is marked slow here, so `make test-fast` (-m "not slow") cannot drift
# from what is slow; tests that start Triton, a server or Valkey themselves carry the mark in
# their module.
SLOW_FIXTURES = frozenset({"serving_artifacts", "serving_triton", "ml100k"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
