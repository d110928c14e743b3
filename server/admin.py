"""The admin gRPC service (``recsys.admin.v1.RolloutAdmin``) on its own server and port, loopback by default.

It is a separate ``grpc.aio`` server so the public port never exposes it; ``add_admin_service``
is the one place it is registered, where an authentication interceptor can be put in front.
Refusals come back as FAILED_PRECONDITION with the reason; nothing is changed by a refused call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from recsys.admin.v1 import admin_pb2 as apb
from recsys.admin.v1 import admin_pb2_grpc as apb_grpc

from server.errors import InvalidRequest, status_of
from server.rollout import RolloutManager
from server.rollout_state import RolloutState
from server.settings import Settings

log = logging.getLogger("server.admin")


def _side(stats: dict[str, float]) -> apb.SideStats:
    return apb.SideStats(
        answers=int(stats["answers"]),
        error_rate=stats["error_rate"],
        p99_ms=stats["p99_ms"],
        degraded_share=stats["degraded_share"],
    )


def rollout_message(state: RolloutState, manager: RolloutManager) -> apb.Rollout:
    stats = manager.guardrails.summary()
    live, cand, serving = stats["live"], stats["candidate"], manager.router.live
    return apb.Rollout(
        rollout_id=state.rollout_id,
        stage=state.stage,
        promoted_bundle=state.promoted_version or serving.version,
        promoted_path=state.promoted or str(serving.bundle.folder),
        candidate_bundle=state.candidate_version,
        candidate_path=state.candidate,
        canary_percent=state.canary_percent,
        outcome=state.outcome,
        events=[
            apb.RolloutEvent(at=e["at"], rollout_id=e["rollout"], stage=e["stage"], message=e["message"])
            for e in state.events
        ],
        live=_side(live),
        candidate=_side(cand),
        top10_overlap=cand["overlap"],
        compared=int(cand["compared"]),
        serving_bundle=manager.router.live.version,
    )


class RolloutAdminService(apb_grpc.RolloutAdminServicer):
    def __init__(self, manager: RolloutManager) -> None:
        self.manager = manager

    async def _run(
        self, rpc: str, context: grpc.aio.ServicerContext[Any, Any], action: Callable[[], Awaitable[RolloutState]]
    ) -> apb.Rollout:
        try:
            state = await action()
        except Exception as err:  # refusals and bad input carry their own status; the rest is INTERNAL
            code, message = status_of(err)
            (log.exception if code == grpc.StatusCode.INTERNAL else log.info)(
                "admin call refused", extra={"rpc": rpc, "code": code.name, "reason": message}
            )
            await context.abort(code, message)
        log.info("admin call", extra={"rpc": rpc, "stage": state.stage, "rollout": state.rollout_id})
        return rollout_message(state, self.manager)

    async def StartRollout(
        self, request: apb.StartRolloutRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apb.Rollout:
        async def start() -> RolloutState:
            if not request.bundle:
                raise InvalidRequest("bundle is empty; name a bundle folder (serving_bundle/N) or its parent")
            return await self.manager.start(request.bundle)

        return await self._run("StartRollout", context, start)

    async def GetRollout(
        self, request: apb.GetRolloutRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> apb.Rollout:
        async def get() -> RolloutState:
            return self.manager.get()

        return await self._run("GetRollout", context, get)

    async def Promote(self, request: apb.PromoteRequest, context: grpc.aio.ServicerContext[Any, Any]) -> apb.Rollout:
        async def promote() -> RolloutState:
            if not 0 <= request.canary_percent <= 100:
                raise InvalidRequest(f"canary_percent {request.canary_percent:g} is not a percentage (0..100)")
            return await self.manager.promote(request.stage, request.canary_percent)

        return await self._run("Promote", context, promote)

    async def Rollback(self, request: apb.RollbackRequest, context: grpc.aio.ServicerContext[Any, Any]) -> apb.Rollout:
        async def rollback() -> RolloutState:
            return self.manager.rollback(request.reason or "operator request")

        return await self._run("Rollback", context, rollback)


def add_admin_service(server: grpc.aio.Server, manager: RolloutManager) -> None:
    """Register the admin service (the hook where an auth interceptor goes in front of it)."""
    apb_grpc.add_RolloutAdminServicer_to_server(RolloutAdminService(manager), server)


def admin_server(settings: Settings, manager: RolloutManager, **options: Any) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)], **options)
    add_admin_service(server, manager)
    port = server.add_insecure_port(f"{settings.admin_host}:{settings.admin_port}")
    if port == 0:
        raise OSError(f"cannot bind the admin service to {settings.admin_host}:{settings.admin_port}")
    return server, port
