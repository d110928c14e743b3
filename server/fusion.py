"""Fusing the models' ranked lists into one score per catalogue item, as the training side fitted it.

Triton returns each model's top-N (plus its scores for the server's candidates), not a score
for every item, so fusion works on partial rankings. Reciprocal-rank fusion gives an item a
model did not rank the rank just after that model's list: it sits below everything the model
ranked, which is all the list says about it. Weighted fusion z-normalises each model's listed
scores and gives unlisted items the lowest listed z. Over full lists both equal
``training.fusion.fuse`` (tested); served lists leave out rated items, so ranks differ in detail
from the offline fusion. ``loadtest.benches.serving`` measures the served NDCG@10 (0.460 vs 0.452 offline).

Only the union of the lists is scored: an item in no list gets every model's floor, which no
listed item falls below, so the best items of the catalogue are always in the union and a
request's cost grows with the lists, not with the catalogue (60k items cost as much as 1.7k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankedList:
    items: np.ndarray  # catalogue indices, best first
    scores: np.ndarray  # aligned, descending


def ranked(items: np.ndarray, scores: np.ndarray, limit: int | None = None) -> RankedList:
    """Order (items, scores) best first, dropping non-finite scores (blocked items).

    ``limit`` keeps only the best that many (a partial sort: a catalogue-wide list per request
    would cost a full sort, and ranks that deep add almost nothing to a fusion).
    """
    keep = np.isfinite(scores)
    items, scores = np.asarray(items)[keep], np.asarray(scores, dtype=np.float64)[keep]
    if limit is not None and len(scores) > limit:
        best = np.argpartition(-scores, limit - 1)[:limit]
        items, scores = items[best], scores[best]
    order = np.argsort(-scores, kind="stable")
    return RankedList(items[order].astype(np.int64), scores[order])


def in_order(order: np.ndarray, scores: np.ndarray, keep: np.ndarray, limit: int | None = None) -> RankedList:
    """The items of a precomputed best-first ``order`` that ``keep`` allows: no sort per request.

    ``limit``: only the first that many, reading ``order`` in chunks, so a request reads about
    ``limit`` entries of it rather than the whole catalogue.
    """
    if limit is None:
        items = order[keep[order]]
        return RankedList(items, scores[items])
    found: list[np.ndarray] = []
    start, chunk = 0, max(2 * limit, 64)
    while start < len(order) and sum(len(f) for f in found) < limit:
        part = order[start : start + chunk]
        found.append(part[keep[part]])
        start += chunk
    items = np.concatenate(found)[:limit] if found else order[:0]
    return RankedList(items, scores[items])


def merge(top: RankedList, candidates: np.ndarray, candidate_scores: np.ndarray) -> RankedList:
    """A model's top-N plus its scores for extra candidates: one list, since both are the same score."""
    extra = ~_member(candidates, top.items)
    return ranked(np.concatenate([top.items, candidates[extra]]), np.concatenate([top.scores, candidate_scores[extra]]))


def _member(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """``np.isin(values, among)`` by one sort and a binary search: np.isin's general machinery cost
    about 2.5x as much on these short lists (4.6% of the server's samples under load)."""
    if not len(among):
        return np.zeros(len(values), dtype=bool)
    known = np.sort(among)
    at = np.minimum(np.searchsorted(known, values), len(known) - 1)
    return np.asarray(known[at] == values, dtype=bool)


def fuse(lists: dict[str, RankedList], weights: dict[str, float], method: str, rrf_k: float) -> RankedList:
    """The fused ranking of the union of the lists' items, best first (higher score is better).

    Lists without a weight score nothing but still bring their items in, so a short union is
    filled in their order (popularity, passed first, orders what no model ranked). Ties keep
    the order in which the lists first named the items.
    """
    named = [r.items for r in lists.values() if len(r.items)]
    if not named:
        return RankedList(np.zeros(0, dtype=np.int64), np.zeros(0))
    union, first = np.unique(np.concatenate(named), return_index=True)
    total = np.zeros(len(union), dtype=np.float64)
    for name, ranking in lists.items():
        weight = weights.get(name, 0.0)
        if weight <= 0 or len(ranking.items) == 0:
            continue
        if method == "rrf":
            listed = 1.0 / (rrf_k + np.arange(1, len(ranking.items) + 1))
            floor = 1.0 / (rrf_k + len(ranking.items) + 1)
        else:
            std = ranking.scores.std()
            listed = (ranking.scores - ranking.scores.mean()) / (std if std > 0 else 1.0)
            floor = listed.min()
        per_item = np.full(len(union), floor)
        per_item[np.searchsorted(union, ranking.items)] = listed
        total += weight * per_item
    order = np.lexsort((first, -total))
    return RankedList(union[order].astype(np.int64), total[order])


def mmr(order: np.ndarray, relevance: np.ndarray, genres: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal-marginal-relevance re-ranking on genre overlap (Jaccard).

    ``order``: eligible items best first; ``relevance``: their scores (same order). Each step
    picks the item maximising ``(1 - diversity) * relevance - diversity * max overlap with the
    items picked so far``; relevance is min-max scaled so the two terms are comparable.
    """
    pool = order[: max(k * 5, k)]
    rel = relevance[: len(pool)]
    span = rel.max() - rel.min() if len(rel) else 0.0
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    g = genres[pool].astype(np.float64)
    sizes = g.sum(axis=1)
    overlap = g @ g.T
    jaccard = overlap / np.maximum(sizes[:, None] + sizes[None, :] - overlap, 1.0)
    picked: list[int] = []
    max_sim = np.zeros(len(pool))
    available = np.ones(len(pool), dtype=bool)
    for _ in range(min(k, len(pool))):
        value = np.where(available, (1 - diversity) * rel - diversity * max_sim, -np.inf)
        best = int(np.argmax(value))
        picked.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, jaccard[best])
    return pool[picked]
