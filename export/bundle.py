"""The serving bundle: what the server needs beside the models, versioned with them.

``<bundle>/<N>/`` holds the catalogue (ids, titles, years, genres), the popularity order, id
maps, every known user's ratings as a CSR (compact: three arrays), demographic codes, two-tower
item embeddings (for similar items), the ensemble's fusion spec and a manifest naming the model
versions, repository models and data fingerprint, the bundle schema version and a digest of the
id maps. Given the model repository it also writes golden requests (``export.golden``), which a
rollout replays against Triton before moving traffic.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from recsys import contract

from export.golden import GOLDEN_FILE, write_golden
from export.repository import versions
from export.score_reference import min_history, reference_scores
from server.drift.reference import Reference
from training.data.dataset import MovieLens
from training.data.features import AGE_EDGES
from training.data.matrices import to_csr
from training.fusion import Ensemble
from training.models.popularity import Popularity
from training.models.two_tower import TwoTower

# The file names and the schema version (what the files mean) are the serving contract's; the
# server refuses a schema it does not know (server/bundle.py).
FILES, SCHEMA_VERSION = contract.BUNDLE_FILES, contract.SCHEMA_VERSION


def write_bundle(
    root: Path,
    dataset: MovieLens,
    popularity: Popularity,
    two_tower: TwoTower | None,
    ensemble: Ensemble | None,
    manifest: dict[str, Any],
    repository: Path | None = None,
) -> Path:
    version = (versions(root) or [0])[-1] + 1
    folder = root / str(version)
    folder.mkdir(parents=True)
    genre_names = dataset.genre_names
    catalog = [
        {
            "id": int(raw),
            "title": str(title),
            "year": None if np.isnan(year) else int(year),
            "genres": [genre_names[j] for j in np.flatnonzero(row)],
        }
        for raw, title, year, row in zip(
            dataset.item_ids.raw_ids, dataset.items["title"], dataset.items["year"], dataset.genres, strict=True
        )
    ]
    (folder / FILES["catalog"]).write_text(json.dumps({"genres": genre_names, "items": catalog}))
    id_maps = json.dumps({"users": dataset.user_ids.to_list(), "items": dataset.item_ids.to_list()})
    (folder / FILES["id_maps"]).write_text(id_maps)
    np.savez(
        folder / FILES["popularity"],
        order=popularity.ranking(),
        score=popularity.item_scores,
        bayes_mean=popularity.bayes_mean,
        counts=popularity.counts,
    )
    sp.save_npz(folder / FILES["histories"], to_csr(dataset.ratings, dataset.n_users, dataset.n_items))
    if two_tower is not None:
        np.save(folder / FILES["demographics"], two_tower.user_codes)
        # The age edges travel with the vocabularies so the server encodes a new user's age the same way.
        vocab = {**two_tower.demographics.to_dict(), "age_edges": [float(e) for e in AGE_EDGES]}
        (folder / FILES["demographics_vocab"]).write_text(json.dumps(vocab))
        np.save(folder / FILES["item_embeddings"], two_tower.item_embeddings().cpu().numpy())
    if ensemble is not None:
        (folder / FILES["fusion"]).write_text(json.dumps(ensemble.config_dict()))
    if repository is not None:
        write_golden(folder, repository, manifest.get("repository", {}))
    full = {
        **manifest,
        "schema_version": SCHEMA_VERSION,
        "bundle_version": version,
        "catalog": {
            "items": dataset.n_items,
            "users": dataset.n_users,
            "id_maps_sha256": hashlib.sha256(id_maps.encode()).hexdigest(),
        },
        "golden": GOLDEN_FILE if repository is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": dataset.name,
        "data_fingerprint": dataset.fingerprint(),
        "scale": dataset.scale.to_dict(),
    }
    (folder / FILES["manifest"]).write_text(json.dumps(full, indent=1))
    return folder


def write_drift_reference(
    folder: Path, dataset: MovieLens, train: pd.DataFrame, models: dict[str, Any] | None = None
) -> Path:
    """The reference distributions live traffic is compared with (``server.drift``): history lengths
    of the users the bundle serves, the rating, popularity-decile and genre mix of ``train``, and,
    given the trained ``models``, each served model's top scores (``export.score_reference``)."""
    items = train["item"].to_numpy()
    reference = Reference.from_ratings(
        np.bincount(dataset.ratings["user"].to_numpy(), minlength=dataset.n_users),
        items,
        train["rating"].to_numpy(),
        np.bincount(items, minlength=dataset.n_items),
        dataset.genres,
        dataset.genre_names,
        dataset.scale.levels,
    )
    if models:
        scores = reference_scores(models, dataset)
        reference = reference.with_scores(scores, {model: min_history(model) for model in scores})
    return reference.save(folder)
