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
- ``score_<model>`` (one per catalogue model the bundle serves: ``score_sae``, ``score_rbm``,
  ``score_ease``, ``score_two_tower``): the scores of the model's top ``SCORE_DEPTH`` items. Reference: the
  exported fp32 graph run for the bundle's users on the histories the server holds for them
  (the users the server would call the model for: the catalogue scorers rank only histories of
  ``contract.FULL_MIN_RATINGS`` or more; live answers for shorter histories are not counted),
  i.e. the answers the model gives when live users look like the users it learnt from; live: the
  top of each model list in each computed answer. Bins are the reference's score deciles. A
  moving score mix means the inputs moved (new kinds of users, other histories) or the served
  model no longer matches its reference (a bad variant, a bundle without its own reference).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from recsys import contract

EPSILON = 1e-4
FILE = contract.BUNDLE_FILES["drift_reference"]
FEATURES = ("history_length", "rating", "popularity_decile", "genre")  # every bundle's reference has these
SCORE_DEPTH = 10  # top scores per model and answer, offline and live: a fixed depth, whatever k asked


def score_feature(model: str) -> str:
    return f"score_{model}"


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
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
    weights: np.ndarray = g / np.maximum(g.sum(axis=1, keepdims=True), 1)
    return weights


def length_bins(edges: np.ndarray, lengths: npt.ArrayLike) -> np.ndarray:
    return np.searchsorted(edges, np.asarray(lengths), side="right")


def score_bins(edges: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Bin i holds edges[i-1] < score <= edges[i] (what the labels' "<= edge" say)."""
    return np.searchsorted(edges, np.asarray(scores), side="left")


@dataclass(frozen=True)
class Reference:
    """The training data's histograms plus what the server needs to bin live traffic the same way."""

    expected: dict[str, np.ndarray]
    labels: dict[str, list[str]]
    length_edges: np.ndarray  # inner edges of the history-length bins
    levels: np.ndarray  # rating levels
    item_decile: np.ndarray  # per item index
    score_edges: dict[str, np.ndarray] = field(default_factory=dict)  # per score feature: inner bin edges
    # Per score feature: the shortest history its reference users had (see ``with_scores``).
    score_min_history: dict[str, int] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.expected)

    @classmethod
    def from_ratings(
        cls,
        lengths: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        counts: np.ndarray,
        genres: np.ndarray,
        genre_names: list[str],
        levels: np.ndarray,
    ) -> Reference:
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
        labels = {
            "history_length": [f"<= {e:g}" for e in edges] + [f"> {edges[-1]:g}"],
            "rating": [f"{v:g}" for v in levels],
            "popularity_decile": [f"d{d}" for d in range(10)],
            "genre": list(genre_names),
        }
        return cls(
            {k: v / max(v.sum(), 1e-12) for k, v in expected.items()}, labels, edges, np.asarray(levels, float), deciles
        )

    def with_scores(self, scores: dict[str, np.ndarray], min_history: dict[str, int] | None = None) -> Reference:
        """This reference plus a ``score_<model>`` feature per model: ``scores[model]`` holds the
        reference top-``SCORE_DEPTH`` scores (all users' together); its deciles become the bins.
        ``min_history[model]``: the shortest history among those users. A model's scores grow with
        the history (EASE sums over the rated items), so live answers count only from users with at
        least that many ratings: the same population, or short histories would read as drift."""
        expected, labels, edges = dict(self.expected), dict(self.labels), dict(self.score_edges)
        floors = dict(self.score_min_history)
        for model, values in scores.items():
            values = np.asarray(values, np.float64)
            values = values[np.isfinite(values)]
            if not len(values):
                continue
            name = score_feature(model)
            edges[name] = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
            counts = np.bincount(score_bins(edges[name], values), minlength=len(edges[name]) + 1).astype(float)
            expected[name] = counts / counts.sum()
            labels[name] = [f"<= {e:.3g}" for e in edges[name]] + [f"> {edges[name][-1]:.3g}"]
            floors[name] = int((min_history or {}).get(model, 1))
        return replace(self, expected=expected, labels=labels, score_edges=edges, score_min_history=floors)

    def save(self, folder: Path) -> Path:
        data = {
            "features": {k: {"labels": self.labels[k], "expected": self.expected[k].tolist()} for k in self.features},
            "length_edges": self.length_edges.tolist(),
            "levels": self.levels.tolist(),
            "item_decile": self.item_decile.tolist(),
            "score_edges": {k: v.tolist() for k, v in self.score_edges.items()},
            "score_min_history": self.score_min_history,
        }
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
        # References written before score features have none: the monitor then watches the rest.
        return cls(
            {k: np.asarray(v["expected"], float) for k, v in features.items()},
            {k: list(v["labels"]) for k, v in features.items()},
            np.asarray(data["length_edges"], float),
            np.asarray(data["levels"], float),
            np.asarray(data["item_decile"], np.int64),
            {k: np.asarray(v, float) for k, v in data.get("score_edges", {}).items()},
            # Written before populations were: every user with a rating (what export then pooled).
            {k: int(v) for k, v in data.get("score_min_history", {}).items()},
        )
