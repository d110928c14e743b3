"""The SDK's methods, written once: each builds a request and hands it to the flavour's ``_call``.

The sync client's ``_call`` returns the result; the asyncio client's returns an awaitable of
it, so ``client.recommend(...)`` there is awaited. Either raises a ``clients.errors`` type.
The class is generic in what each method returns (the result, or an awaitable of it), so both
flavours are typed as they behave without repeating the signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from recsys import contract
from recsys.v1 import recommender_pb2 as pb

from clients.feedback import Feedback, feedback_events
from clients.results import FeedbackReceipt, Models, Onboarding, Recommendations, SimilarItems

STRATEGIES = contract.strategy_values(pb.Strategy)
VARIANTS = {"auto": pb.VARIANT_AUTO, "fp32": pb.VARIANT_FP32, "int8": pb.VARIANT_INT8, "fp16": pb.VARIANT_FP16}


Choice = TypeVar("Choice")  # an enum value of the proto (Strategy, Variant)
RecommendT = TypeVar("RecommendT")
SimilarT = TypeVar("SimilarT")
OnboardingT = TypeVar("OnboardingT")
FeedbackT = TypeVar("FeedbackT")
ModelsT = TypeVar("ModelsT")
HealthT = TypeVar("HealthT")


def _choice(table: Mapping[str, Choice], value: str, what: str) -> Choice:
    if value not in table:
        raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(table)}")
    return table[value]


class RecommenderApi(Generic[RecommendT, SimilarT, OnboardingT, FeedbackT, ModelsT, HealthT]):
    """``timeout`` on every method is the call's deadline in seconds (None: the client's default)."""

    def _call(self, method: str, request: Message, parse: Callable[[Any], Any], timeout: float | None) -> Any:
        raise NotImplementedError

    def recommend(
        self,
        user_id: str | int | None = None,
        *,
        k: int = 10,
        ratings: dict[int, float] | None = None,
        strategy: str = "ensemble",
        variant: str = "auto",
        budget_ms: int = 0,
        exclude: Iterable[int] = (),
        genres: Iterable[str] = (),
        min_year: int = 0,
        max_year: int = 0,
        explain: bool = False,
        diversity: float = 0.0,
        age: int = 0,
        gender: str = "",
        occupation: str = "",
        timeout: float | None = None,
    ) -> RecommendT:
        request = pb.RecommendRequest(
            user_id="" if user_id is None else str(user_id),
            k=k,
            ratings=[pb.Rating(item_id=i, rating=r) for i, r in (ratings or {}).items()],
            strategy=_choice(STRATEGIES, strategy, "strategy"),
            variant=_choice(VARIANTS, variant, "variant"),
            latency_budget_ms=budget_ms,
            exclude_item_ids=list(exclude),
            genres=list(genres),
            min_year=min_year,
            max_year=max_year,
            explain=explain,
            diversity=diversity,
        )
        if age or gender or occupation:
            request.demographics.CopyFrom(pb.Demographics(age=age, gender=gender, occupation=occupation))
        return cast(RecommendT, self._call("Recommend", request, Recommendations.from_pb, timeout))

    def similar_items(
        self,
        item_id: int,
        *,
        k: int = 10,
        genres: Iterable[str] = (),
        min_year: int = 0,
        max_year: int = 0,
        timeout: float | None = None,
    ) -> SimilarT:
        request = pb.SimilarItemsRequest(
            item_id=item_id, k=k, genres=list(genres), min_year=min_year, max_year=max_year
        )
        return cast(SimilarT, self._call("SimilarItems", request, SimilarItems.from_pb, timeout))

    def onboarding_items(
        self, *, k: int = 20, genres: Iterable[str] = (), exclude: Iterable[int] = (), timeout: float | None = None
    ) -> OnboardingT:
        request = pb.OnboardingRequest(k=k, genres=list(genres), exclude_item_ids=list(exclude))
        return cast(OnboardingT, self._call("GetOnboardingItems", request, Onboarding.from_pb, timeout))

    def record_feedback(
        self,
        user_id: str | int,
        *,
        ratings: dict[int, float] | None = None,
        clicks: Iterable[int] = (),
        events: Iterable[Feedback] = (),
        timeout: float | None = None,
    ) -> FeedbackT:
        """Ratings, clicks and ``Feedback`` events (with your own ids/times); the request, ids
        included, is built once, so the retries of this call cannot store an event twice."""
        request = pb.RecordFeedbackRequest(user_id=str(user_id), events=feedback_events(ratings, clicks, events))
        return cast(FeedbackT, self._call("RecordFeedback", request, FeedbackReceipt.from_pb, timeout))

    def list_models(self, *, timeout: float | None = None) -> ModelsT:
        return cast(ModelsT, self._call("ListModels", pb.ListModelsRequest(), Models.from_pb, timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> HealthT:
        """``grpc.health.v1`` status: "SERVING", "NOT_SERVING", ... (service "" is the whole server)."""
        status = self._call(
            "health.Check",
            health_pb2.HealthCheckRequest(service=service),
            lambda r: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status),
            timeout,
        )
        return cast(HealthT, status)
