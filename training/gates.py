"""Baseline gates: a model earns its place only by beating popularity on validation NDCG@10.

A learned model that cannot beat "recommend the most popular films" is worse than no model:
it is registered (so the run is inspectable) but never promoted to ``champion``, and it is left
out of the ensemble's fusion. The bar is relative, ``popularity x (1 + margin)``, so one setting
means the same on a data set where popularity scores 0.09 and on one where it scores 0.25.

The margin comes from ``--gate-margin`` or ``$RECSYS_GATE_MARGIN`` (default 0.05, i.e. 5%).
A margin of -1 puts the bar at 0, which turns the gate off: only for smoke runs on toy data
where a few epochs cannot beat popularity (the CLI tests).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)
BASELINE = "popularity"
DEFAULT_MARGIN = 0.05
MARGIN_ENV = "RECSYS_GATE_MARGIN"
PASSED = "passed"  # the registry tag value of a gated-in version


def margin_from_settings(explicit: float | None = None) -> float:
    """The gate margin: an explicit value, else ``$RECSYS_GATE_MARGIN``, else the default."""
    raw: Any = explicit if explicit is not None else os.environ.get(MARGIN_ENV, DEFAULT_MARGIN)
    try:
        margin = float(raw)
    except ValueError:
        raise ValueError(f"{MARGIN_ENV}={raw!r} is not a number; use a relative margin such as 0.05") from None
    if not -1.0 <= margin < 10.0:
        raise ValueError(f"gate margin must be in [-1, 10) (-1 turns the gate off), got {margin}")
    return margin


@dataclass(frozen=True)
class GateDecision:
    model: str
    passed: bool
    ndcg: float
    bar: float  # the validation NDCG@10 the model had to exceed
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(name: str, validation: Mapping[str, Mapping[str, float]], margin: float) -> GateDecision:
    """Whether ``name`` beats the popularity baseline's validation NDCG@10 by ``margin``."""
    if name == BASELINE:
        return GateDecision(name, True, validation[name].get("ndcg@10", 0.0), 0.0, "the baseline itself")
    if BASELINE not in validation or "ndcg@10" not in validation.get(name, {}):
        return GateDecision(name, False, 0.0, 0.0, "no validation NDCG@10 to compare with popularity")
    floor = validation[BASELINE]["ndcg@10"]
    bar, ndcg = floor * (1.0 + margin), validation[name]["ndcg@10"]
    if ndcg > bar:
        return GateDecision(
            name,
            True,
            ndcg,
            bar,
            f"validation ndcg@10 {ndcg:.4f} > popularity {floor:.4f} x (1 + {margin:g}) = {bar:.4f}",
        )
    return GateDecision(
        name,
        False,
        ndcg,
        bar,
        f"validation ndcg@10 {ndcg:.4f} does not beat popularity {floor:.4f} x (1 + {margin:g}) = {bar:.4f}",
    )


def gate_all(validation: Mapping[str, Mapping[str, float]], margin: float) -> dict[str, GateDecision]:
    decisions = {name: decide(name, validation, margin) for name in validation}
    for decision in decisions.values():
        if decision.model != BASELINE:
            log.log(
                logging.INFO if decision.passed else logging.WARNING,
                "gate model=%s %s: %s",
                decision.model,
                "passed" if decision.passed else "FAILED",
                decision.reason,
            )
    return decisions
