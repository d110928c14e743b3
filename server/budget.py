"""Latency budgets and the plan that fits one.

The budget is the tightest of the request's ``latency_budget_ms``, the gRPC deadline and the
server's maximum (the default applies when the request names none). Model calls get the
budget minus a reserve kept for fusion and the reply; that is the hard limit after which the
server answers with what it has, marked degraded.

Plans are tried from best to cheapest, and the first whose predicted cost fits is used:
the precision asked for with every model, then (precision "auto" only) the int8 variants,
then fewer candidates, then only the models that fit on their own, down to the local
popularity/content answer that needs no model at all. A branch's predicted cost is the sum
of its models' sliding-window p95 (the two-tower branch is two calls in a row); branches run
concurrently, so a plan costs its slowest branch, and dropping exactly the branches that do
not fit keeps every model that can still answer in time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from server.triton_models import ModelPool

# Branch -> the roles it calls, in order.
BRANCHES = {"sae": ("sae",), "rbm": ("rbm",), "two_tower": ("two_tower_user", "two_tower_items")}


@dataclass(frozen=True)
class Budget:
    total_ms: float
    started: float = field(default_factory=time.perf_counter)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def left_ms(self) -> float:
        return self.total_ms - self.elapsed_ms()


def effective_budget_ms(requested_ms: int, deadline_left_s: float | None, default_ms: int, max_ms: int) -> float:
    budget = float(min(requested_ms or default_ms, max_ms))
    if deadline_left_s is not None:
        budget = min(budget, deadline_left_s * 1000)
    return budget


@dataclass(frozen=True)
class Plan:
    name: str
    branches: dict[str, tuple[str, ...]]  # branch -> Triton model names, called in order
    candidates: int
    cost_ms: float


def _branch(pool: ModelPool, branch: str, precision: str) -> tuple[str, ...] | None:
    """The branch's models at ``precision``, or None when one of them is not ready."""
    names = []
    for role in BRANCHES[branch]:
        name = pool.resolve(role, precision)
        if name is None or name not in pool.ready:
            return None
        names.append(name)
    return tuple(names)


def _plan(pool: ModelPool, name: str, branches: list[str], precision: str, candidates: int) -> Plan:
    chosen = {b: names for b in branches if (names := _branch(pool, b, precision)) is not None}
    cost = max((sum(pool.p95(m) for m in names) for names in chosen.values()), default=0.0)
    return Plan(name, chosen, candidates, cost)


def choose_plan(pool: ModelPool, branches: list[str], precision: str, available_ms: float,
                candidates: int) -> tuple[Plan, list[Plan]]:
    """The best plan predicted to fit ``available_ms``, and every plan considered (for logs and tests).

    Models that are not ready are left out of every plan, which is how a Triton that is down
    costs no waiting.
    """
    if not branches:
        local = Plan("local", {}, candidates, 0.0)
        return local, [local]
    options = [_plan(pool, "full", branches, precision, candidates)]
    cheap = "int8" if precision == "auto" else precision
    if precision == "auto":
        options.append(_plan(pool, "int8", branches, "int8", candidates))
    fewer = max(candidates // 4, 10)
    options.append(_plan(pool, f"{cheap}:candidates={fewer}", branches, cheap, fewer))
    reduced = options[-1]
    fitting = [b for b in reduced.branches if sum(pool.p95(m) for m in reduced.branches[b]) <= available_ms]
    if fitting:
        dropped = [b for b in branches if b not in fitting]
        options.append(_plan(pool, f"{cheap}:drop={'+'.join(dropped)}", fitting, cheap, fewer))
    options.append(Plan("local", {}, fewer, 0.0))
    for option in options:
        if option.cost_ms <= available_ms:
            return option, options
    return options[-1], options
