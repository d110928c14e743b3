"""Where the SDK sends calls: one address, several, or a DNS name with many addresses, spread by
gRPC's ``round_robin`` policy (a call per ready backend in turn; a backend that goes away is
skipped until it is back, and the SDK's UNAVAILABLE retry lands on another one).

    "10.0.0.5:50051"                                  one server
    ["10.0.0.5:50051", "10.0.0.6:50051"]  or  "a:50051,b:50051"   a list
    "dns:///recsys-grpc.recsys.svc.cluster.local:50051"           every address of a (headless) Service
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

ROUND_ROBIN = [("grpc.lb_policy_name", "round_robin")]


def _address(target: str) -> str:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"target {target!r}: use HOST:PORT")
    try:  # the ipv4: resolver takes literal addresses only
        return f"{socket.gethostbyname(host.strip('[]'))}:{port}"
    except OSError as err:
        raise ValueError(f"target {target!r}: cannot resolve {host} ({err})") from None


def channel_target(target: str | Sequence[str]) -> tuple[str, list[tuple[str, str]]]:
    """The gRPC target string and channel options for ``target`` (see the module doc)."""
    targets = [t.strip() for t in (target.split(",") if isinstance(target, str) else target) if t.strip()]
    if not targets:
        raise ValueError("no target: give HOST:PORT, a list of them, or dns:///NAME:PORT")
    if len(targets) == 1:
        return targets[0], list(ROUND_ROBIN)  # a name resolving to many addresses is spread over them too
    return "ipv4:" + ",".join(_address(t) for t in targets), list(ROUND_ROBIN)
