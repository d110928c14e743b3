"""The shared backend: Valkey (or Redis) that every replica reads and writes.

One Lua script per append makes the idempotency check, the writes and the version bump atomic:
an event id already in ``fb:ids:recent`` is skipped; a new one gets the next ``fb:seq`` and goes
to the global log (list index = seq - 1, the retraining watermark) and to the user's own list
(what a profile read costs). Valkey runs scripts one at a time, so replicas appending at once
never interleave halfway. Durability comes from the server's AOF, checked when the store opens.

Idempotency is promised within the dedupe window (``dedupe_window_s``, 7 days by default): a
retry that arrives within the window after the first write of its id is ignored; one that arrives
later is stored again. The ids are a sorted set scored by arrival time on Valkey's clock (one
clock for every replica), and each append first drops the ids older than the window, in the same
script, so the set holds one window of ids instead of every id ever written. The events
themselves are kept (they are the training data). Give every replica the same window.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

from server.store.events import Event, StoreError

# Event payloads are JSON built in Python, sent as pairs (id, payload) after the window (ms);
# the script adds the seq. TIME is Valkey's clock: scripts replicate by effects, so it is allowed.
APPEND = """
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', tonumber(now) - tonumber(ARGV[1])))
local new = 0
for i = 2, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], 'NX', now, ARGV[i]) == 1 then
    local seq = redis.call('INCR', KEYS[2])
    local row = '{"seq":' .. seq .. ',' .. string.sub(ARGV[i + 1], 2)
    redis.call('RPUSH', KEYS[3], row)
    redis.call('RPUSH', KEYS[4], row)
    new = new + 1
  end
end
return new
"""
# Stores written before the window kept every id in a plain set (``fb:ids``): its ids move into
# the window once, as if written now, so a retry of one of them is still recognised for a window.
MIGRATE = """
local ids = redis.call('SMEMBERS', KEYS[1])
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
for i = 1, #ids, 1000 do
  local args = {}
  for j = i, math.min(i + 999, #ids) do
    args[#args + 1] = now
    args[#args + 1] = ids[j]
  end
  redis.call('ZADD', KEYS[2], 'NX', unpack(args))
end
redis.call('DEL', KEYS[1])
return #ids
"""
DEDUPE_WINDOW_S = 7 * 24 * 3600.0
LEGACY_IDS, IDS, SEQ, LOG = "fb:ids", "fb:ids:recent", "fb:seq", "fb:log"
CACHE = "cache:"


def user_key(user_id: str) -> str:
    return f"fb:u:{user_id}"


def _event(row: bytes) -> Event:
    d = json.loads(row)
    return Event(
        d["user_id"], int(d["item_id"]), d["kind"], d["rating"], int(d["timestamp_ms"]), d["event_id"], int(d["seq"])
    )


class ValkeyStore:
    local_reads = False  # a network round trip: reads go to a worker thread, off the event loop

    def __init__(self, url: str, dedupe_window_s: float = DEDUPE_WINDOW_S) -> None:
        if dedupe_window_s <= 0:
            raise StoreError(f"dedupe window {dedupe_window_s} s: it must be positive")
        self.window_ms = max(int(dedupe_window_s * 1000), 1)
        parts = urlsplit(url.replace("valkey://", "redis://", 1))
        options = parse_qs(parts.query)
        relaxed = options.get("durability", ["strict"])[0] == "relaxed"
        self.url = urlunsplit(parts._replace(query=""))
        self._db = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
        try:
            self._check_durability(relaxed)
            self._append = self._db.register_script(APPEND)
            if self._db.type(LEGACY_IDS) == b"set":
                self._db.register_script(MIGRATE)(keys=[LEGACY_IDS, IDS])
        except redis.RedisError as err:
            raise StoreError(f"cannot use the feedback store {self.url}: {err}") from None

    def _check_durability(self, relaxed: bool) -> None:
        try:
            config = self._db.config_get("append*")
        except redis.ResponseError:  # managed services may forbid CONFIG; their own guarantee applies
            return
        fsync = config.get("appendfsync")
        if config.get("appendonly") != "yes" or fsync not in (("always", "everysec") if relaxed else ("always",)):
            raise StoreError(
                f"{self.url} runs with appendonly={config.get('appendonly')} appendfsync={fsync}: "
                "an acknowledged event could be lost; configure `appendonly yes` and "
                "`appendfsync always` (or add ?durability=relaxed to accept everysec)"
            )

    def append(self, events: list[Event], request_id: str) -> int:
        users = {e.user_id for e in events}
        if len(users) != 1:
            raise ValueError("one append holds one user's events")
        args: list[str | int] = [self.window_ms]
        for e in (e.with_id() for e in events):
            args += [
                e.event_id,
                json.dumps(
                    {
                        "event_id": e.event_id,
                        "user_id": e.user_id,
                        "item_id": e.item_id,
                        "kind": e.kind,
                        "rating": e.rating,
                        "timestamp_ms": e.timestamp_ms,
                        "request_id": request_id,
                    }
                ),
            ]
        try:
            return int(self._append(keys=[IDS, SEQ, LOG, user_key(users.pop())], args=args))
        except redis.RedisError as err:
            raise StoreError(f"{self.url}: {err}") from None

    def user_events(self, user_id: str) -> list[Event]:
        return [_event(row) for row in self._call(self._db.lrange, user_key(user_id), 0, -1)]

    def version(self, user_id: str) -> int:
        return int(self._call(self._db.llen, user_key(user_id)))

    def events_after(self, seq: int = 0) -> Iterator[Event]:
        while True:
            rows = self._call(self._db.lrange, LOG, seq, seq + 4999)  # list index = seq - 1
            if not rows:
                return
            yield from (_event(row) for row in rows)
            seq += len(rows)

    def count(self) -> int:
        return int(self._call(self._db.llen, LOG))

    def cache_get(self, key: str) -> bytes | None:
        cached: bytes | None = self._call(self._db.get, CACHE + key)
        return cached

    def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._call(self._db.set, CACHE + key, value, px=max(int(ttl_s * 1000), 1))

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as err:
            raise StoreError(f"{self.url}: {err}") from None

    def close(self) -> None:
        self._db.close()
