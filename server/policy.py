"""Which principal may call which method: one table, exact method names or prefixes, default deny.

A method missing from the table is refused (PERMISSION_DENIED), so a new service is closed until
someone writes its row. ``user_field``: the request field naming the user the call reads or
writes; a principal with only the ``user`` role may name just its own user id there.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.v1 import recommender_pb2 as pb

from server.auth import Principal
from server.errors import PermissionDenied
from server.validation import shown


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    user_field: str | None = None
    public: bool = False  # no token at all (health probes)
    limited: bool = True  # counts against max_concurrent_rpcs and the rate limits


CALLERS = frozenset({"service", "user", "admin"})
OPERATORS = frozenset({"service", "admin"})
ADMIN = frozenset({"admin"})
RECOMMENDER = "/" + pb.DESCRIPTOR.services_by_name["Recommender"].full_name + "/"

POLICY: dict[str, Rule] = {
    # Probes must work without credentials, and never wait behind user traffic.
    "/grpc.health.v1.Health/": Rule(CALLERS, public=True, limited=False),
    # The API's schema is for operators' tools (grpcurl), not the public.
    "/grpc.reflection.v1alpha.ServerReflection/": Rule(ADMIN, limited=False),
    RECOMMENDER + "Recommend": Rule(CALLERS, user_field="user_id"),  # explain reads the user's history
    RECOMMENDER + "RecordFeedback": Rule(CALLERS, user_field="user_id"),
    RECOMMENDER + "SimilarItems": Rule(CALLERS),
    RECOMMENDER + "GetOnboardingItems": Rule(CALLERS),
    RECOMMENDER + "ListModels": Rule(OPERATORS),  # model names, latencies and Triton's state are internals
    "/recsys.admin.v1.": Rule(ADMIN),  # the rollout/admin service (any method of any service in that package)
}


def rule_for(method: str, policy: dict[str, Rule] = POLICY) -> Rule | None:
    """The exact method's rule, else the longest prefix's, else None (refused)."""
    if method in policy:
        return policy[method]
    prefixes = [p for p in policy if p.endswith(("/", ".")) and method.startswith(p)]
    return policy[max(prefixes, key=len)] if prefixes else None


def authorize(method: str, rule: Rule | None, principal: Principal, request: object | None) -> None:
    if rule is None:
        raise PermissionDenied(f"{method} is not open to any caller (no policy row)")
    if not rule.roles & principal.roles:
        raise PermissionDenied(
            f"{method} needs one of the roles {sorted(rule.roles)}; {principal.name} has {sorted(principal.roles)}"
        )
    if rule.user_field and request is not None and not principal.any_user:
        named = str(getattr(request, rule.user_field))
        if named != principal.user_id:
            raise PermissionDenied(
                f"this token acts for user {principal.user_id!r} only; "
                f"the request names {rule.user_field}={shown(named)}"
            )
