"""Item-side answers from the bundle alone: similar items and the onboarding set for a new user."""

from __future__ import annotations

import numpy as np

from server.bundle import Bundle
from server.errors import NoAnswer
from server.fusion import in_order, mmr, ranked
from server.validation import Filters

ONBOARDING_DIVERSITY = 0.5  # popularity and genre spread weigh the same


def similar_items(bundle: Bundle, item: int, k: int, filters: Filters) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of two-tower item embeddings (the bias column left out), best first."""
    units = bundle.unit_embeddings
    if units is None:
        raise NoAnswer("this serving bundle has no two-tower item embeddings; export a two-tower model")
    similarity = units @ units[item]
    eligible = filters.mask(bundle)
    eligible[item] = False
    candidates = np.flatnonzero(eligible)
    best = ranked(candidates, similarity[candidates], limit=k)
    return best.items, best.scores


def onboarding_items(bundle: Bundle, k: int, filters: Filters, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Popular items spread over genres (MMR on genre overlap), for a new user to rate."""
    eligible = filters.mask(bundle)
    eligible[exclude] = False
    order = in_order(bundle.popularity_order, bundle.popularity, eligible).items
    relevance = np.log1p(np.clip(bundle.popularity[order], 0, None))
    picked = mmr(order, relevance, bundle.genres, k, ONBOARDING_DIVERSITY)
    return picked, bundle.popularity[picked]
