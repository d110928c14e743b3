"""Live drift: rolling windows over requests and feedback, compared with the bundle's reference.

The server feeds every new feedback event and every computed answer in (its profile size and
each model's top scores); each feature keeps its last ``window`` observations, and once a
feature has ``min_samples`` its PSI against the bundle's reference is exported as
``recsys_drift_psi{feature}`` (alert: > 0.25). ``python -m server.drift`` writes the same
comparison as an offline report (PNG + HTML) from the store's events.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable

import numpy as np
from prometheus_client import Gauge

from server.bundle import Bundle
from server.drift.reference import SCORE_DEPTH, Reference, genre_weights, length_bins, psi, score_bins, score_feature
from server.store import Event

__all__ = ["DriftMonitor", "Reference", "Window", "psi"]


class Window:
    """Counts over the last ``size`` observations (each a vector over the feature's bins)."""

    def __init__(self, bins: int, size: int) -> None:
        self.counts = np.zeros(bins)
        self.rows: deque[np.ndarray] = deque()
        self.size = size

    def add(self, row: np.ndarray) -> None:
        self.rows.append(row)
        self.counts += row
        if len(self.rows) > self.size:
            self.counts -= self.rows.popleft()

    def __len__(self) -> int:
        return len(self.rows)


class DriftMonitor:
    """Rolling windows of every feature of the reference, and their PSI as gauges.

    ``follow`` switches to another bundle's reference (a rollout promoted it): the windows start
    empty, since what was observed under the old bundle says nothing about the new one. Without a
    reference (a bundle exported before drift references) the monitor observes nothing.
    """

    def __init__(
        self,
        reference: Reference | None,
        genres: np.ndarray,
        item_index: dict[int, int],
        gauge: Gauge | None,
        window: int = 10_000,
        min_samples: int = 200,
    ) -> None:
        self.gauge, self.size, self.min_samples = gauge, window, min_samples
        self.version = ""  # the bundle whose reference is watched ("" until ``follow``)
        self.windows: dict[str, Window] = {}
        self._reset(reference, genres, item_index)

    def follow(self, bundle: Bundle) -> None:
        if bundle.version != self.version:
            self._reset(Reference.load(bundle.folder), bundle.genres, bundle.item_index)
            self.version = bundle.version

    def _reset(self, reference: Reference | None, genres: np.ndarray, item_index: dict[int, int]) -> None:
        old = set(self.windows)
        self.reference, self.item_index = reference, item_index
        expected = reference.expected if reference is not None else {}
        self._genre = genre_weights(genres)
        self._onehot = {k: np.eye(len(v)) for k, v in expected.items() if k != "genre"}
        self.windows = {k: Window(len(v), self.size) for k, v in expected.items()}
        # Per user, the features already counted for it in the window (see observe_answer).
        self._recent: OrderedDict[str, set[str]] = OrderedDict()
        if self.gauge is not None:  # NaN until measured: "not yet known" (never > 0.25), not "no drift"
            for feature in old - set(self.windows):
                self.gauge.remove(feature)  # a model the new bundle does not serve
            for feature in self.windows:
                self.gauge.labels(feature).set(float("nan"))

    def observe_feedback(self, events: Iterable[Event]) -> None:
        if self.reference is None:
            return
        for event in events:
            idx = self.item_index.get(event.item_id)
            if idx is None:
                continue
            if event.kind == "rating" and event.rating is not None:
                level = int(np.argmin(np.abs(self.reference.levels - event.rating)))
                self.windows["rating"].add(self._onehot["rating"][level])
            self.windows["popularity_decile"].add(self._onehot["popularity_decile"][self.reference.item_decile[idx]])
            self.windows["genre"].add(self._genre[idx])
        self._publish(("rating", "popularity_decile", "genre"))

    def observe_answer(
        self,
        user_id: str,
        history_size: int,
        model_scores: dict[str, np.ndarray] | None = None,
    ) -> None:
        """One computed Recommend answer: the size of the profile it ranked for, and each model's
        top scores (best first; the first ``SCORE_DEPTH`` count, so O(k) per answer). The
        reference counts each user once, so a feature already counted for a user in the window is
        not counted again (a heavy requester would otherwise look like a shift in users)."""
        if not user_id or history_size <= 0 or self.reference is None:
            return
        counted = self._recent.get(user_id)
        if counted is None:
            counted = self._recent[user_id] = set()
            while len(self._recent) > self.size:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(user_id)
        changed = []
        if "history_length" not in counted:
            b = int(length_bins(self.reference.length_edges, [history_size])[0])
            self.windows["history_length"].add(self._onehot["history_length"][b])
            changed.append("history_length")
        floors = self.reference.score_min_history
        for model, scores in (model_scores or {}).items():
            feature = score_feature(model)
            if feature in counted or feature not in self.windows or history_size < floors.get(feature, 1):
                continue
            top = np.asarray(scores[:SCORE_DEPTH], np.float64)
            onehot, window = self._onehot[feature], self.windows[feature]
            for b in score_bins(self.reference.score_edges[feature], top[np.isfinite(top)]):
                window.add(onehot[b])
            changed.append(feature)
        counted.update(changed)
        self._publish(changed)

    def psi(self) -> dict[str, float | None]:
        """PSI per feature; None until the feature's window holds ``min_samples`` observations."""
        if self.reference is None:  # nothing is observed without a reference
            return {}
        return {
            k: psi(self.reference.expected[k], w.counts) if len(w) >= self.min_samples else None
            for k, w in self.windows.items()
        }

    def _publish(self, features: Iterable[str]) -> None:
        if self.gauge is None or self.reference is None:
            return
        for feature in features:
            window = self.windows[feature]
            if len(window) >= self.min_samples:
                self.gauge.labels(feature).set(psi(self.reference.expected[feature], window.counts))
