"""The gRPC servicer: thin async methods that validate, call plain functions and convert the answer.

Every RPC gets a request id (the caller's ``x-request-id`` header, or a new one), echoed in the
response and the trailing metadata and attached to every log line; errors become status codes
in one place (``server.errors.status_of``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from server.bundle import Bundle
from server.cache import ResponseCache, cache_key
from server.drift import DriftMonitor
from server.errors import InvalidRequest, NoAnswer, status_of
from server.items import onboarding_items, similar_items
from server.logs import request_id
from server.metrics import Metrics
from server.profiles import Profiles
from server.recommend import Answer, Recommender
from server.router import FanOutProfiles, Router
from server.runtime import BundleRuntime, PinnedPool
from server.settings import Settings
from server.shadow import Shadow
from server.store import Event, Store, StoreError
from server.tracing import annotate, stage, start_stage
from server.triton_models import ROLES, ModelPool
from server.validation import (
    STRATEGIES,
    check_exclusions,
    check_filters,
    check_k,
    check_rating,
    check_user_id,
    known_item,
    recommend_query,
)

log = logging.getLogger("server.rpc")
Reply = TypeVar("Reply")  # the response message of one RPC
RUNGS = {
    "popularity": pb.RUNG_POPULARITY,
    "content": pb.RUNG_CONTENT,
    "full": pb.RUNG_FULL,
    "single": pb.RUNG_SINGLE_MODEL,
}
STRATEGY_ENUM = {name: value for value, name in STRATEGIES.items() if value != pb.STRATEGY_UNSPECIFIED}
STRATEGY_NAME = {value: name for name, value in STRATEGY_ENUM.items()}
FEEDBACK_KINDS = {pb.FEEDBACK_KIND_RATING: "rating", pb.FEEDBACK_KIND_CLICK: "click"}


def scored_items(
    bundle: Bundle,
    items: list[int] | np.ndarray,
    scores: list[float] | np.ndarray,
    reasons: dict[int, list[str]] | None = None,
) -> list[pb.ScoredItem]:
    genres, ids, years, reasons = bundle.item_genre_names, bundle.item_ids, bundle.years, reasons or {}
    return [
        pb.ScoredItem(
            item_id=int(ids[i]),
            title=bundle.titles[i],
            genres=genres[i],
            year=int(years[i]),
            score=float(s),
            reasons=reasons.get(int(i), ()),
        )
        for i, s in zip(items, scores, strict=True)
    ]


class RecommenderService(pb_grpc.RecommenderServicer):
    def __init__(
        self,
        settings: Settings,
        bundle: Bundle,
        pool: ModelPool | PinnedPool,
        profiles: Profiles,
        store: Store,
        recommender: Recommender,
        metrics: Metrics,
        router: Router | None = None,
        shadow: Shadow | None = None,
        cache: ResponseCache | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.settings, self.store, self.metrics, self.shadow = settings, store, metrics, shadow
        self.cache, self.drift = cache, drift
        # The bundle, models, profiles and recommender are the router's live ones, which a rollout swaps.
        self.router = router or Router(BundleRuntime(bundle, pool, profiles, recommender))  # type: ignore[arg-type]

    @property
    def bundle(self) -> Bundle:
        return self.router.live.bundle

    @property
    def pool(self) -> PinnedPool:
        return self.router.live.pool

    @property
    def profiles(self) -> FanOutProfiles:
        return self.router.profiles

    @property
    def recommender(self) -> Recommender:
        return self.router.live.recommender

    async def _serve(
        self,
        rpc: str,
        context: grpc.aio.ServicerContext[Any, Any],
        handler: Callable[[str], Awaitable[tuple[Reply, str, str]]],
    ) -> Reply:
        """Run ``handler(request_id) -> (response, strategy, outcome)`` with ids, logs, metrics, status codes."""
        headers = dict(context.invocation_metadata() or ())
        rid = str(headers.get("x-request-id") or uuid.uuid4().hex)[:64]
        token = request_id.set(rid)
        annotate(request_id=rid)
        started = time.perf_counter()
        strategy, outcome, counted = "", "ok", False
        self.metrics.inflight.inc()
        context.set_trailing_metadata((("x-request-id", rid),))

        def count() -> bool:
            self.metrics.inflight.dec()
            self.metrics.requests.labels(rpc, strategy, outcome).inc()
            self.metrics.latency.labels(rpc, strategy, outcome).observe(time.perf_counter() - started)
            return True

        try:
            response, strategy, outcome = await handler(rid)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:  # finished too late: the caller has DEADLINE_EXCEEDED
                outcome = "deadline_exceeded"
            return response
        except asyncio.CancelledError:  # the caller went away, or its deadline passed: gRPC cancels us
            remaining = context.time_remaining()
            outcome = "deadline_exceeded" if remaining is not None and remaining <= 0 else "cancelled"
            raise
        except Exception as err:  # every failure leaves through the one mapping below
            code, message = status_of(err)
            outcome = code.name
            if code == grpc.StatusCode.INTERNAL:
                log.exception("rpc failed", extra={"rpc": rpc})
            else:
                log.info("rpc refused", extra={"rpc": rpc, "code": code.name, "reason": message})
            # Counted before the abort: abort sends the status at once, and a caller that reads the
            # metrics right after its error must find it counted.
            counted = count()
            await context.abort(code, f"{message} (request {rid})")
        finally:
            if not counted:
                count()
            request_id.reset(token)

    async def Recommend(
        self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecommendResponse:
        async def handle(rid: str) -> tuple[pb.RecommendResponse, str, str]:
            # One bundle answers the whole request: catalogue, model versions and titles (no mixing).
            runtime = self.router.route(request.user_id)
            bundle, answer, started = runtime.bundle, None, time.perf_counter()
            with self.router.serving(runtime):
                with stage("validation"):
                    query = recommend_query(request, bundle, self.settings)
                with stage("profile"):
                    version = await self._profile_version(runtime, query.user_id)
                key = None
                if self.cache is not None and self.cache.enabled and version is not None:
                    # The bundle version is part of the key: a rollout never serves another bundle's answer.
                    key = cache_key(request, version, bundle.version)
                    hit = await self.cache.get(key)
                    if hit is not None:
                        self.metrics.cache.labels("hit").inc()
                        hit.request_id, hit.cached = rid, True
                        del hit.timings[:]
                        hit.timings.append(pb.StageTiming(stage="cache", ms=(time.perf_counter() - started) * 1000))
                        return hit, STRATEGY_NAME.get(hit.strategy_used, ""), "ok"
                # The store read and cache lookup count against the caller's budget (the deadline
                # already includes them: time_remaining is measured from the call's start).
                spent_ms = (time.perf_counter() - started) * 1000
                budget_ms = min(query.budget_ms or self.settings.default_budget_ms, self.settings.max_budget_ms)
                query = dataclasses.replace(query, budget_ms=max(int(budget_ms - spent_ms), 1))
                try:
                    answer = await runtime.recommender.recommend(query, context.time_remaining(), rid)
                finally:
                    if self.shadow is not None:
                        self.shadow.observe(
                            runtime, request, answer, (time.perf_counter() - started) * 1000, sys.exc_info()[1]
                        )
            # Ended at the return; a failure before it leaves it unexported (the RPC span has the error).
            reply = start_stage("reply")
            self._record(answer)
            log.info(
                "recommend",
                extra={
                    "user": query.user_id,
                    "k": query.k,
                    "rung": answer.rung,
                    "plan": answer.plan,
                    "degraded": answer.degraded,
                    "bundle": bundle.version,
                    "ms": round(answer.timings["total"], 2),
                },
            )
            response = pb.RecommendResponse(
                items=scored_items(bundle, answer.items, answer.scores, answer.reasons),
                strategy_used=STRATEGY_ENUM[answer.strategy],
                rung=RUNGS[answer.rung],
                model_calls=[
                    pb.ModelCall(model=c.model, version=c.version, ms=c.ms, ok=c.ok, error=c.error)
                    for c in answer.calls
                ],
                degraded=answer.degraded,
                degraded_reasons=answer.degraded_reasons,
                timings=[pb.StageTiming(stage=s, ms=ms) for s, ms in answer.timings.items()],
                request_id=rid,
                unknown_item_ids=query.unknown_item_ids,
                budget_ms=int(answer.budget_ms),
                plan=answer.plan,
                bundle_version=bundle.version,
                history_size=answer.history_size,
                profile_version=version or 0,
            )
            if self.drift is not None and runtime is self.router.live:  # a candidate is not yet what is watched
                self.drift.observe_answer(query.user_id, answer.history_size, answer.model_scores)
            if key is not None and self.cache is not None:
                stored = await self.cache.put(key, response)
                self.metrics.cache.labels("miss" if stored else "uncacheable").inc()
            reply.end()
            return response, answer.strategy, "degraded" if answer.degraded else "ok"

        return await self._serve("Recommend", context, handle)

    async def _profile_version(self, runtime: BundleRuntime, user_id: str) -> int | None:
        """Bring the user's profile up to the store (another replica may have recorded feedback);
        None when the store is unreachable: the answer then uses what this replica holds, uncached."""
        try:
            if runtime.profiles.store.local_reads:  # cheaper than a thread hop, and never blocks on a write
                return runtime.profiles.refresh(user_id)
            return await asyncio.to_thread(runtime.profiles.refresh, user_id)
        except StoreError as err:
            log.warning("profile refresh failed", extra={"user": user_id, "reason": str(err)})
            return None

    def _record(self, answer: Answer) -> None:
        self.metrics.fallback.labels(answer.rung).inc()
        self.metrics.plans.labels(answer.plan).inc()
        if answer.degraded:
            self.metrics.degraded.labels("Recommend", "model_missing").inc()
        for call in answer.calls:
            if call.ok:
                self.metrics.model_latency.labels(call.model).observe(call.ms / 1000)
            else:
                self.metrics.model_errors.labels(call.model).inc()

    async def SimilarItems(
        self, request: pb.SimilarItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SimilarItemsResponse:
        async def handle(rid: str) -> tuple[pb.SimilarItemsResponse, str, str]:
            k = check_k(request.k, self.settings)
            filters = check_filters(list(request.genres), request.min_year, request.max_year, self.bundle)
            item = known_item(request.item_id, self.bundle)
            items, scores = similar_items(self.bundle, item, k, filters)
            return (
                pb.SimilarItemsResponse(
                    item=scored_items(self.bundle, [item], [1.0])[0],
                    items=scored_items(self.bundle, items, scores),
                    request_id=rid,
                ),
                "",
                "ok",
            )

        return await self._serve("SimilarItems", context, handle)

    async def GetOnboardingItems(
        self, request: pb.OnboardingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.OnboardingResponse:
        async def handle(rid: str) -> tuple[pb.OnboardingResponse, str, str]:
            k = check_k(request.k, self.settings)
            filters = check_filters(list(request.genres), 0, 0, self.bundle)
            exclude, _ = check_exclusions(list(request.exclude_item_ids), self.bundle, self.settings)
            items, scores = onboarding_items(self.bundle, k, filters, exclude)
            return pb.OnboardingResponse(items=scored_items(self.bundle, items, scores), request_id=rid), "", "ok"

        return await self._serve("GetOnboardingItems", context, handle)

    async def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordFeedbackResponse:
        async def handle(rid: str) -> tuple[pb.RecordFeedbackResponse, str, str]:
            user = check_user_id(request.user_id, required=True)
            events = self._events(user, request)
            try:
                new = await asyncio.to_thread(self.store.append, events, rid)
                await asyncio.to_thread(self.profiles.refresh, user)
            except (StoreError, sqlite3.Error) as err:
                raise NoAnswer(f"could not store the feedback ({err}); retry with the same event ids") from None
            duplicates = len(events) - new
            self.metrics.feedback_duplicates.inc(duplicates)
            if new:  # a retry (every id known) is not new traffic for the counters or drift windows
                for event in events:
                    self.metrics.feedback.labels(event.kind).inc()
                if self.drift is not None:
                    self.drift.observe_feedback(events)
            log.info("feedback", extra={"user": user, "events": len(events), "new": new})
            return (
                pb.RecordFeedbackResponse(
                    accepted=len(events),
                    new_events=new,
                    duplicates=duplicates,
                    profile_size=len(self.profiles.get(user)),
                    request_id=rid,
                ),
                "",
                "ok",
            )

        return await self._serve("RecordFeedback", context, handle)

    def _events(self, user: str, request: pb.RecordFeedbackRequest) -> list[Event]:
        if not request.events:
            raise InvalidRequest("events is empty; send at least one rating or click")
        if len(request.events) > self.settings.max_feedback_events:
            raise InvalidRequest(f"{len(request.events)} events; at most {self.settings.max_feedback_events} per call")
        now = int(time.time() * 1000)
        events = []
        for position, event in enumerate(request.events):
            where = f"events[{position}]"
            if event.kind not in FEEDBACK_KINDS:
                raise InvalidRequest(f"{where}: kind must be FEEDBACK_KIND_RATING or FEEDBACK_KIND_CLICK")
            if event.timestamp_ms < 0:
                raise InvalidRequest(f"{where}: timestamp_ms must be milliseconds since 1970 (or 0 for now)")
            known_item(event.item_id, self.bundle)
            kind = FEEDBACK_KINDS[event.kind]
            rating = check_rating(event.rating, self.bundle, where) if kind == "rating" else None
            if len(event.event_id) > 128:
                raise InvalidRequest(f"{where}: event_id is {len(event.event_id)} characters; at most 128")
            events.append(
                Event(user, int(event.item_id), kind, rating, event.timestamp_ms or now, event.event_id).with_id()
            )
        return events

    async def ListModels(
        self,
        request: pb.ListModelsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ListModelsResponse:
        async def handle(rid: str) -> tuple[pb.ListModelsResponse, str, str]:
            models = []
            for role in ROLES:
                for name in self.pool.by_role[role]:
                    window = self.pool.latency.window(name)
                    models.append(
                        pb.ModelStatus(
                            name=name,
                            role=role,
                            variant=name[len(role) + 1 :],
                            ready=name in self.pool.ready,
                            versions=self.pool.versions.get(name, []),
                            p95_ms=window.p95(),
                            calls=window.calls,
                        )
                    )
            fusion = self.bundle.fusion
            return (
                pb.ListModelsResponse(
                    models=models,
                    bundle_version=self.bundle.version,
                    dataset=str(self.bundle.manifest.get("dataset", "")),
                    registry_versions={k: int(v) for k, v in self.bundle.manifest.get("registry_versions", {}).items()},
                    fusion_method=fusion.method,
                    fusion_weights=fusion.weights,
                    catalog_size=self.bundle.n_items,
                    triton_ready=self.pool.live,
                ),
                "",
                "ok",
            )

        return await self._serve("ListModels", context, handle)
