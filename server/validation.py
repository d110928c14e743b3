"""Requests in, checked queries out: every field validated, every message says what to send instead."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from recsys import contract
from recsys.v1 import recommender_pb2 as pb

from server.bundle import Bundle
from server.coldstart import encode_demographics
from server.errors import InvalidRequest, NotFound
from server.settings import Settings

STRATEGIES = {
    pb.STRATEGY_UNSPECIFIED: "ensemble",
    **{value: name for name, value in contract.strategy_values(pb.Strategy).items()},
}
PRECISIONS = {pb.VARIANT_AUTO: "auto", pb.VARIANT_FP32: "fp32", pb.VARIANT_INT8: "int8", pb.VARIANT_FP16: "fp16"}
MAX_USER_ID = 128
MAX_TEXT = 64  # genre, gender, occupation: the longest known value is far shorter


def shown(text: str) -> str:
    """A caller's string as an error message quotes it: never more than MAX_TEXT characters back."""
    return repr(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "...")


@dataclass(frozen=True)
class Filters:
    genres: np.ndarray | None  # genre column indices (any of), None = no filter
    min_year: int
    max_year: int

    @property
    def active(self) -> bool:
        """Whether any filter is set (an inactive one allows every item)."""
        return self.genres is not None or bool(self.min_year) or bool(self.max_year)

    def mask(self, bundle: Bundle) -> np.ndarray:
        # O(catalogue x distinct genres <= known genres): one precomputed row per genre.
        if self.genres is not None:
            keep: np.ndarray = np.logical_or.reduce(bundle.genre_masks[self.genres], axis=0)
        else:
            keep = np.ones(bundle.n_items, dtype=bool)
        if self.min_year:
            keep &= bundle.years >= self.min_year
        if self.max_year:
            keep &= (bundle.years <= self.max_year) & (bundle.years > 0)
        return keep


@dataclass(frozen=True)
class RecommendQuery:
    user_id: str
    inline: dict[int, float]  # catalogue index -> rating
    unknown_item_ids: list[int]
    k: int
    strategy: str
    precision: str
    budget_ms: int
    exclude: np.ndarray
    filters: Filters
    explain: bool
    diversity: float
    demographics: np.ndarray | None


def check_k(k: int, settings: Settings) -> int:
    if not 1 <= k <= settings.max_k:
        raise InvalidRequest(f"k must be between 1 and {settings.max_k}; got {k}")
    return k


def check_user_id(user_id: str, required: bool) -> str:
    if required and not user_id:
        raise InvalidRequest("user_id is required")
    if len(user_id) > MAX_USER_ID or not user_id.isprintable():
        raise InvalidRequest(f"user_id must be at most {MAX_USER_ID} printable characters")
    return user_id


def check_rating(value: float, bundle: Bundle, where: str) -> float:
    low, high = bundle.scale
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequest(f"{where}: rating {value} is not on the scale {low:g}..{high:g}")
    return float(value)


def check_text(value: str, where: str) -> str:
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"{where} must be at most {MAX_TEXT} characters; got {len(value)}")
    return value


def check_filters(genres: Sequence[str], min_year: int, max_year: int, bundle: Bundle) -> Filters:
    # Checked before the loop: a request repeating a genre 300,000 times costs one comparison.
    if len(genres) > len(bundle.genre_names):
        raise InvalidRequest(f"{len(genres)} genres; at most {len(bundle.genre_names)} (each known genre once)")
    columns = set()
    for genre in genres:
        column = bundle.genre_column.get(genre)
        if column is None:
            raise InvalidRequest(f"unknown genre {shown(genre)}; known genres: {', '.join(bundle.genre_names)}")
        columns.add(column)
    for name, year in (("min_year", min_year), ("max_year", max_year)):
        if year and not 1800 <= year <= 2200:
            raise InvalidRequest(f"{name} must be a year between 1800 and 2200 (or 0 for no bound); got {year}")
    if min_year and max_year and min_year > max_year:
        raise InvalidRequest(f"min_year {min_year} is after max_year {max_year}")
    return Filters(np.asarray(sorted(columns), dtype=np.int64) if columns else None, min_year, max_year)


def check_exclusions(ids: Sequence[int], bundle: Bundle, settings: Settings) -> tuple[np.ndarray, list[int]]:
    if len(ids) > settings.max_exclusions:
        raise InvalidRequest(f"exclude_item_ids has {len(ids)} ids; at most {settings.max_exclusions}")
    return bundle.index_of(ids)


def recommend_query(request: pb.RecommendRequest, bundle: Bundle, settings: Settings) -> RecommendQuery:
    user_id = check_user_id(request.user_id, required=False)
    k = check_k(request.k, settings)
    if request.strategy not in STRATEGIES:
        raise InvalidRequest(f"unknown strategy {request.strategy}; use one of {sorted(pb.Strategy.keys())}")
    if request.variant not in PRECISIONS:
        raise InvalidRequest(f"unknown variant {request.variant}; use one of {sorted(pb.Variant.keys())}")
    if request.latency_budget_ms > settings.max_budget_ms:
        raise InvalidRequest(
            f"latency_budget_ms must be at most {settings.max_budget_ms}; got {request.latency_budget_ms}"
        )
    if len(request.ratings) > settings.max_ratings:
        raise InvalidRequest(f"{len(request.ratings)} inline ratings; at most {settings.max_ratings}")
    inline: dict[int, float] = {}
    unknown: list[int] = []
    for position, rating in enumerate(request.ratings):
        value = check_rating(rating.rating, bundle, f"ratings[{position}] (item {rating.item_id})")
        idx = bundle.item_index.get(rating.item_id)
        if idx is None:
            unknown.append(rating.item_id)
        else:
            inline[idx] = value  # a repeated item: the last rating wins
    exclude, unknown_excluded = check_exclusions(request.exclude_item_ids, bundle, settings)
    if not math.isfinite(request.diversity) or not 0.0 <= request.diversity <= 1.0:
        raise InvalidRequest(f"diversity must be between 0 (off) and 1; got {request.diversity}")
    demographics = None
    if request.HasField("demographics"):
        d = request.demographics
        if not 0 <= d.age <= 150:
            raise InvalidRequest(f"demographics.age must be between 0 (not given) and 150; got {d.age}")
        check_text(d.gender, "demographics.gender")
        check_text(d.occupation, "demographics.occupation")
        demographics = encode_demographics(bundle, d.age, d.gender, d.occupation)
    return RecommendQuery(
        user_id=user_id,
        inline=inline,
        unknown_item_ids=unknown + unknown_excluded,
        k=k,
        strategy=STRATEGIES[request.strategy],
        precision=PRECISIONS[request.variant],
        budget_ms=request.latency_budget_ms,
        exclude=exclude,
        filters=check_filters(request.genres, request.min_year, request.max_year, bundle),
        explain=request.explain,
        diversity=float(request.diversity),
        demographics=demographics,
    )


def known_item(item_id: int, bundle: Bundle) -> int:
    idx = bundle.item_index.get(item_id)
    if idx is None:
        raise NotFound(f"item {item_id} is not in the catalogue (bundle {bundle.version}, {bundle.n_items} items)")
    return idx
