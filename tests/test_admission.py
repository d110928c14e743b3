"""Admission: in-flight limits follow the rate calls complete at while the model is busy (Little's law), never
below the floor."""

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


def serve(gate: Admission, model: str, clock: Clock, calls: int, each_s: float, at_once: int = 1) -> None:
    """``calls`` calls, ``at_once`` in flight together, each group answered after ``each_s``."""
    for _ in range(calls // at_once):
        for _ in range(at_once):
            gate.started(model)
        clock.now += each_s
        for _ in range(at_once):
            gate.finished(model, ok=True)


def test_the_limit_is_the_served_rate_times_the_target(clock: Clock) -> None:
    gate = Admission(floor=4)
    serve(gate, "rbm", clock, 200, 0.002)  # one at a time, 2 ms each: 500 calls/s
    assert gate.capacity("rbm").limit(50) == 25  # 500/s * 0.05 s
    assert gate.capacity("rbm").limit(1000) == 500  # a longer budget admits more
    for _ in range(25):
        gate.started("rbm")
    assert gate.full(("rbm",), 50) is not None and gate.full(("rbm",), 100) is None


def test_batches_raise_the_rate_and_a_slower_model_lowers_it(clock: Clock) -> None:
    gate = Admission(floor=4)
    serve(gate, "sae", clock, 640, 0.004, at_once=8)  # batches of 8 every 4 ms: 2000 calls/s
    assert gate.capacity("sae").rate() == pytest.approx(2000)
    serve(gate, "sae", clock, 64, 0.010)  # the machine got busy: 10 ms a call, one at a time
    assert gate.capacity("sae").rate() == pytest.approx(100)
    assert gate.capacity("sae").limit(200) in (19, 20)  # 100/s * 0.2 s (float rounding)


def test_an_idle_spell_keeps_the_measured_capacity(clock: Clock) -> None:
    """Idle time is not serving time: after a quiet minute a burst is admitted up to what Triton served."""
    gate = Admission(floor=4)
    serve(gate, "rbm", clock, 200, 0.002)
    clock.now += 60.0
    assert gate.capacity("rbm").limit(50) == 25
    for _ in range(20):  # a burst of 20, five times the floor
        assert gate.full(("rbm",), 50) is None
        gate.started("rbm")


def test_a_few_calls_say_nothing_yet(clock: Clock) -> None:
    gate = Admission(floor=4)
    serve(gate, "rbm", clock, 8, 0.0, at_once=8)  # one batch answering at one instant: no rate
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
