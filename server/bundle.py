"""The serving bundle, read once at start: catalogue, id maps, popularity, histories, embeddings, fusion.

Written by ``python -m export`` beside the model repository (``serving_bundle/<N>/``); item
indices everywhere in the server are positions in the bundle's ``id_maps.json``, the same
indices the Triton models take and return.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from recsys import contract

# Bundle schema versions this server reads (the contract's, which export writes); bundles written
# before the field existed are version 1.
SCHEMA_VERSIONS = (contract.SCHEMA_VERSION,)
FILES = contract.BUNDLE_FILES


class BundleError(RuntimeError):
    """The serving bundle is missing or incomplete; the message says what to run."""


@dataclass(frozen=True)
class Fusion:
    method: str  # "rrf" or "weighted"
    weights: dict[str, float]
    rrf_k: float = 60.0


@dataclass
class Bundle:
    folder: Path
    manifest: dict[str, Any]
    item_ids: np.ndarray  # raw MovieLens item id per index
    titles: list[str]
    years: np.ndarray  # 0 = unknown
    genre_names: list[str]
    genres: np.ndarray  # (items, genres) bool
    user_index: dict[str, int]  # raw user id (as text) -> index
    popularity: np.ndarray  # score per item (Bayesian mean x count)
    counts: np.ndarray
    histories: sp.csr_matrix  # (users, items) ratings
    scale: tuple[float, float]
    fusion: Fusion
    item_embeddings: np.ndarray | None  # (items, dim + 1): the two-tower item vectors, last column a bias
    demographics: np.ndarray | None  # (users, 3) codes, 0 = unknown
    vocab: dict[str, Any] = field(default_factory=dict)
    item_index: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.item_index = {int(raw): i for i, raw in enumerate(self.item_ids)}

    # Derived once, not per request: per-request work must not sort or rescan the catalogue.
    @cached_property
    def popularity_order(self) -> np.ndarray:
        return np.argsort(-self.popularity, kind="stable")

    @cached_property
    def genre_masks(self) -> np.ndarray:
        """(genres x items) bool, one contiguous row per genre: a filter ORs at most one row per genre."""
        return np.ascontiguousarray(self.genres.T.astype(bool))

    @cached_property
    def genre_column(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.genre_names)}

    @cached_property
    def item_genre_names(self) -> list[list[str]]:
        """Each item's genre names, as every reply lists them (built once, not per item per reply)."""
        rows, columns = np.nonzero(self.genres)
        names = np.asarray(self.genre_names, dtype=object)[columns]
        return [part.tolist() for part in np.split(names, np.searchsorted(rows, np.arange(1, self.n_items)))]

    @cached_property
    def genre_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(items x genres) float32 and each row's norm."""
        vectors = self.genres.astype(np.float32)
        return vectors, np.linalg.norm(vectors, axis=1)

    @cached_property
    def popularity_prior(self) -> np.ndarray:
        """sqrt of popularity scaled to 0..1: the content score's tie-breaker."""
        return np.sqrt(np.clip(self.popularity / (self.popularity.max() or 1.0), 0, None))

    @cached_property
    def unit_embeddings(self) -> np.ndarray | None:
        """Two-tower item vectors without the bias column, scaled to length 1 (for cosine)."""
        if self.item_embeddings is None:
            return None
        body = self.item_embeddings[:, :-1]
        unit: np.ndarray = body / np.maximum(np.linalg.norm(body, axis=1, keepdims=True), 1e-12)
        return unit

    @property
    def version(self) -> str:
        return str(self.manifest.get("bundle_version", self.folder.name))

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def liked_threshold(self) -> float:
        """Ratings at or above this count as liked (4 of 1..5): explanations, clicks, content profiles."""
        low, high = self.scale
        return low + 0.75 * (high - low)

    def index_of(self, item_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Known ids -> indices (order kept), plus the ids not in the catalogue."""
        known, unknown = [], []
        for raw in item_ids:
            idx = self.item_index.get(int(raw))
            (unknown.append(int(raw)) if idx is None else known.append(idx))
        return np.asarray(known, dtype=np.int64), unknown


def resolve(path: Path) -> Path:
    """A bundle version folder, or the newest numbered one under ``path``."""
    if (path / FILES["manifest"]).is_file():
        return path
    numbered = (
        sorted(
            (p for p in path.iterdir() if p.name.isdigit() and (p / FILES["manifest"]).is_file()),
            key=lambda p: int(p.name),
        )
        if path.is_dir()
        else []
    )
    if not numbered:
        raise BundleError(f"no serving bundle under {path}; run `make export` (it trains first if needed)")
    return numbered[-1]


def load_bundle(path: Path) -> Bundle:
    folder = resolve(Path(path))
    try:
        manifest = json.loads((folder / FILES["manifest"]).read_text())
        schema = manifest.get("schema_version", 1)
        if schema not in SCHEMA_VERSIONS:
            raise BundleError(
                f"serving bundle {folder} has schema version {schema}; this server reads "
                f"{', '.join(map(str, SCHEMA_VERSIONS))}: upgrade the server or export with its version"
            )
        id_maps_text = (folder / FILES["id_maps"]).read_text()
        catalog = json.loads((folder / FILES["catalog"]).read_text())
        id_maps = json.loads(id_maps_text)
        popularity = np.load(folder / FILES["popularity"])
        histories = sp.load_npz(folder / FILES["histories"]).tocsr()
    except (OSError, ValueError, KeyError) as err:
        raise BundleError(f"serving bundle {folder} is incomplete ({err}); re-run `make export`") from None
    items = catalog["items"]
    genre_names = catalog["genres"]
    genres = np.zeros((len(items), len(genre_names)), dtype=bool)
    column = {g: j for j, g in enumerate(genre_names)}
    for i, item in enumerate(items):
        genres[i, [column[g] for g in item["genres"]]] = True
    fusion_file = folder / FILES["fusion"]
    spec: dict[str, Any] = (
        json.loads(fusion_file.read_text()) if fusion_file.is_file() else {"method": "rrf", "weights": {}}
    )
    embeddings = folder / FILES["item_embeddings"]
    demographics = folder / FILES["demographics"]
    vocab = folder / FILES["demographics_vocab"]
    scale = manifest["scale"]
    expected = manifest.get("catalog", {}).get("id_maps_sha256")
    if expected and hashlib.sha256(id_maps_text.encode()).hexdigest() != expected:
        raise BundleError(
            f"serving bundle {folder}: id_maps.json is not the one its manifest was written with "
            "(sha256 differs); the models' item indices would point at other items; re-export"
        )
    bundle = Bundle(
        folder=folder,
        manifest=manifest,
        item_ids=np.asarray(id_maps["items"], dtype=np.int64),
        titles=[item["title"] for item in items],
        years=np.asarray([item["year"] or 0 for item in items], dtype=np.int64),
        genre_names=genre_names,
        genres=genres,
        user_index={str(raw): i for i, raw in enumerate(id_maps["users"])},
        popularity=popularity["score"].astype(np.float64),
        counts=popularity["counts"].astype(np.float64),
        histories=histories,
        scale=(float(scale["low"]), float(scale["high"])),
        fusion=Fusion(spec["method"], {k: float(v) for k, v in spec["weights"].items()}, float(spec.get("rrf_k", 60))),
        item_embeddings=np.load(embeddings).astype(np.float32) if embeddings.is_file() else None,
        demographics=np.load(demographics) if demographics.is_file() else None,
        vocab=json.loads(vocab.read_text()) if vocab.is_file() else {},
    )
    check_consistency(bundle)
    return bundle


def check_consistency(bundle: Bundle) -> None:
    """Every per-item and per-user table has the catalogue's and id maps' sizes (raises BundleError)."""
    items, users = bundle.n_items, len(bundle.user_index)
    sizes = {
        "catalog.json items": (len(bundle.titles), items),
        "popularity.npz": (len(bundle.popularity), items),
        "histories.npz columns": (bundle.histories.shape[1], items),
        "histories.npz rows": (bundle.histories.shape[0], users),
    }
    if bundle.item_embeddings is not None:
        sizes["item_embeddings.npy rows"] = (len(bundle.item_embeddings), items)
    if bundle.demographics is not None:
        sizes["demographics.npy rows"] = (len(bundle.demographics), users)
    declared = bundle.manifest.get("catalog", {})
    if "items" in declared:
        sizes["manifest catalog.items"] = (int(declared["items"]), items)
        sizes["manifest catalog.users"] = (int(declared["users"]), users)
    wrong = [f"{name} has {got}, the id maps {want}" for name, (got, want) in sizes.items() if got != want]
    if wrong:
        raise BundleError(f"serving bundle {bundle.folder} does not fit together: {'; '.join(wrong)}; re-export it")
