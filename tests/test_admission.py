"""Admission: in-flight limits follow the rate calls complete at (Little's law), never below the floor."""

from __future__ import annotations

import time

import pytest

from server.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "monotonic", fake)  # the clock server.admission reads
    return fake


def test_the_floor_is_admitted_then_the_excess_is_refused(clock: Clock) -> None:
    gate = Admission(floor=4)
    for _ in range(4):
        assert gate.full(("sae",), 50) is None
        gate.started("sae")
    why = gate.full(("two_tower_user", "sae"), 50)
    assert why is not None and "sae: 4 calls in flight, limit 4" in why
    gate.finished("sae", ok=True)
    assert gate.full(("sae",), 50) is None


def test_the_limit_is_the_served_rate_times_the_target(clock: Clock) -> None:
    gate = Admission(floor=4)
    for _ in range(1000):  # 500 calls/s over the 2 s window
        gate.started("rbm")
        gate.finished("rbm", ok=True)
    assert gate.capacity("rbm").limit(50) == 25  # 500/s * 0.05 s
    assert gate.capacity("rbm").limit(1000) == 500  # a longer budget admits more
    for _ in range(25):
        gate.started("rbm")
    assert gate.full(("rbm",), 50) is not None and gate.full(("rbm",), 100) is None
    clock.now += 1.0  # the window still holds them
    assert gate.capacity("rbm").limit(50) == 25
    clock.now += 1.5  # they aged out: back to the floor
    assert gate.capacity("rbm").limit(50) == 4


def test_failed_calls_free_their_slot_but_add_no_capacity(clock: Clock) -> None:
    gate = Admission(floor=2)
    for _ in range(500):
        gate.started("sae")
        gate.finished("sae", ok=False)
    assert gate.capacity("sae").in_flight == 0 and gate.capacity("sae").limit(50) == 2


def test_admission_can_be_turned_off(clock: Clock) -> None:
    gate = Admission(floor=1, enabled=False)
    for _ in range(10):
        gate.started("sae")
    assert gate.full(("sae",), 1.0) is None
