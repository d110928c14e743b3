"""The rollout admin client (``recsys.admin.v1.RolloutAdmin``) and ``ship``, which walks a bundle through the stages.

    with RolloutAdminClient("127.0.0.1:50052") as admin:
        ship(admin, "serving_bundle", shadow_s=30, canary_s=30, canary_percent=10, print_=print)

Admin calls are not retried: a StartRollout that timed out may have started (GetRollout says).
A refusal raises ``RolloutRefused`` (FAILED_PRECONDITION) with the server's reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import grpc
from recsys.admin.v1 import admin_pb2 as apb
from recsys.admin.v1 import admin_pb2_grpc as apb_grpc

from clients.credentials import Credentials
from clients.errors import RecsysError, from_rpc_error


class RolloutRefused(RecsysError):
    """The server refused the rollout command and changed nothing; the message says why."""


class RolledBack(RecsysError):
    """The rollout ended in a rollback (a guardrail, an operator, a replica)."""


class RolloutAdminClient:
    def __init__(
        self,
        target: str,
        *,
        timeout: float = 180.0,
        channel: grpc.Channel | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        # StartRollout loads, warms up and checks a bundle: seconds to minutes, hence the long default.
        self.credentials = credentials or Credentials()  # an admin token (and TLS) when the server wants them
        self.channel = channel or self.credentials.channel(target)
        self.stub = apb_grpc.RolloutAdminStub(self.channel)
        self.timeout = timeout

    def _call(self, method: str, request: Any) -> apb.Rollout:
        try:
            reply: apb.Rollout = getattr(self.stub, method)(
                request, timeout=self.timeout, metadata=self.credentials.metadata()
            )
            return reply
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise RolloutRefused(error.code(), error.details() or "") from None
            raise from_rpc_error(error) from None

    def start(self, bundle: str) -> apb.Rollout:
        return self._call("StartRollout", apb.StartRolloutRequest(bundle=bundle))

    def get(self) -> apb.Rollout:
        return self._call("GetRollout", apb.GetRolloutRequest())

    def promote(self, stage: str = "", canary_percent: float = 0.0) -> apb.Rollout:
        return self._call("Promote", apb.PromoteRequest(stage=stage, canary_percent=canary_percent))

    def rollback(self, reason: str = "") -> apb.Rollout:
        return self._call("Rollback", apb.RollbackRequest(reason=reason))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RolloutAdminClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def hold(admin: RolloutAdminClient, rollout_id: int, seconds: float, poll_s: float = 0.5) -> apb.Rollout:
    """Wait ``seconds`` in the current stage; raise RolledBack as soon as the rollout is rolled back."""
    deadline = time.monotonic() + seconds
    while True:
        state = admin.get()
        if state.rollout_id != rollout_id or state.stage == "idle":
            raise RolledBack(grpc.StatusCode.ABORTED, state.outcome or "the rollout ended")
        if time.monotonic() >= deadline:
            return state
        time.sleep(poll_s)


def ship(
    admin: RolloutAdminClient,
    bundle: str,
    *,
    shadow_s: float,
    canary_s: float,
    canary_percent: float,
    print_: Callable[[str], None] = print,
) -> apb.Rollout:
    """StartRollout, then shadow -> canary -> full -> retire, holding each stage while the guardrails watch."""
    state = admin.start(bundle)
    print_(f"rollout {state.rollout_id}: bundle {state.candidate_bundle} in shadow beside {state.promoted_bundle}")
    hold(admin, state.rollout_id, shadow_s)
    state = admin.promote("canary", canary_percent)
    print_(f"canary: {state.canary_percent:g}% of users on bundle {state.candidate_bundle}")
    hold(admin, state.rollout_id, canary_s)
    state = admin.promote("full")
    print_(f"full: every user on bundle {state.candidate_bundle}")
    hold(admin, state.rollout_id, min(shadow_s, canary_s))
    state = admin.promote("retire")
    print_(f"promoted bundle {state.promoted_bundle}; the old versions unload once drained")
    return state
