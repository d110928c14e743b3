"""The embedded backend: one SQLite file in WAL mode, committed and fsynced before an append returns.

``synchronous=FULL`` makes each commit reach the disk (WAL with NORMAL may lose the last commits
on power loss). The event id is UNIQUE, so ``ON CONFLICT DO NOTHING`` is the idempotency check and the
rows it inserted are the new events. The response cache sits in the same file on a second
connection with ``synchronous=OFF``: a lost cache entry costs one recomputation, never an event.

Profile reads (``version``, ``user_events``) have a connection of their own: in WAL mode a reader
never waits for the writer, so a read takes microseconds even while an append fsyncs, and the
server makes it on its event loop (``local_reads``) instead of paying a worker-thread hop per
request (18% of the server's samples under load, more than the read itself).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from server.store.events import Event, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rating', 'click')),
    rating REAL,
    timestamp_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL);
"""
# The table before event ids: its rows move over once, with ids that cannot collide with new ones.
MIGRATE = """
INSERT OR IGNORE INTO events (event_id, user_id, item_id, kind, rating, timestamp_ms, request_id)
    SELECT 'legacy-' || id, user_id, item_id, kind, rating, timestamp_ms, request_id FROM feedback ORDER BY id;
DROP TABLE feedback;
"""
COLUMNS = "user_id, item_id, kind, rating, timestamp_ms, event_id, seq"


class SqliteStore:
    local_reads = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect("FULL")
            self._db.executescript(SCHEMA)
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'feedback'").fetchone():
                self._db.executescript(f"BEGIN IMMEDIATE; {MIGRATE} COMMIT;")
            self._cache = self._connect("OFF")
            self._reader = self._connect("FULL")
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open the feedback store {self.path}: {err}") from None
        self._lock = threading.Lock()  # one writer at a time (SQLite's rule), reads share it too
        self._cache_lock = threading.Lock()
        self._read_lock = threading.Lock()  # held for one query; never across a write's commit

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        return db

    def append(self, events: list[Event], request_id: str) -> int:
        """All events in one transaction: either every new one is stored or none is."""
        rows = [
            (e.event_id, e.user_id, e.item_id, e.kind, e.rating, e.timestamp_ms, request_id)
            for e in (e.with_id() for e in events)
        ]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # ON CONFLICT, not OR IGNORE: only a known id is skipped; a CHECK failure still aborts.
                self._db.executemany(
                    "INSERT INTO events (event_id, user_id, item_id, kind, rating, timestamp_ms, "
                    "request_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._db.total_changes - before

    def user_events(self, user_id: str) -> list[Event]:
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {COLUMNS} FROM events WHERE user_id = ? ORDER BY seq", (user_id,)
            ).fetchall()
        return [Event(*row) for row in rows]

    def version(self, user_id: str) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COUNT(*) FROM events WHERE user_id = ?", (user_id,)).fetchone()[0])

    def events_after(self, seq: int = 0) -> Iterator[Event]:
        while True:  # in pages, so neither side holds every event at once
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT 5000", (seq,)
                ).fetchall()
            if not rows:
                return
            yield from (Event(*row) for row in rows)
            seq = rows[-1][-1]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def cache_get(self, key: str) -> bytes | None:
        with self._cache_lock:
            row = self._cache.execute(
                "SELECT value FROM cache WHERE key = ? AND expires > ?", (key, time.time())
            ).fetchone()
        return None if row is None else bytes(row[0])

    def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        now = time.time()
        with self._cache_lock:
            self._cache.execute(
                "INSERT OR REPLACE INTO cache (key, value, expires) VALUES (?, ?, ?)", (key, value, now + ttl_s)
            )
            # Expired entries go a few at a time, so the table stays near the live working set.
            self._cache.execute(
                "DELETE FROM cache WHERE key IN (SELECT key FROM cache WHERE expires <= ? LIMIT 16)", (now,)
            )

    def close(self) -> None:
        with self._lock, self._cache_lock, self._read_lock:
            self._db.close()
            self._cache.close()
            self._reader.close()
