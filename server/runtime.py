"""One serving bundle made runnable: its catalogue, its pinned model versions, its profiles, its recommender.

A request is answered by exactly one ``BundleRuntime`` from start to end (validation, model
calls, titles), which is what keeps an answer from mixing bundles while a rollout has two of
them live. ``PinnedPool`` is the shared Triton pool as one bundle sees it: only its model
versions count as ready, every call names its version, and it keeps its own latency book so a
candidate's timings never steer the live bundle's plans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.bundle import Bundle
from server.latency import LatencyBook
from server.profiles import Profiles
from server.recommend import Recommender
from server.settings import Settings
from server.store import Store
from server.triton_models import CallResult, ModelPool


class PinnedPool:
    """The slice of a ``ModelPool`` one bundle uses; duck-types the pool for the planner and recommender."""

    resolve = ModelPool.resolve  # they read only by_role and default_variant
    p95 = ModelPool.p95

    def __init__(self, pool: ModelPool, pins: dict[str, str], latency: LatencyBook) -> None:
        self.shared, self.pins, self.latency = pool, pins, latency
        self.default_variant = pool.default_variant
        self.by_role = {role: [m for m in names if m in pins] for role, names in pool.by_role.items()}
        self.models = [m for names in self.by_role.values() for m in names]
        self._ready: tuple[object, frozenset[str]] = (None, frozenset())

    @property
    def ready(self) -> frozenset[str]:
        # The planner asks a dozen times per request; the answer changes only when the shared pool
        # re-reads Triton's states, which replaces its versions dict, so it is kept per dict.
        versions = self.shared.versions
        if self._ready[0] is not versions:
            self._ready = (versions, frozenset(m for m in self.models if self.shared.has(m, self.pins[m])))
        return self._ready[1]

    @property
    def live(self) -> bool:
        return self.shared.live

    @property
    def versions(self) -> dict[str, list[str]]:
        return {m: [self.pins[m]] for m in self.ready}

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: tuple[str, ...],
        timeout_s: float,
        request_id: str = "",
    ) -> CallResult:
        return await self.shared.infer(
            model, inputs, outputs, timeout_s, request_id, version=self.pins[model], latency=self.latency
        )


@dataclass
class BundleRuntime:
    bundle: Bundle
    pool: PinnedPool
    profiles: Profiles
    recommender: Recommender
    inflight: int = 0  # requests this runtime is answering (old versions unload once it is 0)

    @property
    def version(self) -> str:
        return self.bundle.version


def pins_of(bundle: Bundle, pool: ModelPool) -> dict[str, str]:
    """model -> version, from the manifest, for the models this server uses."""
    repository = bundle.manifest.get("repository", {})
    return {m: str(repository[m]) for m in pool.models if m in repository}


def build_runtime(
    bundle: Bundle, settings: Settings, pool: ModelPool, store: Store, latency: LatencyBook | None = None
) -> BundleRuntime:
    """A runtime whose models are registered with the pool (the next load brings them up)."""
    pins = pins_of(bundle, pool)
    pool.want(str(bundle.folder.resolve()), pins)  # the folder: two bundle roots may both hold a "1"
    book = latency or LatencyBook(settings.latency_window, settings.latency_prior_ms, settings.latency_max_age_s)
    pinned = PinnedPool(pool, pins, book)
    # Feedback is read from the store per user when asked for (both bundles see the same events).
    profiles = Profiles(bundle, store, settings.profile_cache_size)
    return BundleRuntime(bundle, pinned, profiles, Recommender(bundle, settings, pinned, profiles))  # type: ignore[arg-type]
