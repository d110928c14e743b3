"""Where feedback events and cached answers live: one small interface, two real backends.

    open_store("sqlite:///var/feedback.sqlite")   # one node, embedded (the default)
    open_store("redis://127.0.0.1:6379/0")        # N replicas share one Valkey/Redis

Durability, per backend (an event is acknowledged only after ``append`` returned):

- SQLite: WAL with ``synchronous=FULL``; every commit is fsynced before ``append`` returns, so
  neither a killed process nor a power loss drops an acknowledged event.
- Valkey/Redis: the server must run with ``appendonly yes`` and ``appendfsync always``; it then
  fsyncs the AOF before it replies, so a killed Valkey restarts with every acknowledged event.
  ``open_store`` checks both settings and refuses a server without them (``?durability=relaxed``
  accepts ``everysec``: up to one second of acknowledged events can be lost if Valkey dies).

Idempotency, per backend (an event's id is the key; ``Event.with_id`` derives one from the content):

- SQLite: forever; the id is a UNIQUE column of the events, which are all kept.
- Valkey/Redis: within the dedupe window (``dedupe_window_s``, setting ``RECSYS_DEDUPE_WINDOW_S``,
  7 days by default): a retry within the window of the first write is ignored, a later one is
  stored again. The ids are kept for one window only, so the id set stays bounded.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from server.store.events import Event, Store, StoreError

__all__ = ["Event", "Store", "StoreError", "open_store", "sqlite_url"]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def open_store(url: str, dedupe_window_s: float | None = None) -> Store:
    """The store a ``RECSYS_STORE`` URL names; StoreError says what is wrong with it.
    ``dedupe_window_s``: how long Valkey remembers event ids (None: its default, 7 days)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from server.store.sqlite import SqliteStore

        path = url[len("sqlite://") :]
        if not path.startswith("/") or path == "/":
            raise StoreError(f"store {url!r}: use sqlite:///ABSOLUTE/PATH.sqlite")
        return SqliteStore(Path(path))
    if scheme in ("redis", "rediss", "valkey"):
        from server.store.valkey import ValkeyStore

        return ValkeyStore(url) if dedupe_window_s is None else ValkeyStore(url, dedupe_window_s)
    raise StoreError(f"store {url!r}: the scheme must be sqlite:///PATH or redis://HOST:PORT/DB")
