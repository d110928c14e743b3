"""One Recommend: profile -> rung -> plan within the budget -> Triton calls -> fusion -> filters.

Local scores (popularity, the genre profile) are always there, so an answer exists even when
every model is down or late; what arrived by the hard limit is fused and the answer says what
was missing (degraded) and why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from recsys import contract

from server.admission import Admission
from server.budget import FULL_RUNG, GENERATOR, Budget, Plan, choose_plan, effective_budget_ms, predicted_ms
from server.bundle import Bundle
from server.coldstart import CONTENT, POPULARITY, Popularity, content_scores, rung_for
from server.errors import BudgetExhausted
from server.explain import reasons
from server.fusion import RankedList, fuse, in_order, merge, mmr, ranked
from server.profiles import Profile, Profiles
from server.settings import Settings
from server.tracing import stage
from server.triton_models import ModelCallError, ModelPool
from server.validation import Filters, RecommendQuery

SINGLE = "single"
MODEL_STRATEGIES = contract.MODELS  # the model branches, each also a single-model strategy
CONTENT_DEPTH = 1000  # genre-profile ranks kept per request; deeper ones barely move a fusion
# Popularity ranks kept per request: a fusion scores only the union of its lists, so the local
# list must not be catalogue-long; below this depth every item gets popularity's floor.
POPULARITY_DEPTH = 1000
# After a failed full-rung call, the per-model plans answer for this long before it is tried again,
# so a broken full-rung model costs one wasted round now and then, not one per request.
FUSED_RETRY_S = 5.0


Outputs = dict[str, np.ndarray]


@dataclass
class Call:
    model: str
    version: str = ""
    ms: float = 0.0
    ok: bool = False
    error: str = ""


@dataclass
class Answer:
    items: list[int]  # catalogue indices, best first
    scores: list[float]
    strategy: str
    rung: str
    plan: str
    budget_ms: float
    history_size: int
    calls: list[Call] = field(default_factory=list)
    degraded_reasons: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    reasons: dict[int, list[str]] = field(default_factory=dict)
    # Each model list's scores, best first (views, no copy): the drift monitor reads their top.
    model_scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        return bool(self.degraded_reasons)


class Recommender:
    def __init__(self, bundle: Bundle, settings: Settings, pool: ModelPool, profiles: Profiles) -> None:
        self.bundle, self.settings, self.pool, self.profiles = bundle, settings, pool, profiles
        self.popularity = Popularity(bundle, settings.min_segment_users)
        self.admission = Admission(settings.admission_floor, settings.admission)
        weights = bundle.fusion.weights
        # The full rung's models (those with a fusion weight), most valuable first.
        self.full_branches = sorted((b for b in MODEL_STRATEGIES if weights.get(b, 0) > 0), key=lambda b: -weights[b])
        # The full-rung model's members (as export recorded them, else those of this fusion: what export
        # builds it with), if it is to be tried.
        members = bundle.manifest.get("full_rung_members") or contract.full_rung_members(weights)
        self.full_rung = tuple(members) if settings.fused_full_rung else ()
        self._fused_retry_at = 0.0  # monotonic time before which a failed full-rung model is not tried

    async def recommend(self, query: RecommendQuery, deadline_left_s: float | None, request_id: str) -> Answer:
        budget_ms = effective_budget_ms(
            query.budget_ms, deadline_left_s, self.settings.default_budget_ms, self.settings.max_budget_ms
        )
        if budget_ms <= 0:
            raise BudgetExhausted("the call's deadline had already passed when it reached the server")
        budget = Budget(budget_ms)
        timings: dict[str, float] = {}
        mark = time.perf_counter()

        profile = self.profiles.get(query.user_id, query.inline)
        strategy, rung, branches = self._route(query.strategy, len(profile))
        eligible = query.filters.mask(self.bundle)
        eligible[profile.item_idx] = False
        eligible[query.exclude] = False
        popularity, order, segment = self.popularity.scores(query.demographics)
        local = {"popularity": in_order(order, popularity, eligible, limit=POPULARITY_DEPTH)}
        if rung == CONTENT:
            local["content"] = self._content(profile, eligible)
        hard_ms = budget.left_ms() - self.settings.reserve_ms
        # The full-rung model ranks the generator's candidates without the filters (it knows only
        # the exclusions), where the per-model plan hands its rankers only eligible candidates: a
        # filtered request takes the per-model plans, so its answer is the same either way.
        one_call = self.full_rung if not query.filters.active and time.monotonic() >= self._fused_retry_at else ()
        with stage("plan") as span:
            plan, options, at_capacity = self._plan(branches, query.precision, hard_ms, one_call)
            span.set_attributes({"recsys.plan": plan.name, "recsys.rung": rung, "recsys.strategy": strategy})
        seed = local["content" if rung == CONTENT else "popularity"]
        timings["prepare"] = _since(mark)

        mark = time.perf_counter()
        with stage("models"):  # each Triton call's span is a child of this one
            calls: list[Call] = []
            lists: dict[str, RankedList] = {}
            problems: dict[str, str] = {}
            if plan.fused:
                fallback_ms = next((o.cost_ms for o in options if not o.fused), 0.0)
                lists, problems = await self._call_fused(
                    plan, profile, query, seed.items[: plan.candidates], budget, request_id, calls, fallback_ms
                )
                if problems:  # the call failed: the per-model plans answer in what is left of the budget
                    self._fused_retry_at = time.monotonic() + FUSED_RETRY_S
                    hard_ms = budget.left_ms() - self.settings.reserve_ms
                    plan, options, at_capacity = self._plan(branches, query.precision, hard_ms, ())
                    plan = replace(plan, name=f"{plan.name}:after_fused")
            if not plan.fused:
                lists, more, fallback = await self._call_models(
                    plan, profile, query, seed.items[: plan.candidates], eligible, budget, request_id
                )
                calls += more
                problems = {**problems, **fallback}  # a branch missing without a reason of its own: the failed call's
        problems.update(at_capacity)
        timings["models"] = _since(mark)
        missing = [b for b in branches if b not in lists]
        # The first per-model option holds every branch whose own models are ready.
        ready = next((o.branches for o in options if not o.fused), {})
        degraded = [
            f"{b}: {problems.get(b, 'left out to fit the budget' if b in ready else 'not ready in Triton')}"
            for b in missing
        ]

        mark = time.perf_counter()
        weights, method = self._weights(rung, strategy, lists)
        if not lists and rung != POPULARITY:
            # No model answered: the local scores carry the answer (the content rung's local part).
            local.setdefault("content", self._content(profile, eligible))
            weights = {n: w for n, w in self.settings.content_weights.items() if n in local}
        with stage("fusion"):
            fused = fuse({**local, **lists}, weights, method, self.bundle.fusion.rrf_k)
            picked, scores = self._pick(fused, eligible, query)
        timings["fusion"] = _since(mark)
        answer = Answer(
            picked.tolist(),
            scores.tolist(),
            strategy,
            rung,
            plan.name,
            budget_ms,
            len(profile),
            calls,
            degraded,
            timings,
            model_scores={b: r.scores for b, r in lists.items()},
        )
        if query.explain and len(picked):
            liked = profile.item_idx[profile.ratings >= self.bundle.liked_threshold]
            answer.reasons = reasons(self.bundle, picked, liked, lists, segment)
        answer.timings["total"] = budget.elapsed_ms()
        return answer

    def _plan(
        self, branches: list[str], precision: str, hard_ms: float, fused: tuple[str, ...]
    ) -> tuple[Plan, list[Plan], dict[str, str]]:
        """The plan to call (admitted), every plan considered, and the branches shed at capacity.
        A full-rung model at its in-flight limit leaves the answer to the per-model plans."""
        settings = self.settings
        plan, options = choose_plan(
            self.pool, branches, precision, hard_ms, settings.candidates, settings.two_stage, fused
        )
        if plan.fused and self.admission.full((plan.fused,), hard_ms):
            plan, options = choose_plan(
                self.pool, branches, precision, hard_ms, settings.candidates, settings.two_stage
            )
        if plan.fused:
            return plan, options, {}
        plan, at_capacity = self._admit(plan, hard_ms)
        return plan, options, at_capacity

    def _admit(self, plan: Plan, hard_ms: float) -> tuple[Plan, dict[str, str]]:
        """``plan`` without the branches whose models are at their in-flight limit, and why each went.

        Each call gets an equal share of the time left: the plan's longest chain of calls in a row
        (two-tower user tower, item scorer, then a ranker in a staged plan)."""
        chain = max((len(m) for m in plan.branches.values()), default=1) + (1 if plan.staged and plan.rankers else 0)
        shed = {b: why for b, models in plan.branches.items() if (why := self.admission.full(models, hard_ms / chain))}
        if not shed:
            return plan, {}
        branches = {b: m for b, m in plan.branches.items() if b not in shed}
        # Without its generator a staged plan's rankers score the local candidates, in one stage.
        return replace(
            plan,
            name=f"{plan.name}:at_capacity={'+'.join(shed)}",
            branches=branches,
            staged=plan.staged and GENERATOR in branches,
        ), shed

    def _content(self, profile: Profile, eligible: np.ndarray) -> RankedList:
        content = content_scores(self.bundle, profile.item_idx, profile.ratings)
        return ranked(np.flatnonzero(eligible), content[eligible], limit=CONTENT_DEPTH)

    async def warm_up(self, rounds: int = 6) -> None:
        """A few calls to every ready model through the real path: first-call costs are paid before
        traffic, and each model's latency window holds observations instead of the prior."""
        liked = self.bundle.scale[1]
        inline = {int(i): liked for i in np.argsort(-self.bundle.popularity)[: self.settings.full_min_ratings]}
        # Two passes: the first pays the first-call costs (stub start, TorchScript profiling runs,
        # new batch shapes) and is forgotten, since a window holding them would keep a model's p95
        # far above its steady latency and the planner would leave it out of tight budgets.
        # The ensemble too when the full-rung model is tried: its one call is warmed like the others.
        strategies = (*MODEL_STRATEGIES, "ensemble") if self.full_rung else MODEL_STRATEGIES
        for passes, keep in ((2, False), (rounds, True)):
            for strategy in strategies:
                for precision in ("auto", "fp32", "int8", "fp16"):
                    query = warm_up_query(strategy, precision, inline)
                    for _ in range(passes):
                        await self.recommend(query, None, "warm-up")
            if not keep:
                self.pool.latency.clear()

    def _route(self, strategy: str, n_ratings: int) -> tuple[str, str, list[str]]:
        """(strategy used, rung, model branches to call)."""
        if strategy == "popular" or n_ratings == 0:
            # A single model with no ratings has nothing to go on: popularity, said so by the rung.
            return "popular", POPULARITY, []
        if strategy in MODEL_STRATEGIES:
            return strategy, SINGLE, [strategy]
        rung = rung_for(n_ratings, self.settings.full_min_ratings)
        return "ensemble", rung, (["two_tower"] if rung == CONTENT else list(self.full_branches))

    def _weights(self, rung: str, strategy: str, lists: dict[str, RankedList]) -> tuple[dict[str, float], str]:
        rrf = "rrf"
        if rung == POPULARITY:
            return {"popularity": 1.0}, rrf
        if rung == SINGLE:
            # Popularity only orders what the model did not rank (a tie-breaker, far below any model rank).
            return {strategy: 1.0, "popularity": 1e-3}, rrf
        if rung == CONTENT:
            return dict(self.settings.content_weights), rrf
        return dict(self.bundle.fusion.weights), self.bundle.fusion.method

    def _pick(self, fused: RankedList, eligible: np.ndarray, query: RecommendQuery) -> tuple[np.ndarray, np.ndarray]:
        """The top k of the fused ranking that the filters allow (model lists ignore filters)."""
        keep = eligible[fused.items]
        items, scores = fused.items[keep], fused.scores[keep]
        if query.diversity > 0:
            pool, relevance = items[: query.k * 5], scores[: query.k * 5]
            picked = mmr(pool, relevance, self.bundle.genres, query.k, query.diversity)
            return picked, relevance[[int(np.flatnonzero(pool == item)[0]) for item in picked]]
        return items[: query.k], scores[: query.k]

    async def _call_models(
        self,
        plan: Plan,
        profile: Profile,
        query: RecommendQuery,
        candidates: np.ndarray,
        eligible: np.ndarray,
        budget: Budget,
        request_id: str,
    ) -> tuple[dict[str, RankedList], list[Call], dict[str, str]]:
        """Each branch's ranked list by the hard limit, the calls made, and why branches are missing.

        In a staged plan the rankers score the generator's eligible top items; if it fails or is
        late they score the local ``candidates`` instead, so one model never takes the others down.
        """
        calls: list[Call] = []

        def call_branch(name: str, cands: np.ndarray) -> Coroutine[Any, Any, RankedList]:
            return self._branch(name, plan.branches[name], profile, query, cands, budget, request_id, calls)

        async def rank_generated(name: str, generator: asyncio.Task[RankedList]) -> RankedList:
            # Wait no longer than leaves this ranker twice its p95 (a ranker started later would be cut
            # off by any noise), and with asyncio.wait rather than `await generator`: a slow or
            # cancelled generator must not take the rankers down with it.
            own_ms = 2 * predicted_ms(self.pool, plan.branches[name])
            await asyncio.wait({generator}, timeout=max(budget.left_ms() - self.settings.reserve_ms - own_ms, 0) / 1000)
            cands = candidates
            if generator.done() and not generator.cancelled() and generator.exception() is None:
                generated = generator.result().items  # its top-N and its scores for the local candidates
                cands = generated[eligible[generated]][: plan.candidates]
            return await call_branch(name, cands)

        if plan.staged:
            generator = asyncio.create_task(call_branch(GENERATOR, candidates))
            tasks = {
                GENERATOR: generator,
                **{b: asyncio.create_task(rank_generated(b, generator)) for b in plan.rankers},
            }
        else:
            tasks = {b: asyncio.create_task(call_branch(b, candidates)) for b in plan.branches}
        if not tasks:
            return {}, calls, {}
        wait_s = max(budget.left_ms() - self.settings.reserve_ms, 0.0) / 1000
        try:
            _, pending = await asyncio.wait(tasks.values(), timeout=wait_s)
        except asyncio.CancelledError:  # the RPC was cancelled or expired; asyncio.wait leaves its tasks
            for task in tasks.values():  # running, and with them their Triton calls and admission slots
                task.cancel()
            raise
        for task in pending:
            task.cancel()
        lists, problems = {}, {}
        for branch, task in tasks.items():
            if task in pending:
                problems[branch] = f"no answer within the budget ({budget.total_ms:.0f} ms)"
                for call in calls:
                    if not call.ok and not call.error and call.model in plan.branches[branch]:
                        call.error, call.ms = "cancelled at the budget's hard limit", budget.elapsed_ms()
            elif task.exception() is not None:
                problems[branch] = str(task.exception())
            else:
                lists[branch] = task.result()
        return lists, calls, problems

    async def _branch(
        self,
        branch: str,
        models: tuple[str, ...],
        profile: Profile,
        query: RecommendQuery,
        candidates: np.ndarray,
        budget: Budget,
        request_id: str,
        calls: list[Call],
    ) -> RankedList:
        items = _row(profile.item_idx, np.int64, -1)
        ratings = _row(profile.ratings, np.float32, 0.0)
        exclude = _row(query.exclude, np.int64, -1)
        cands = _row(candidates, np.int64, -1)

        def call(model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...]) -> Coroutine[Any, Any, Outputs]:
            return self._call(model, inputs, outputs, budget, request_id, calls)

        if branch in contract.CATALOG_SCORERS:
            catalog = contract.CATALOG
            out = await call(
                models[0], dict(zip(catalog.inputs, (items, ratings, exclude, cands), strict=True)), catalog.outputs
            )
            top_idx, top_score, candidate_score = (out[name] for name in catalog.outputs)
            return merge(ranked(top_idx, top_score), candidates, candidate_score[: len(candidates)])
        codes = self._demographics(profile, query)
        if len(models) == 1:  # the one-graph two-tower model: rated items are masked inside it
            out = await call(
                models[0],
                {"ITEM_IDX__0": items, "RATING__1": ratings, "DEMOGRAPHICS__2": codes[None], "EXCLUDE_IDX__3": exclude},
                ("TOP_IDX__0", "TOP_SCORE__1", "USER_EMBEDDING__2"),
            )
            embedding = out["USER_EMBEDDING__2"].astype(np.float32)
        else:
            user = await call(
                models[0],
                {"ITEM_IDX__0": items, "RATING__1": ratings, "DEMOGRAPHICS__2": codes[None]},
                ("USER_EMBEDDING__0",),
            )
            embedding = user["USER_EMBEDDING__0"].astype(np.float32)
            # The item scorer knows nothing of the history: rated items go in its exclusion list.
            blocked = _row(np.concatenate([profile.item_idx, query.exclude]), np.int64, -1)
            out = await call(
                models[1],
                {"USER_EMBEDDING__0": embedding[None], "EXCLUDE_IDX__1": blocked},
                ("TOP_IDX__0", "TOP_SCORE__1"),
            )
        return self._generated(out["TOP_IDX__0"], out["TOP_SCORE__1"], embedding, candidates)

    def _generated(
        self, top_idx: np.ndarray, top_score: np.ndarray, embedding: np.ndarray, candidates: np.ndarray
    ) -> RankedList:
        """The two-tower list: its top-N plus its scores for the local candidates."""
        top = ranked(top_idx, top_score)
        if self.bundle.item_embeddings is None or not len(candidates):
            return top
        return merge(top, candidates, self.bundle.item_embeddings[candidates] @ embedding)

    async def _call(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: tuple[str, ...],
        budget: Budget,
        request_id: str,
        calls: list[Call],
        timeout_ms: float | None = None,
    ) -> Outputs:
        """One Triton call, recorded in ``calls`` and counted by admission; by the hard limit unless
        ``timeout_ms`` is sooner."""
        record = Call(model)
        calls.append(record)
        self.admission.started(model)
        ok = False
        try:
            left_ms = budget.left_ms() - self.settings.reserve_ms
            timeout = max(min(left_ms, timeout_ms if timeout_ms is not None else left_ms), 1.0) / 1000
            result = await self.pool.infer(model, inputs, outputs, timeout, request_id)
            ok = True
        except ModelCallError as err:
            record.error = err.reason
            raise
        finally:  # a cancelled or failed call frees its slot but says nothing of capacity
            self.admission.finished(model, ok)
        record.version, record.ms, record.ok = result.version, result.ms, True
        return result.outputs

    async def _call_fused(
        self,
        plan: Plan,
        profile: Profile,
        query: RecommendQuery,
        candidates: np.ndarray,
        budget: Budget,
        request_id: str,
        calls: list[Call],
        fallback_ms: float,
    ) -> tuple[dict[str, RankedList], dict[str, str]]:
        """Every branch's list from one call to the full-rung model, the same lists the per-model
        staged plan makes (its candidates are those the rankers would get: the first
        ``plan.candidates`` of the two-tower list); or no list and why, for the per-model plans.

        The call leaves time for them: it may take the budget less twice ``fallback_ms`` (their
        predicted cost, as a staged ranker is left twice its own), but at least twice its own p95."""
        members = self.full_rung
        width = max(plan.candidates, 1)
        local = np.full((1, width), -1, dtype=np.int64)
        local[0, : len(candidates)] = candidates[:width]
        inputs = dict(
            zip(
                contract.FULL_RUNG_INPUTS,
                (
                    _row(profile.item_idx, np.int64, -1),
                    _row(profile.ratings, np.float32, 0.0),
                    self._demographics(profile, query)[None],
                    _row(query.exclude, np.int64, -1),
                    local,
                ),
                strict=True,
            )
        )
        left_ms = budget.left_ms() - self.settings.reserve_ms
        timeout_ms = max(left_ms - 2 * fallback_ms, 2 * predicted_ms(self.pool, (plan.fused,)))
        own = contract.full_rung_outputs(members)
        wanted = (contract.GENERATED, *(n for m in members if m in plan.branches for n in own[m]))
        try:
            out = await self._call(plan.fused, inputs, wanted, budget, request_id, calls, timeout_ms)
        except ModelCallError as err:
            return {}, dict.fromkeys(plan.branches, f"{FULL_RUNG}: {err.reason}")
        try:
            generated = out[contract.GENERATED]
            valid = generated >= 0
            scored = generated[valid]
            top_idx, top_score, embedding = (out[n] for n in own[GENERATOR])
            lists = {GENERATOR: self._generated(top_idx, top_score, embedding.astype(np.float32), candidates)}
            for member in plan.rankers:
                top_idx, top_score, candidate_score = (out[n] for n in own[member])
                lists[member] = merge(ranked(top_idx, top_score), scored, candidate_score[: len(generated)][valid])
        except (KeyError, IndexError, ValueError) as err:  # outputs of another shape than the contract's
            calls[-1].ok, calls[-1].error = False, f"unreadable answer: {err}"
            return {}, dict.fromkeys(plan.branches, f"{FULL_RUNG}: unreadable answer ({err})")
        # In the staged plan's order (the generator, then the rankers), which explain's ties follow.
        return {b: lists[b] for b in (GENERATOR, *plan.rankers)}, {}

    def _demographics(self, profile: Profile, query: RecommendQuery) -> np.ndarray:
        if query.demographics is not None:
            return query.demographics
        if profile.user_index is not None and self.bundle.demographics is not None:
            row: np.ndarray = self.bundle.demographics[profile.user_index].astype(np.int64)
            return row
        return np.zeros(3, dtype=np.int64)


def warm_up_query(strategy: str, precision: str, inline: dict[int, float]) -> RecommendQuery:
    return RecommendQuery(
        user_id="",
        inline=inline,
        unknown_item_ids=[],
        k=10,
        strategy=strategy,
        precision=precision,
        budget_ms=10_000,
        exclude=np.zeros(0, dtype=np.int64),
        filters=Filters(None, 0, 0),
        explain=False,
        diversity=0.0,
        demographics=None,
    )


def _row(values: np.ndarray, dtype: type, pad: float) -> np.ndarray:
    """A batch-of-one tensor; an empty list becomes one padding entry (the graphs take >= 1)."""
    values = np.asarray(values, dtype=dtype)
    return (values if len(values) else np.full(1, pad, dtype=dtype))[None, :]


def _since(mark: float) -> float:
    return (time.perf_counter() - mark) * 1000
