"""What a rollout learns from each Recommend: errors and degraded answers per bundle, and for a
share of requests both bundles answering the same request side by side in the background.

Latency is compared only on those pairs, both computed at the same moment on the same loop in
the background, and only when both ran the same plan (see ``_pair``). The pair never delays or
changes the answer sent: it starts after the answer is built, and at most ``MAX_COMPARISONS``
pairs run at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Literal

from recsys.v1 import recommender_pb2 as pb

from server.errors import BudgetExhausted, InvalidRequest
from server.recommend import Answer
from server.rollout import RolloutManager
from server.router import CANARY, SHADOW
from server.runtime import BundleRuntime
from server.validation import recommend_query

log = logging.getLogger("server.rollout")
MAX_COMPARISONS = 8
CALLER_ERRORS = (InvalidRequest, BudgetExhausted, asyncio.CancelledError)


class Shadow:
    def __init__(self, rollouts: RolloutManager) -> None:
        self.rollouts = rollouts
        self.tasks: set[asyncio.Task[None]] = set()

    def observe(
        self,
        runtime: BundleRuntime,
        request: pb.RecommendRequest,
        answer: Answer | None,
        ms: float,
        raised: BaseException | None,
    ) -> None:
        """After each Recommend (``raised``: what it raised, if it did)."""
        if isinstance(raised, CALLER_ERRORS):
            return  # the caller's doing (bad input, deadline gone, cancelled), not the bundle's
        error = answer is None
        rollouts, router = self.rollouts, self.rollouts.router
        rollouts.metrics.answers.labels(
            runtime.version, "error" if error else "degraded" if answer is not None and answer.degraded else "ok"
        ).inc()
        rollouts.metrics.latency.labels(runtime.version).observe(ms / 1000)
        if router.stage not in (SHADOW, CANARY) or router.candidate is None:
            return
        rollouts.guardrails.record(runtime is router.candidate, None, error, answer is not None and answer.degraded)
        if (
            answer is None
            or len(self.tasks) >= MAX_COMPARISONS
            or random.random() >= rollouts.settings.rollout_shadow_share
        ):
            return
        task = asyncio.create_task(self._pair(router.live, router.candidate, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _pair(self, live: BundleRuntime, candidate: BundleRuntime, request: pb.RecommendRequest) -> None:
        (live_answer, live_ms), (cand_answer, cand_ms) = await asyncio.gather(
            self._answer(live, request), self._answer(candidate, request)
        )
        guardrails, router = self.rollouts.guardrails, self.rollouts.router
        if router.candidate is not candidate or router.live is not live or live_answer is False or cand_answer is False:
            return  # the rollout moved on meanwhile, or the request is valid for one bundle only
        # Latency only when both ran the same plan: right after a load, the live bundle's p95 book
        # remembers the slow calls of the load minute and its planner sheds models, so a full
        # candidate answer next to a shed live one would look slow for doing more work.
        same_plan = live_answer is not None and cand_answer is not None and live_answer.plan == cand_answer.plan
        for side, got, ms in ((False, live_answer, live_ms), (True, cand_answer, cand_ms)):
            guardrails.record(side, ms if same_plan else None, got is None, got is not None and got.degraded)
        if same_plan and live_answer.calls:  # type: ignore[union-attr]
            # Overlap too only where both ran the same models: popularity-only answers agree by
            # construction, and in the first bench a scrambled candidate kept 0.42 mean overlap
            # over all pairs (under the 0.3 it failed on model-ranked ones alone).
            mine = {int(live.bundle.item_ids[i]) for i in live_answer.items[:10]}  # type: ignore[union-attr]
            other_ids = {int(candidate.bundle.item_ids[i]) for i in cand_answer.items[:10]}  # type: ignore[union-attr]
            guardrails.record_overlap(len(mine & other_ids) / max(len(mine), 1))
            self.rollouts.metrics.overlap.set(guardrails.overlap)

    async def _answer(
        self, runtime: BundleRuntime, request: pb.RecommendRequest
    ) -> tuple[Answer | Literal[False] | None, float]:
        """(answer, ms); None when it failed, False when the request is not valid for this bundle."""
        with self.rollouts.router.serving(runtime):
            started = time.perf_counter()
            try:
                query = recommend_query(request, runtime.bundle, self.rollouts.settings)
                answer = await runtime.recommender.recommend(query, None, "shadow")
                return answer, (time.perf_counter() - started) * 1000
            except CALLER_ERRORS:
                return False, 0.0
            except Exception:
                log.exception("shadow answer failed", extra={"bundle": runtime.version})
                return None, 0.0

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
