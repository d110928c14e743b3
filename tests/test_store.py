"""The feedback store's two backends (SQLite, a real Valkey with AOF fsync always) and live profiles."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import redis

from server.bundle import load_bundle
from server.profiles import Profiles
from server.store import Event, Store, StoreError, open_store, sqlite_url
from server.store.valkey_server import ValkeyServer
from tests.stack import Artifacts


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    with ValkeyServer(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture(params=["sqlite", "valkey"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "fb.sqlite")
    else:
        server: ValkeyServer = request.getfixturevalue("valkey")
        redis.Redis.from_url(server.url).flushdb()
        url = server.url
    opened = open_store(url)
    yield opened
    opened.close()


def ev(user: str, item: int, rating: float | None, ts: int, event_id: str = "") -> Event:
    return Event(user, item, "click" if rating is None else "rating", rating, ts, event_id)


def test_a_repeated_event_id_is_stored_once(store: Store) -> None:
    batch = [ev("u", 1, 4.0, 10, "a"), ev("u", 2, None, 11, "b")]
    assert store.append(batch, "r1") == 2
    assert store.append(batch, "r1-retry") == 0  # the whole call retried: nothing new
    assert store.append([*batch, ev("u", 3, 5.0, 12, "c")], "r2") == 1
    # Without an id the content decides: the same event (same time) twice is one event.
    assert store.append([ev("u", 4, 3.0, 13)], "r3") == 1
    assert store.append([ev("u", 4, 3.0, 13)], "r4") == 0
    assert store.count() == 4 and store.version("u") == 4 and store.version("nobody") == 0
    assert [e.item_id for e in store.user_events("u")] == [1, 2, 3, 4]


def test_events_after_a_watermark_in_arrival_order(store: Store) -> None:
    for i in range(7):
        store.append([ev(f"user{i % 3}", i, 3.0, 100 - i, f"id{i}")], "r")
    events = list(store.events_after(0))
    assert [e.item_id for e in events] == list(range(7))
    assert all(a.seq < b.seq for a, b in itertools.pairwise(events))
    assert [e.item_id for e in store.events_after(events[3].seq)] == [4, 5, 6]
    assert [e.item_id for e in store.user_events("user1")] == [1, 4]


def test_cache_entries_expire(store: Store) -> None:
    store.cache_put("k", b"answer", 0.3)
    assert store.cache_get("k") == b"answer" and store.cache_get("other") is None
    time.sleep(0.4)
    assert store.cache_get("k") is None


def test_sqlite_batch_is_atomic_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "fb.sqlite"
    store = open_store(sqlite_url(path))
    store.append([ev("u", 1, 4.0, 1), ev("u", 2, None, 2)], "r1")
    with pytest.raises(sqlite3.IntegrityError):  # one bad event: none of the batch is stored
        store.append([ev("u", 3, 5.0, 3), Event("u", 4, "like", None, 4)], "r2")
    store.close()
    reopened = open_store(sqlite_url(path))
    assert [(e.item_id, e.kind) for e in reopened.events_after()] == [(1, "rating"), (2, "click")]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_sqlite_profile_reads_never_wait_for_a_write(tmp_path: Path) -> None:
    """The server reads profiles on its event loop (``local_reads``): a write mid-commit must not stall them."""
    store = open_store(sqlite_url(tmp_path / "fb.sqlite"))
    store.append([ev("u", 1, 4.0, 1)], "r1")
    assert store.local_reads
    read: list[tuple[int, int]] = []
    with store._lock:  # type: ignore[attr-defined]  # the SQLite store's write lock, held as an append holds it
        reader = threading.Thread(target=lambda: read.append((store.version("u"), len(store.user_events("u")))))
        reader.start()
        reader.join(5.0)
        assert read == [(1, 1)]
    store.close()


def test_sqlite_rows_from_before_event_ids_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, item_id INTEGER, "
        "kind TEXT, rating REAL, timestamp_ms INTEGER, request_id TEXT);"
        "INSERT INTO feedback VALUES (1, 'u', 7, 'rating', 5.0, 1, 'r'), "
        "(2, 'u', 8, 'click', NULL, 2, 'r');"
    )
    db.close()
    store = open_store(sqlite_url(path))
    assert [(e.item_id, e.event_id) for e in store.user_events("u")] == [(7, "legacy-1"), (8, "legacy-2")]
    store.close()


def test_valkey_without_fsync_always_is_refused(valkey: ValkeyServer) -> None:
    admin = redis.Redis.from_url(valkey.url)
    admin.config_set("appendfsync", "everysec")
    try:
        with pytest.raises(StoreError, match="appendfsync=everysec"):
            open_store(valkey.url)
        open_store(valkey.url + "?durability=relaxed").close()  # the operator accepted the loss window
    finally:
        admin.config_set("appendfsync", "always")


def test_valkey_killed_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    """SIGKILL gives Valkey no chance to flush: only fsync-before-reply (AOF always) keeps the events."""
    with ValkeyServer(tmp_path / "vk") as server:
        store = open_store(server.url)
        acked = sum(store.append([ev(f"u{i % 5}", i, 4.0, i, f"e{i}")], "r") for i in range(300))
        store.close()
        server.kill()
        server.start()  # same folder and port: replays the AOF
        reopened = open_store(server.url)
        assert acked == 300 and reopened.count() == 300 and reopened.version("u3") == 60
        reopened.close()


def test_valkey_remembers_event_ids_for_the_dedupe_window_only(valkey: ValkeyServer) -> None:
    """A retry within the window is ignored; the id set holds one window of ids, not every id ever
    written (each append drops the older ones atomically), and a retry after the window is new."""
    admin = redis.Redis.from_url(valkey.url)
    admin.flushdb()
    store = open_store(valkey.url, dedupe_window_s=0.5)
    assert store.append([ev("u", 1, 4.0, 1, "a"), ev("u", 2, 4.0, 2, "b")], "r1") == 2
    assert store.append([ev("u", 1, 4.0, 1, "a")], "r1-retry") == 0  # within the window
    assert admin.zcard("fb:ids:recent") == 2
    time.sleep(0.7)
    for n in range(20):  # a steady stream past the window: the set keeps only the recent ids
        assert store.append([ev("u", 100 + n, 3.0, 100 + n, f"s{n}")], "r") == 1
        time.sleep(0.05)
    scored = cast(list[tuple[bytes, float]], admin.zrange("fb:ids:recent", 0, -1, withscores=True))
    recent = {m.decode(): t for m, t in scored}
    # The stream lasted over 1 s: a set of every id would hold 22; this one holds at most one window.
    assert {"a", "b"}.isdisjoint(recent) and 1 <= len(recent) < 20
    assert max(recent.values()) - min(recent.values()) <= 500
    assert store.append([ev("u", 1, 4.0, 1, "a")], "late-retry") == 1  # past the window: stored again
    assert store.count() == 23
    store.close()
    with pytest.raises(StoreError, match="positive"):
        open_store(valkey.url, dedupe_window_s=0)


def test_valkey_ids_from_before_the_window_are_migrated(valkey: ValkeyServer) -> None:
    admin = redis.Redis.from_url(valkey.url)
    admin.flushdb()
    admin.sadd("fb:ids", "old1", "old2")  # what the store wrote before the dedupe window
    store = open_store(valkey.url)
    assert admin.type("fb:ids") == b"none" and admin.zcard("fb:ids:recent") == 2
    assert store.append([ev("u", 1, 4.0, 1, "old1"), ev("u", 2, 4.0, 2, "new")], "r") == 1
    store.close()


@pytest.mark.parametrize("bad", ["mysql://x", "sqlite:///", "sqlite://relative.db"])
def test_bad_store_urls_say_what_to_use(bad: str) -> None:
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store(bad)


def test_profiles_latest_event_wins_and_replicas_see_each_other(serving_artifacts: Artifacts, tmp_path: Path) -> None:
    bundle = load_bundle(serving_artifacts.bundle)
    url = sqlite_url(tmp_path / "fb.sqlite")
    store_a, store_b = open_store(url), open_store(url)
    a, b = Profiles(bundle, store_a), Profiles(bundle, store_b, capacity=2)
    user = next(iter(bundle.user_index))
    base = a.get(user)
    rated, unrated = int(base.item_idx[0]), int(np.setdiff1d(np.arange(bundle.n_items), base.item_idx)[0])
    raw = {i: int(bundle.item_ids[i]) for i in (rated, unrated)}
    assert b.refresh(user) == 0
    # Arrival order differs from event time: the rating made at t=30 must win over the one at t=20.
    store_a.append([ev(user, raw[rated], 2.0, 30), ev(user, raw[unrated], None, 5)], "r1")
    store_a.append([ev(user, raw[rated], 5.0, 20), ev(user, raw[rated], None, 40)], "r2")
    assert b.refresh(user) == 4  # B never saw these writes: it reads the store's version
    live = dict(zip(b.get(user).item_idx.tolist(), b.get(user).ratings.tolist(), strict=True))
    assert live[rated] == 2.0 and live[unrated] == bundle.liked_threshold and len(live) == len(base) + 1
    assert b.get(user, {rated: 5.0}).ratings[b.get(user).item_idx.tolist().index(rated)] == 5.0
    assert not b.get("stranger").known and b.get(user).known
    store_a.append([ev("newbie", raw[unrated], 4.0, 1)], "r3")
    b.refresh("newbie")
    b.refresh("other")
    assert len(b) == 2 and b.get("newbie").known  # bounded: the oldest profile left the LRU
    store_a.close()
    store_b.close()
