"""Drift features: what is compared between the training data and live traffic, and how.

Each feature is a histogram over fixed bins, computed the same way offline (export writes the
training data's histograms into the bundle as ``drift_reference.json``) and online (the server's
rolling windows). PSI = sum over bins of (live - ref) * ln(live / ref), proportions floored at
``EPSILON`` so an empty bin does not make it infinite. Rule of thumb: < 0.1 stable, > 0.25 shifted.

- ``history_length``: ratings per user (reference: each user's history in the bundle, which the
  server serves from; live: the profile size of each Recommend); bins are the reference's deciles.
- ``rating``: the rating values (one bin per level of the scale).
- ``popularity_decile``: which tenth of the catalogue, by training popularity, a rated or
  clicked item falls in (decile 0 = the most popular tenth of the items).
- ``genre``: the genre mix of rated/clicked items (an item with k genres adds 1/k to each).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPSILON = 1e-4
FILE = "drift_reference.json"
FEATURES = ("history_length", "rating", "popularity_decile", "genre")


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population-stability index of two histograms (counts or proportions) over the same bins."""
    e = np.maximum(np.asarray(expected, np.float64) / max(float(np.sum(expected)), 1e-12), EPSILON)
    a = np.maximum(np.asarray(actual, np.float64) / max(float(np.sum(actual)), 1e-12), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def popularity_deciles(counts: np.ndarray) -> np.ndarray:
    """Per item, its popularity decile (0 = most rated tenth of the catalogue); ties keep index order."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    deciles = np.empty(len(order), dtype=np.int64)
    deciles[order] = np.arange(len(order)) * 10 // max(len(order), 1)
    return deciles


def genre_weights(genres: np.ndarray) -> np.ndarray:
    """(items, genres) rows summing to 1 (0 for an item without genres)."""
    g = np.asarray(genres, np.float64)
    return g / np.maximum(g.sum(axis=1, keepdims=True), 1)


def length_bins(edges: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, np.asarray(lengths), side="right")


@dataclass(frozen=True)
class Reference:
    """The training data's histograms plus what the server needs to bin live traffic the same way."""

    expected: dict[str, np.ndarray]
    labels: dict[str, list[str]]
    length_edges: np.ndarray  # inner edges of the history-length bins
    levels: np.ndarray  # rating levels
    item_decile: np.ndarray  # per item index

    @classmethod
    def from_ratings(cls, lengths: np.ndarray, items: np.ndarray, ratings: np.ndarray, counts: np.ndarray,
                     genres: np.ndarray, genre_names: list[str], levels: np.ndarray) -> Reference:
        """Reference histograms: ``lengths`` per user; ``items``/``ratings`` (dense indices) of the
        training ratings; ``counts`` the training popularity per item."""
        lengths = np.asarray(lengths)[np.asarray(lengths) > 0]
        edges = np.unique(np.quantile(lengths, np.linspace(0.1, 0.9, 9)))
        deciles = popularity_deciles(counts)
        expected = {
            "history_length": np.bincount(length_bins(edges, lengths), minlength=len(edges) + 1).astype(float),
            "rating": np.asarray([np.sum(np.isclose(ratings, v)) for v in levels], float),
            "popularity_decile": np.bincount(deciles[items], minlength=10).astype(float),
            "genre": genre_weights(genres)[items].sum(axis=0),
        }
        labels = {"history_length": [f"<= {e:g}" for e in edges] + [f"> {edges[-1]:g}"],
                  "rating": [f"{v:g}" for v in levels], "popularity_decile": [f"d{d}" for d in range(10)],
                  "genre": list(genre_names)}
        return cls({k: v / max(v.sum(), 1e-12) for k, v in expected.items()}, labels, edges,
                   np.asarray(levels, float), deciles)

    def save(self, folder: Path) -> Path:
        data = {"features": {k: {"labels": self.labels[k], "expected": self.expected[k].tolist()}
                             for k in FEATURES},
                "length_edges": self.length_edges.tolist(), "levels": self.levels.tolist(),
                "item_decile": self.item_decile.tolist()}
        path = Path(folder) / FILE
        path.write_text(json.dumps(data))
        return path

    @classmethod
    def load(cls, folder: Path) -> Reference | None:
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        features = data["features"]
        return cls({k: np.asarray(features[k]["expected"], float) for k in FEATURES},
                   {k: list(features[k]["labels"]) for k in FEATURES}, np.asarray(data["length_edges"], float),
                   np.asarray(data["levels"], float), np.asarray(data["item_decile"], np.int64))
