"""What a rollout learns from each Recommend: guardrail samples, and in the background the same
request answered by the other bundle (a share of them), to compare top-10s.

The comparison never delays or changes the answer sent: it starts after the answer is built,
runs under the request's budget, and at most ``MAX_COMPARISONS`` run at once so a slow
candidate cannot pile work onto the server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

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

    def observe(self, runtime: BundleRuntime, request: pb.RecommendRequest, answer: Answer | None, ms: float,
                raised: BaseException | None) -> None:
        """After each Recommend (``raised``: what it raised, if it did)."""
        if isinstance(raised, CALLER_ERRORS):
            return  # the caller's doing (bad input, deadline gone, cancelled), not the bundle's
        error = answer is None
        rollouts, router = self.rollouts, self.rollouts.router
        rollouts.metrics.answers.labels(runtime.version, "error" if error else
                                        "degraded" if answer is not None and answer.degraded else "ok").inc()
        rollouts.metrics.latency.labels(runtime.version).observe(ms / 1000)
        if router.stage not in (SHADOW, CANARY) or router.candidate is None:
            return
        rollouts.guardrails.record(runtime is router.candidate, ms, error, answer is not None and answer.degraded)
        other = router.other(runtime)
        if (answer is None or other is None or len(self.tasks) >= MAX_COMPARISONS
                or random.random() >= rollouts.settings.rollout_shadow_share):
            return
        task = asyncio.create_task(self._compare(runtime, other, request, answer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _compare(self, served: BundleRuntime, other: BundleRuntime, request: pb.RecommendRequest,
                       answer: Answer) -> None:
        rollouts = self.rollouts
        with rollouts.router.serving(other):
            started = time.perf_counter()
            try:
                query = recommend_query(request, other.bundle, rollouts.settings)
                theirs = await other.recommender.recommend(query, None, "shadow")
            except InvalidRequest:  # valid for the served bundle only (e.g. an item it alone knows): no verdict
                return
            except Exception:
                log.exception("shadow answer failed", extra={"bundle": other.version})
                rollouts.guardrails.record(other is rollouts.router.candidate, 0.0, True, False)
                return
            ms = (time.perf_counter() - started) * 1000
        if other is not rollouts.router.candidate and other is not rollouts.router.live:
            return  # the rollout moved on meanwhile
        rollouts.guardrails.record(other is rollouts.router.candidate, ms, False, theirs.degraded)
        mine = {int(served.bundle.item_ids[i]) for i in answer.items[:10]}
        other_ids = {int(other.bundle.item_ids[i]) for i in theirs.items[:10]}
        rollouts.guardrails.record_overlap(len(mine & other_ids) / max(len(mine), 1))
        rollouts.metrics.overlap.set(rollouts.guardrails.overlap)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
