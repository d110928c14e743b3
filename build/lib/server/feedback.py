"""Durable feedback: an append-only SQLite table in WAL mode, committed before the RPC answers OK.

``synchronous=FULL`` makes each commit reach the disk (WAL alone with NORMAL may lose the last
commits on power loss). Writes run in a worker thread so the event loop never waits on fsync;
one connection guarded by a lock keeps SQLite's single-writer rule simple.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rating', 'click')),
    rating REAL,
    timestamp_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user_id);
"""


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: int  # raw catalogue id
    kind: str  # "rating" or "click"
    rating: float | None
    timestamp_ms: int


class FeedbackStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def append(self, events: list[Event], request_id: str) -> None:
        """All events in one transaction: either every one is stored or none is."""
        rows = [(e.user_id, e.item_id, e.kind, e.rating, e.timestamp_ms, request_id) for e in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO feedback (user_id, item_id, kind, rating, timestamp_ms, request_id) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def replay(self) -> Iterator[Event]:
        """Every stored event in the order it was recorded."""
        with self._lock:
            rows = self._db.execute("SELECT user_id, item_id, kind, rating, timestamp_ms FROM feedback ORDER BY id")
            yield from (Event(*row) for row in rows.fetchall())

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
