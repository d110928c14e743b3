"""Assemble and run the server: ``create_server(settings) -> (server, port)`` apart from ``serve()``.

``create_server`` needs a Triton address (``settings.triton_url``); ``serve`` (``python -m
server``) also starts the embedded Triton when asked. Health services:

- "" and ``recsys.v1.Recommender`` (readiness): SERVING once the bundle is loaded and the server
  started, until shutdown. It means "can answer": with Triton down answers are degraded (popularity,
  content), not errors, so pods must not all leave the load balancer at once.
- ``recsys.v1.Triton``: SERVING while Triton is live and the live bundle's pinned version of every
  model the ensemble uses (default variant) is ready (also the ``recsys_triton_ready`` metric, alerted on).
- "liveness": SERVING while the process serves at all.

A watcher re-checks Triton every ``health_interval_s``, at once when a call finds Triton gone, and
every ``RECOVERY_INTERVAL_S`` until the Triton service is SERVING again (for ``RECOVERY_WINDOW_S`` at
most: a Triton that stays away is not polled ten times a second); it loads the models a
restarted Triton has lost, and so reconnects by itself. Every call passes ``server.guard.Guard``
(auth, policy, limits).

Rollouts (``server.rollout``): the server starts on the last promoted bundle of the rollout
pointer (or ``settings.bundle`` when there is none), serves the admin service on its own port
(behind the same guard: admin role), and a second watcher follows the pointer and applies the guardrails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from recsys import contract
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from server.admin import admin_server
from server.bundle import load_bundle
from server.cache import ResponseCache
from server.drift import DriftMonitor
from server.guard import Guard
from server.latency import LatencyBook
from server.metrics import Metrics
from server.recommend import Recommender
from server.rollout import RolloutManager
from server.rollout_metrics import RolloutMetrics
from server.rollout_state import promoted_bundle
from server.router import Router
from server.runtime import BundleRuntime, build_runtime
from server.security import authenticator_for, dev_mode, is_loopback, rate_limiter_for, server_credentials
from server.service import RecommenderService
from server.settings import Settings
from server.shadow import Shadow
from server.store import open_store, sqlite_url
from server.tracing import configure as configure_tracing
from server.tracing import server_interceptors
from server.tracing import shutdown as shutdown_tracing
from server.triton.launcher import control_key_for
from server.triton_models import OPTIONAL_ROLES, ROLES, ModelPool, model_name

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
# SERVING while the process runs, whatever Triton does: a liveness probe must not restart a pod
# because Triton is down.
LIVENESS = "liveness"
TRITON_HEALTH = "recsys.v1.Triton"
# While Triton is down or its models are missing, the watcher looks again this often: the check that
# finds a restarted Triton starts its model loads, so the watcher's interval is time added to the outage.
RECOVERY_INTERVAL_S = 0.1
RECOVERY_WINDOW_S = 60.0


class RecommendationServer:
    """The gRPC server with everything it owns: Triton client, feedback store, metrics, health watcher."""

    def __init__(self, settings: Settings) -> None:
        if not settings.triton_url:
            raise ValueError("settings.triton_url is required (serve() starts an embedded Triton and sets it)")
        self.settings = settings
        # Security settings first: a server that cannot authenticate or serve TLS opens nothing.
        authenticator, credentials = authenticator_for(settings), server_credentials(settings)
        self.bundle = load_bundle(promoted_bundle(settings.rollout_state_dir, settings.bundle))
        available = list(self.bundle.manifest.get("repository", {}))
        self.pool = ModelPool(
            settings.triton_url,
            available,
            settings.variants,
            settings.default_variant,
            LatencyBook(settings.latency_window, settings.latency_prior_ms, settings.latency_max_age_s),
            settings.model_repository,
            control_key=settings.triton_control_key or control_key_for(settings.triton_url),
        )
        # Profiles are read per user from the store when asked for, never replayed at start-up.
        self.store = open_store(settings.store or sqlite_url(settings.feedback_db), settings.dedupe_window_s)
        live = build_runtime(self.bundle, settings, self.pool, self.store, self.pool.latency)
        self.profiles, self.recommender = live.profiles, live.recommender
        self._load_first(self.recommender)
        self.router = Router(live)
        self.metrics = Metrics()
        # Drift is judged against the promoted bundle's reference: the rollout manager tells the
        # monitor when another bundle becomes the live one (bundles exported before drift
        # references have none; the monitor then watches nothing until one that has is promoted).
        self.drift = DriftMonitor(
            None, self.bundle.genres, self.bundle.item_index, self.metrics.drift_psi, settings.drift_window
        )
        self.drift.follow(self.bundle)
        self.rollouts = RolloutManager(
            settings,
            self.pool,
            self.store,
            self.router,
            RolloutMetrics(self.metrics.registry),
            on_live=self._on_live,
        )
        self.shadow = Shadow(self.rollouts)
        self.cache = ResponseCache(self.store, settings.cache_ttl_s)
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # grpc-stubs lacks health.aio
        self.dev_mode = dev_mode(settings)
        # Our limiter, not gRPC's maximum_concurrent_rpcs: health and reflection must not count.
        guard = Guard(
            authenticator,
            rate_limiter_for(settings),
            settings.max_concurrent_rpcs,
            self.metrics,
            settings.max_message_bytes,
            settings.max_metadata_bytes,
        )
        self.tracer_provider = configure_tracing(settings)
        transport_metadata = max(4 * settings.max_metadata_bytes, 4 << 20)
        interceptors = [*server_interceptors(), guard]  # tracing outermost: refused calls are traced too
        self.grpc = grpc.aio.server(
            interceptors=interceptors,
            options=[
                # The guard enforces max_message_bytes: gRPC's own refusal of an oversized message reaches
                # the caller 100 ms to 1 s late (a wait in the transport, docs/security.md), the guard's in
                # milliseconds. The transport's limit, 4x larger, still bounds what is read.
                ("grpc.max_receive_message_length", max(4 * settings.max_message_bytes, 1 << 20)),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # Metadata the same way: gRPC refuses what is over its limit (16 KiB by default) just as
                # late, so the transport reads up to 4 MiB (parsed in ~15 ms) and the guard refuses what is
                # over max_metadata_bytes in milliseconds. Only beyond 4 MiB is the refusal gRPC's.
                ("grpc.max_metadata_size", transport_metadata),
                ("grpc.absolute_max_metadata_size", transport_metadata),
                ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1000)),
                ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_RecommenderServicer_to_server(
            RecommenderService(
                settings,
                self.bundle,
                live.pool,
                self.profiles,
                self.store,
                self.recommender,
                self.metrics,
                router=self.router,
                shadow=self.shadow,
                cache=self.cache,
                drift=self.drift,
            ),
            self.grpc,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        address = f"{settings.host}:{settings.grpc_port}"
        self.tls = credentials is not None
        self.port = (
            self.grpc.add_secure_port(address, credentials)
            if credentials is not None
            else self.grpc.add_insecure_port(address)
        )
        if self.port == 0:
            raise OSError(f"cannot bind the gRPC server to {settings.host}:{settings.grpc_port}")
        self.metrics_port: int | None = None
        self.admin: grpc.aio.Server | None
        self.admin_port: int | None
        self.admin, self.admin_port = (
            admin_server(settings, self.rollouts, interceptors=interceptors)
            if settings.admin_port is not None
            else (None, None)
        )
        self._watcher: asyncio.Task[None] | None = None
        self.triton_serving = False  # what the Triton health service says
        self._serving_seen = time.monotonic()  # when it last said SERVING (or the server was made)
        self._follower: asyncio.Task[None] | None = None
        # What must be ready for SERVING: the default variant of every role the bundle's models need.
        self.required = [
            m
            for m in (model_name(r, settings.default_variant) for r in ROLES if r not in OPTIONAL_ROLES)
            if m in self.pool.models
        ]

    def _on_live(self, runtime: BundleRuntime) -> None:
        """Another bundle became the live one: drift follows its reference, reloads its full plan first."""
        self.drift.follow(runtime.bundle)
        self._load_first(runtime.recommender)

    def _load_first(self, recommender: Recommender) -> None:
        """What a restarted Triton loads first: the live bundle's full rung (one model, then its per-model calls)."""
        self.pool.load_first([contract.GENERATOR, *recommender.full_branches], bool(recommender.full_rung))

    async def start(self) -> None:
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.pool.open()
        await self._check_models()
        await self.recommender.warm_up()
        if self.settings.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
        await self.grpc.start()
        if self.admin is not None:
            await self.admin.start()
        # The bundle is loaded and the server listens: it can answer, degraded if Triton is not there.
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._watcher = asyncio.create_task(self._watch())
        self._follower = asyncio.create_task(self._follow())
        log.info(
            "serving",
            extra={
                "grpc": f"{self.settings.host}:{self.port}",
                "metrics_port": self.metrics_port,
                "bundle": str(self.bundle.folder),
                "admin_port": self.admin_port,
                "triton": self.settings.triton_url,
                "models_ready": sorted(self.pool.ready),
                "tls": self.tls,
                "auth": "dev (no token needed)" if self.dev_mode else "token",
            },
        )
        if self.dev_mode and not is_loopback(self.settings.host):
            log.warning("auth_mode=dev on a non-loopback host: anyone who reaches the port has every role")

    async def _check_models(self, staged: bool = False) -> None:
        if self.settings.load_models:
            # First without loading: a Triton back with its models missing is NOT_SERVING at once, not
            # only once the loads end (a check that found it already back kept SERVING for the whole reload).
            await self._publish(await self.pool.refresh(load=False))
        # Staged in the watcher: the health service and metrics follow the default variant's models
        # as soon as they are back, not once every variant is.
        await self._publish(await self.pool.refresh(load=self.settings.load_models, staged=staged))

    async def _publish(self, live: bool) -> None:
        self.metrics.triton_ready.set(1 if live else 0)
        self.metrics.models_ready.set(len(self.pool.ready))
        for model in self.pool.models:
            self.metrics.model_ready.labels(model).set(1 if model in self.pool.ready else 0)
        pinned = self.router.live.pool.ready  # the live bundle's own versions, not just any version
        serving = live and all(m in pinned for m in self.required)
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.triton_serving = serving
        if serving:
            self._serving_seen = time.monotonic()
        await self.health.set(TRITON_HEALTH, status)

    async def _watch(self) -> None:
        while True:
            interval = self.settings.health_interval_s
            # A call that found Triton gone (UNAVAILABLE) wakes the watcher: Triton is back in well under
            # a second, and the check that finds it starts the loads.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.pool.lost.wait(), interval if self._settled() else min(interval, RECOVERY_INTERVAL_S)
                )
            self.pool.lost.clear()
            try:
                await self._check_models(staged=True)
            except Exception:  # the watcher must outlive any one failed check
                log.exception("health check failed")

    def _settled(self) -> bool:
        """SERVING, or away for longer than the recovery window: the watcher keeps its normal pace."""
        return self.triton_serving or time.monotonic() - self._serving_seen > RECOVERY_WINDOW_S

    async def _follow(self) -> None:
        # Apart from the health watcher: following the pointer may load and warm a bundle for seconds.
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            try:
                await self.rollouts.tick()
            except Exception:
                log.exception("rollout tick failed")

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first (load balancers stop sending), then drain in-flight calls, then close."""
        await self.health.enter_graceful_shutdown()
        for task in (self._watcher, self._follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.admin is not None:
            await self.admin.stop(0)
        await self.grpc.stop(self.settings.shutdown_grace_s if grace is None else grace)
        await self.shadow.close()
        await self.rollouts.close()
        await self.pool.close()
        self.metrics.stop()
        shutdown_tracing(self.tracer_provider)
        self.store.close()

    async def wait_for_termination(self) -> None:
        await self.grpc.wait_for_termination()


def create_server(settings: Settings) -> tuple[RecommendationServer, int]:
    """A server bound to ``settings.host:grpc_port`` (0 = a free port), not yet started."""
    server = RecommendationServer(settings)
    return server, server.port
