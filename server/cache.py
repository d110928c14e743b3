"""The Recommend response cache, in the feedback store (shared by every replica on Valkey).

The key is a hash of (user, the user's profile version, every request field, bundle version):
feedback bumps the profile version and a rollout changes the bundle version, so both invalidate
an entry by construction, with no delete to forget. Entries also expire after ``ttl_s``, which
bounds how long an answer outlives anything else it depends on (popularity, latency plans).
Degraded answers are never stored: a model that was missing for one call must not be missing
for every later call of that key. A store failure only costs the cache, never the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from recsys.v1 import recommender_pb2 as pb

from server.store import Store, StoreError

log = logging.getLogger(__name__)


def cache_key(request: pb.RecommendRequest, profile_version: int, bundle_version: str) -> str:
    digest = hashlib.sha256()
    for part in (request.user_id, str(profile_version), bundle_version):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(request.SerializeToString(deterministic=True))
    return "rec:" + digest.hexdigest()[:40]


class ResponseCache:
    def __init__(self, store: Store, ttl_s: float) -> None:
        self.store, self.ttl_s = store, ttl_s

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    async def get(self, key: str) -> pb.RecommendResponse | None:
        try:
            data = await asyncio.to_thread(self.store.cache_get, key)
        except StoreError as err:
            log.warning("cache read failed", extra={"reason": str(err)})
            return None
        return None if data is None else pb.RecommendResponse.FromString(data)

    async def put(self, key: str, response: pb.RecommendResponse) -> bool:
        if response.degraded:
            return False
        try:
            await asyncio.to_thread(self.store.cache_put, key, response.SerializeToString(), self.ttl_s)
        except StoreError as err:
            log.warning("cache write failed", extra={"reason": str(err)})
            return False
        return True
