"""The rollout bench's bundles: live and a freshly trained candidate (two trainings, two seeds, each
exported to the same repository as the next model versions), and a deliberately wrong one.

The wrong bundle is the candidate's models with their fp32 weights replaced by noise, exported
consistently (its golden requests come from those very files), so it passes every check before
traffic and only the guardrails can catch it. Built once into ``work``; a later run reuses them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import cast

from export.bundle import write_bundle
from export.clone import clone_bundle
from export.graphs import DEFAULT_TOP_N
from export.pipeline import export_models
from training.data import load_movielens
from training.data.splits import make_split
from training.fusion import Ensemble, FusionSpec
from training.models.popularity import Popularity
from training.models.two_tower import TwoTower
from training.pipeline import prepare, train_models

log = logging.getLogger(__name__)
VARIANTS = ("torchscript_fp32",)
# The ml-100k ensemble's weights, so every model takes part in every answer.
WEIGHTS = {"popularity": 0.3, "sae": 0.4, "rbm": 0.1, "two_tower": 0.2}
KEEP_VERSIONS = 100  # the live bundle's versions must stay on disk while a candidate is exported beside them


def build_bundles(data: Path, work: Path, epochs: int) -> dict[str, Path]:
    """{"live", "candidate", "wrong"} -> bundle folders; ``work/model_repository`` holds their models."""
    bundles = {
        name: work / "serving_bundle" / str(number)
        for number, name in enumerate(("live", "candidate", "wrong"), start=1)
    }
    if all((b / "manifest.json").is_file() for b in bundles.values()):
        return bundles
    dataset = load_movielens(data)
    split = make_split(dataset, "u1")
    prepared = prepare(dataset, split)
    repository = work / "model_repository"
    for seed in (0, 1):  # live, then the candidate: the same recipe, trained afresh
        trained = train_models(
            prepared,
            ["sae", "rbm", "two_tower"],
            seed=seed,
            max_epochs=epochs,
            progress=False,
            device="cpu",
            ensemble=False,
        )
        rows = export_models(
            trained.models,
            dataset,
            split.train,
            split.test,
            repository,
            variants=VARIANTS,
            top_n=DEFAULT_TOP_N,
            keep_versions=KEEP_VERSIONS,
        )
        manifest = {
            "registry_versions": {},
            "alias": f"bench-seed-{seed}",
            "top_n": DEFAULT_TOP_N,
            "repository": {r["repository_model"]: r["version"] for r in rows},
        }
        folder = write_bundle(
            work / "serving_bundle",
            dataset,
            cast(Popularity, trained.models["popularity"]),
            cast(TwoTower, trained.models["two_tower"]),
            Ensemble(trained.models, FusionSpec("rrf", dict(WEIGHTS))),
            manifest,
            repository=repository,
        )
        log.info("bundle %s from seed %d", folder, seed)
    candidate = json.loads((bundles["candidate"] / "manifest.json").read_text())
    clone_bundle(
        bundles["candidate"],
        bundles["wrong"],
        repository,
        model_version=max(candidate["repository"].values()) + 1,
        bundle_version=3,
        scramble=True,
    )
    return bundles
