"""Typed results: plain dataclasses built from the wire messages, so callers never touch protobufs."""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys.v1 import recommender_pb2 as pb


@dataclass(frozen=True)
class Item:
    item_id: int
    title: str
    genres: tuple[str, ...]
    year: int | None
    score: float
    reasons: tuple[str, ...] = ()

    @classmethod
    def from_pb(cls, m: pb.ScoredItem) -> Item:
        return cls(m.item_id, m.title, tuple(m.genres), m.year or None, m.score, tuple(m.reasons))


@dataclass(frozen=True)
class ModelCall:
    model: str
    version: str
    ms: float
    ok: bool
    error: str


@dataclass(frozen=True)
class Recommendations:
    items: list[Item]
    strategy: str  # "ensemble", "sae", "rbm", "two_tower", "popular"
    rung: str  # "popularity", "content", "full", "single_model"
    degraded: bool
    degraded_reasons: list[str]
    plan: str
    budget_ms: int
    model_calls: list[ModelCall]
    timings_ms: dict[str, float]
    request_id: str
    unknown_item_ids: list[int]
    bundle_version: str
    history_size: int
    cached: bool = False  # answered from the server's response cache
    profile_version: int = 0  # the user's stored feedback events when answered

    @classmethod
    def from_pb(cls, m: pb.RecommendResponse) -> Recommendations:
        return cls(
            items=[Item.from_pb(i) for i in m.items],
            strategy=pb.Strategy.Name(m.strategy_used).removeprefix("STRATEGY_").lower(),
            rung=pb.Rung.Name(m.rung).removeprefix("RUNG_").lower(),
            degraded=m.degraded,
            degraded_reasons=list(m.degraded_reasons),
            plan=m.plan,
            budget_ms=m.budget_ms,
            model_calls=[ModelCall(c.model, c.version, c.ms, c.ok, c.error) for c in m.model_calls],
            timings_ms={t.stage: t.ms for t in m.timings},
            request_id=m.request_id,
            unknown_item_ids=list(m.unknown_item_ids),
            bundle_version=m.bundle_version,
            history_size=m.history_size,
            cached=m.cached,
            profile_version=m.profile_version,
        )


@dataclass(frozen=True)
class SimilarItems:
    item: Item
    items: list[Item]
    request_id: str

    @classmethod
    def from_pb(cls, m: pb.SimilarItemsResponse) -> SimilarItems:
        return cls(Item.from_pb(m.item), [Item.from_pb(i) for i in m.items], m.request_id)


@dataclass(frozen=True)
class Onboarding:
    items: list[Item]
    request_id: str

    @classmethod
    def from_pb(cls, m: pb.OnboardingResponse) -> Onboarding:
        return cls([Item.from_pb(i) for i in m.items], m.request_id)


@dataclass(frozen=True)
class FeedbackReceipt:
    accepted: int  # events in the call
    profile_size: int
    request_id: str
    new_events: int = 0  # stored by this call
    duplicates: int = 0  # already stored (an earlier attempt of a retried call got through): ignored

    @classmethod
    def from_pb(cls, m: pb.RecordFeedbackResponse) -> FeedbackReceipt:
        return cls(m.accepted, m.profile_size, m.request_id, m.new_events, m.duplicates)


@dataclass(frozen=True)
class ModelStatus:
    name: str
    role: str
    variant: str
    ready: bool
    versions: tuple[str, ...]
    p95_ms: float
    calls: int


@dataclass(frozen=True)
class Models:
    models: list[ModelStatus]
    bundle_version: str
    dataset: str
    triton_ready: bool
    catalog_size: int
    fusion_method: str
    fusion_weights: dict[str, float] = field(default_factory=dict)
    registry_versions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_pb(cls, m: pb.ListModelsResponse) -> Models:
        return cls(
            [ModelStatus(s.name, s.role, s.variant, s.ready, tuple(s.versions), s.p95_ms, s.calls) for s in m.models],
            m.bundle_version,
            m.dataset,
            m.triton_ready,
            m.catalog_size,
            m.fusion_method,
            dict(m.fusion_weights),
            dict(m.registry_versions),
        )
