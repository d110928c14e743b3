"""Reasons a caller can show next to an item: the liked item it resembles, the model that ranked it."""

from __future__ import annotations

import numpy as np

from server.bundle import Bundle
from server.fusion import RankedList


def reasons(
    bundle: Bundle, picked: np.ndarray, liked: np.ndarray, lists: dict[str, RankedList], popular_with: str
) -> dict[int, list[str]]:
    """Reasons per picked catalogue index.

    ``liked``: indices of the user's items rated at or above the "liked" threshold;
    ``popular_with``: the popularity segment, for items no model or liked item explains.
    """
    out: dict[int, list[str]] = {int(i): [] for i in picked}
    units = bundle.unit_embeddings  # taste only: the bias column is left out
    if len(liked) and units is not None:
        similarity = units[picked] @ units[liked].T
        best = similarity.argmax(axis=1)
        for row, idx in enumerate(picked):
            out[int(idx)].append(f"because you liked {bundle.titles[liked[best[row]]]}")
    for idx in picked:
        positions = {
            name: np.flatnonzero(ranking.items[:100] == idx)
            for name, ranking in lists.items()
            if name not in ("popularity", "content")
        }
        ranks = {name: int(p[0]) + 1 for name, p in positions.items() if len(p)}
        if ranks:
            name = min(ranks, key=ranks.__getitem__)
            out[int(idx)].append(f"ranked #{ranks[name]} by {name}")
        if not out[int(idx)]:
            out[int(idx)].append(f"popular with {popular_with}")
    return out
