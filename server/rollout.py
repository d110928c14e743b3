"""Rollouts: the operator's commands, the guardrails' automatic rollback, and replicas converging.

The shared pointer (``server.rollout_state``) is the truth; this replica's router follows it.
A command is checked against the pointer, written to it, then applied here; other replicas
apply it on their next tick (``follow``). Stages: shadow -> canary -> full -> retired, and a
rollback from any of them. Heavy work (loading, warming up, golden requests) happens before the
pointer changes, so a refused rollout changes nothing anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from server.guardrails import Guardrails
from server.rollout_metrics import RolloutMetrics
from server.rollout_prepare import RolloutRefused, discard, owner, prepare
from server.rollout_state import PointerFile, RolloutState
from server.router import CANARY, FULL, IDLE, SHADOW, Router
from server.runtime import BundleRuntime
from server.settings import Settings
from server.store import Store
from server.triton_models import ModelPool

log = logging.getLogger("server.rollout")
NEXT = {SHADOW: CANARY, CANARY: FULL, FULL: "retire"}
ORDER = (SHADOW, CANARY, FULL, "retire")


class RolloutManager:
    def __init__(
        self,
        settings: Settings,
        pool: ModelPool,
        store: Store,
        router: Router,
        metrics: RolloutMetrics,
        on_live: Callable[[BundleRuntime], None] | None = None,
    ) -> None:
        self.settings, self.pool, self.store, self.router, self.metrics = settings, pool, store, router, metrics
        self.on_live = on_live  # told each time another bundle becomes the live one (the drift monitor)
        self.pointer = PointerFile(settings.rollout_state_dir)
        self.guardrails = Guardrails(settings)
        self.applied = self.pointer.read().generation - 1  # the first tick applies what the pointer says
        self._lock = asyncio.Lock()  # one change at a time in this process
        self._background: set[asyncio.Task[None]] = set()

    def get(self) -> RolloutState:
        return self.pointer.read()

    async def start(self, path: str) -> RolloutState:
        if self._lock.locked():
            raise RolloutRefused("refused: this server is already preparing a rollout; wait for it, or roll it back")
        async with self._lock:
            self._refuse_if_running(self.pointer.read())
            runtime = await prepare(Path(path), self.router.live, self.settings, self.pool, self.store)

            def begin(state: RolloutState) -> None:
                self._refuse_if_running(state)  # another replica may have started one meanwhile
                state.rollout_id += 1
                state.promoted, state.promoted_version = str(self.router.live.bundle.folder), self.router.live.version
                state.candidate, state.candidate_version = str(runtime.bundle.folder), runtime.version
                state.stage, state.canary_percent, state.outcome = SHADOW, 0.0, ""
                state.log(
                    f"started bundle {runtime.version}: loaded beside {self.router.live.version}, "
                    "warmed up, golden requests match"
                )

            try:
                state = self.pointer.update(begin)
            except RolloutRefused:
                await discard(runtime, self.pool)
                raise
            self.router.candidate = runtime
            self._apply(state)
            return state

    async def promote(self, stage: str = "", canary_percent: float = 0.0) -> RolloutState:
        async with self._lock:
            current = self.pointer.read()
            if current.stage == IDLE:
                raise RolloutRefused("refused: no rollout is running; StartRollout first")
            target = stage or NEXT[current.stage]
            if target not in ORDER or ORDER.index(target) <= ORDER.index(current.stage):
                raise RolloutRefused(
                    f"refused: cannot go from {current.stage} to {target!r}; the next stages are "
                    f"{', '.join(ORDER[ORDER.index(current.stage) + 1 :])}"
                )

            def advance(state: RolloutState) -> None:
                if state.rollout_id != current.rollout_id or state.stage != current.stage:
                    raise RolloutRefused(f"refused: rollout {state.rollout_id} moved to {state.stage} meanwhile")
                if target == "retire":
                    state.promoted, state.promoted_version = state.candidate, state.candidate_version
                    state.candidate, state.candidate_version, state.stage = "", "", IDLE
                    state.outcome = "retired"
                    state.log(f"promoted bundle {state.promoted_version}; the old bundle retires once drained")
                    return
                state.stage = target
                state.canary_percent = (
                    100.0 if target == FULL else (canary_percent or self.settings.rollout_canary_percent)
                )
                state.log(f"stage {target}" + (f" ({state.canary_percent:g}% of users)" if target == CANARY else ""))

            state = self.pointer.update(advance)
            await self._converge(state)
            return state

    def rollback(self, reason: str, trigger: str = "operator") -> RolloutState:
        def back(state: RolloutState) -> None:
            if state.stage == IDLE:
                raise RolloutRefused("refused: no rollout is running; nothing to roll back")
            state.log(f"rolled back ({trigger}): {reason}")
            state.outcome = f"rolled back ({trigger}): {reason}"
            state.candidate, state.candidate_version, state.stage = "", "", IDLE

        state = self.pointer.update(back)
        self.metrics.rollbacks.labels(trigger).inc()
        log.warning(
            "rollout rolled back", extra={"trigger": trigger, "reason": reason, "live": self.router.live.version}
        )
        self._drop_candidate()
        self._apply(state)
        return state

    async def tick(self) -> None:
        """Each health tick: the guardrails, then whatever the pointer says that this replica has not done."""
        if self.router.stage in (SHADOW, CANARY):
            trigger, why = self.guardrails.breach()
            if trigger:
                with contextlib.suppress(RolloutRefused):  # another replica rolled it back first
                    self.rollback(f"guardrail: {why}", trigger)
        state = self.pointer.read()
        if state.generation != self.applied and not self._lock.locked():
            async with self._lock:
                await self._converge(state)

    async def _converge(self, state: RolloutState) -> None:
        router = self.router
        if state.promoted and not _same(state.promoted, router.live):
            new_live: BundleRuntime | None
            if router.candidate is not None and _same(state.promoted, router.candidate):
                new_live, router.candidate = router.candidate, None
            else:
                new_live = await self._bring_up(state.promoted)
                if new_live is None:
                    return
            old, router.live = router.live, new_live
            self._retire(old)
            if self.on_live is not None:
                self.on_live(new_live)
        if state.candidate and (router.candidate is None or not _same(state.candidate, router.candidate)):
            self._drop_candidate()
            router.candidate = await self._bring_up(state.candidate)
            if router.candidate is None:
                return
        elif not state.candidate:
            self._drop_candidate()
        self._apply(state)

    async def _bring_up(self, path: str) -> BundleRuntime | None:
        try:
            return await prepare(Path(path), self.router.live, self.settings, self.pool, self.store)
        except RolloutRefused as err:
            log.error("this replica cannot follow the rollout pointer", extra={"bundle": path, "reason": str(err)})
            with contextlib.suppress(RolloutRefused):
                self.rollback(f"a replica could not bring up {path}: {err}", "replica_failed")
            return None

    def _apply(self, state: RolloutState) -> None:
        router = self.router
        stage = state.stage if router.candidate is not None else IDLE
        if (stage, state.canary_percent) != (router.stage, router.canary_percent):
            self.guardrails.reset()  # each stage is judged on its own traffic
        router.stage, router.canary_percent = stage, state.canary_percent
        self.applied = state.generation
        self.metrics.set_stage(stage, router.live.version, router.candidate.version if router.candidate else "")

    def _drop_candidate(self) -> None:
        if self.router.candidate is not None:
            dropped, self.router.candidate, self.router.stage = self.router.candidate, None, IDLE
            self._retire(dropped)

    def _retire(self, runtime: BundleRuntime) -> None:
        """Unload ``runtime``'s versions once its in-flight answers are done (or ``rollout_drain_s`` passed)."""

        async def drain() -> None:
            deadline = time.monotonic() + self.settings.rollout_drain_s
            while runtime.inflight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await discard(runtime, self.pool)
            log.info("retired bundle", extra={"bundle": runtime.version, "owner": owner(runtime)})

        task = asyncio.create_task(drain())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @staticmethod
    def _refuse_if_running(state: RolloutState) -> None:
        if state.stage != IDLE:
            raise RolloutRefused(
                f"refused: rollout {state.rollout_id} of bundle {state.candidate_version} is at "
                f"stage {state.stage}; promote it to the end or roll it back before starting another"
            )


def _same(path: str, runtime: BundleRuntime) -> bool:
    return Path(path).resolve() == runtime.bundle.folder.resolve()
