"""Live drift: rolling windows over requests and feedback, compared with the bundle's reference.

The server feeds every new feedback event and every computed answer in; each feature keeps its
last ``window`` observations, and once a feature has ``min_samples`` its PSI against the bundle's
reference is exported as ``recsys_drift_psi{feature}`` (alert: > 0.25). ``python -m server.drift``
writes the same comparison as an offline report (PNG + HTML) from the store's events.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable

import numpy as np
from prometheus_client import Gauge

from server.drift.reference import FEATURES, Reference, genre_weights, length_bins, psi
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
    def __init__(self, reference: Reference, genres: np.ndarray, item_index: dict[int, int], gauge: Gauge | None,
                 window: int = 10_000, min_samples: int = 200) -> None:
        self.reference, self.item_index, self.gauge = reference, item_index, gauge
        self.min_samples = min_samples
        self._genre = genre_weights(genres)
        self._onehot = {k: np.eye(len(reference.expected[k])) for k in ("history_length", "rating",
                                                                           "popularity_decile")}
        self.windows = {k: Window(len(reference.expected[k]), window) for k in FEATURES}
        self._recent: OrderedDict[str, None] = OrderedDict()  # users counted in the history-length window
        if gauge is not None:  # NaN until measured: "not yet known" (never > 0.25), not "no drift"
            for feature in FEATURES:
                gauge.labels(feature).set(float("nan"))

    def observe_feedback(self, events: Iterable[Event]) -> None:
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

    def observe_answer(self, user_id: str, history_size: int) -> None:
        """One computed Recommend answer: the size of the profile it ranked for. The reference counts
        each user once, so a user already in the window is not counted again (a heavy requester
        would otherwise look like a shift in users' histories)."""
        if not user_id or history_size <= 0:
            return
        if user_id in self._recent:
            self._recent.move_to_end(user_id)
            return
        self._recent[user_id] = None
        while len(self._recent) > self.windows["history_length"].size:
            self._recent.popitem(last=False)
        b = int(length_bins(self.reference.length_edges, [history_size])[0])
        self.windows["history_length"].add(self._onehot["history_length"][b])
        self._publish(("history_length",))

    def psi(self) -> dict[str, float | None]:
        """PSI per feature; None until the feature's window holds ``min_samples`` observations."""
        return {k: psi(self.reference.expected[k], w.counts) if len(w) >= self.min_samples else None
                for k, w in self.windows.items()}

    def _publish(self, features: Iterable[str]) -> None:
        if self.gauge is None:
            return
        for feature in features:
            window = self.windows[feature]
            if len(window) >= self.min_samples:
                self.gauge.labels(feature).set(psi(self.reference.expected[feature], window.counts))
