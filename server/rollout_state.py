"""The shared rollout pointer: which bundle is promoted, which candidate is at which stage.

Every replica reads it on each health tick and converges on it; whichever replica takes an
operator's command (or trips a guardrail) writes it. A restarted server starts on ``promoted``,
never on a candidate. Here it is a JSON file in a shared state folder: read-modify-write under
an ``flock`` and replaced by an atomic rename, so a reader never sees half a file. The interface
(``read`` / ``update``) is all the rest of the server uses, so the pointer can move into a
shared store (issue 12's Valkey) as one compare-and-set key without touching the rollout logic.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MAX_EVENTS = 50


@dataclass
class RolloutState:
    generation: int = 0  # +1 on every write; replicas apply a generation once
    promoted: str = ""  # bundle folder of the last promoted bundle ("" = the server's configured one)
    promoted_version: str = ""
    rollout_id: int = 0
    candidate: str = ""  # bundle folder under rollout, "" when none
    candidate_version: str = ""
    stage: str = "idle"  # idle, shadow, canary, full
    canary_percent: float = 0.0
    outcome: str = ""  # how the last rollout ended: "retired", "rolled back: <why>"
    events: list[dict[str, Any]] = field(default_factory=list)

    def log(self, message: str) -> None:
        self.events = [
            *self.events,
            {"at": time.time(), "rollout": self.rollout_id, "stage": self.stage, "message": message},
        ][-MAX_EVENTS:]


class PointerFile:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "rollout.json"

    def read(self) -> RolloutState:
        try:
            return RolloutState(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            return RolloutState()

    def update(self, change: Callable[[RolloutState], None]) -> RolloutState:
        """Apply ``change`` to the current state atomically (it may raise to write nothing)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "rollout.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read()
                change(state)
                state.generation += 1
                tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(asdict(state), indent=1))
                os.replace(tmp, self.path)
                return state
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def promoted_bundle(state_dir: Path, configured: Path) -> Path:
    """Where a starting server's live bundle is: the pointer's promoted bundle, else ``configured``."""
    promoted = PointerFile(state_dir).read().promoted
    if promoted and (Path(promoted) / "manifest.json").is_file():
        return Path(promoted)
    if promoted:
        log.warning("the promoted bundle %s is gone; starting on %s", promoted, configured)
    return configured
