"""Which bundle answers a request: the live one, or the candidate by rollout stage.

- no rollout, or **shadow**: the live bundle answers; in shadow a share of requests is also
  computed by the candidate in the background (``server.rollout`` compares them).
- **canary**: users whose stable hash falls under the percentage get the candidate. The hash is
  of the user id (sha1, not Python's per-process ``hash``), so a user stays on one bundle for
  the whole stage and on every replica. Anonymous requests (no user id) stay on the live bundle.
- **full**: everyone gets the candidate; the old bundle stays loaded until retired.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from server.profiles import Profile
from server.runtime import BundleRuntime

IDLE, SHADOW, CANARY, FULL = "idle", "shadow", "canary", "full"
BUCKETS = 10_000


def bucket(user_id: str) -> int:
    """0..9999, the same for a user id in every process."""
    return int.from_bytes(hashlib.sha1(user_id.encode()).digest()[:4], "big") % BUCKETS


class Router:
    def __init__(self, live: BundleRuntime) -> None:
        self.live = live
        self.candidate: BundleRuntime | None = None
        self.stage = IDLE
        self.canary_percent = 0.0

    @property
    def runtimes(self) -> list[BundleRuntime]:
        return [self.live] + ([self.candidate] if self.candidate is not None else [])

    def route(self, user_id: str) -> BundleRuntime:
        candidate = self.candidate
        if candidate is None or self.stage in (IDLE, SHADOW):
            return self.live
        if self.stage == FULL:
            return candidate
        return candidate if user_id and bucket(user_id) < self.canary_percent * BUCKETS / 100 else self.live

    def other(self, runtime: BundleRuntime) -> BundleRuntime | None:
        """The bundle a comparison runs on: the candidate for a live answer and the reverse."""
        if self.candidate is None:
            return None
        return self.live if runtime is self.candidate else self.candidate

    @contextmanager
    def serving(self, runtime: BundleRuntime) -> Iterator[BundleRuntime]:
        runtime.inflight += 1
        try:
            yield runtime
        finally:
            runtime.inflight -= 1

    @property
    def profiles(self) -> FanOutProfiles:
        return FanOutProfiles(self)


class FanOutProfiles:
    """Profiles as the service sees them while a rollout has two bundles: feedback refreshes every
    loaded bundle's profiles (a candidate must see it too); reads use the live one."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def refresh(self, user_id: str) -> int:
        """Blocking store reads: call it off the event loop. Returns the user's store version."""
        versions = [runtime.profiles.refresh(user_id) for runtime in self.router.runtimes]
        return versions[0]

    def get(self, user_id: str, inline: dict[int, float] | None = None) -> Profile:
        return self.router.live.profiles.get(user_id, inline)
