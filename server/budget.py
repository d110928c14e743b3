"""Latency budgets and the plan that fits one.

The budget is the tightest of the request's ``latency_budget_ms``, the gRPC deadline and the
server's maximum (the default applies when the request names none). Model calls get the
budget minus a reserve kept for fusion and the reply; that is the hard limit after which the
server answers with what it has, marked degraded.

Plans are tried from best to cheapest, and the first whose predicted cost fits is used:

0. ``fused`` (``fused_full_rung``; the full rung of the ensemble strategy only): the ``full`` plan's
   two stages in one call to the full-rung model (``contract.FULL_RUNG``), when that model is
   ready at the precision the per-model calls would use and its own p95 fits. The plans below
   are its degrade path: they are used when it does not fit, is not ready, or its call fails.
1. ``full``: two stages. The two-tower model generates candidates (its top-N), then the
   catalogue scorers (SAE, RBM, EASE) rank them (plus their own top-N over the catalogue), concurrently with each other.
2. ``one_stage``: every model at once; the catalogue scorers rank the local candidates (popularity or
   genre-profile order) instead of waiting for the two-tower's, which saves a round.
3. (precision "auto" only) ``int8``: the int8 variants, in one stage.
4. fewer candidates, then only the models that fit on their own, down to ``local``, the
   popularity/content answer that needs no model at all.

A branch's predicted cost is the sum of its models' sliding-window p95 (the two-tower branch
is one call to the one-graph model, or its two halves in a row). Branches in one stage run
concurrently, so a stage costs its slowest branch; two stages cost the two-tower branch plus
the slowest ranker. Dropping exactly the branches that do not fit keeps every model that can
still answer in time. Plans with a single branch (the content rung, one-model strategies)
have nothing to stage and start at one stage, named ``full``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from recsys import contract

from server.triton_models import ModelPool

# Branch -> the roles it calls, in order; a branch with alternatives uses the first whose models
# are all ready (the one-graph two-tower model, else its two halves in a row).
BRANCHES = contract.BRANCHES
GENERATOR = contract.GENERATOR  # the candidate generator of a two-stage plan; the other branches rank
FULL_RUNG = contract.FULL_RUNG  # the role of the model running a whole two-stage plan in one call


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
    staged: bool = False  # rankers wait for the generator's candidates
    fused: str = ""  # the full-rung model answering every branch in one call ("": a call per model)

    @property
    def rankers(self) -> list[str]:
        return [b for b in self.branches if b != GENERATOR]


def _branch(pool: ModelPool, branch: str, precision: str) -> tuple[str, ...] | None:
    """The branch's models at ``precision`` (its first alternative all ready), or None."""
    for roles in BRANCHES[branch]:
        names = tuple(pool.resolve(role, precision) for role in roles)
        if all(name is not None and name in pool.ready for name in names):
            return names  # type: ignore[return-value]
    return None


def predicted_ms(pool: ModelPool, names: tuple[str, ...]) -> float:
    """A branch's predicted cost: its calls in a row, each at its p95."""
    return sum(pool.p95(m) for m in names)


def _plan(pool: ModelPool, name: str, branches: list[str], precision: str, candidates: int) -> Plan:
    chosen = {b: names for b in branches if (names := _branch(pool, b, precision)) is not None}
    return Plan(name, chosen, candidates, max((predicted_ms(pool, names) for names in chosen.values()), default=0.0))


def _staged(pool: ModelPool, plan: Plan) -> Plan:
    """``plan`` in two stages: the generator's calls, then the slowest ranker."""
    rankers = max(predicted_ms(pool, plan.branches[b]) for b in plan.rankers)
    return replace(plan, cost_ms=predicted_ms(pool, plan.branches[GENERATOR]) + rankers, staged=True)


def variant_of(model: str) -> str:
    """The variant of a Triton model name (``rbm_torchscript_fp32`` -> ``torchscript_fp32``)."""
    return next((v for v in contract.VARIANTS if model.endswith(f"_{v}")), "")


def _fused(
    pool: ModelPool, branches: list[str], members: tuple[str, ...], precision: str, candidates: int
) -> Plan | None:
    """The full rung as one call to the full-rung model running ``members``, or None: the branches
    must be the generator and rankers among its members (a member without a fusion weight is run
    and left unread), and its variant the one each branch's own model would run at ``precision``
    (a precision the full-rung model lacks goes to the per-model plans, which have it)."""
    if GENERATOR not in branches or len(branches) < 2 or not set(branches) <= set(members):
        return None
    name = pool.resolve(FULL_RUNG, precision)
    if name is None or name not in pool.ready:
        return None
    variant = variant_of(name)
    for branch in branches:  # each branch's first alternative with a model for every role
        alternatives = [[pool.resolve(role, precision) for role in roles] for roles in BRANCHES[branch]]
        own = next((names for names in alternatives if None not in names), [])
        if not own or any(variant_of(n or "") != variant for n in own):
            return None
    return Plan("fused", dict.fromkeys(branches, (name,)), candidates, pool.p95(name), fused=name)


def choose_plan(
    pool: ModelPool,
    branches: list[str],
    precision: str,
    available_ms: float,
    candidates: int,
    two_stage: bool = True,
    fused: tuple[str, ...] = (),
) -> tuple[Plan, list[Plan]]:
    """The best plan predicted to fit ``available_ms``, and every plan considered (for logs and tests).

    Models that are not ready are left out of every plan, which is how a Triton that is down
    costs no waiting. ``fused``: the members of the full-rung model to try first (() : none).
    """
    if not branches:
        local = Plan("local", {}, candidates, 0.0)
        return local, [local]
    full = _plan(pool, "full", branches, precision, candidates)
    options = [full]
    if two_stage and GENERATOR in full.branches and full.rankers:
        options = [_staged(pool, full), replace(full, name="one_stage")]
    if two_stage and (one_call := _fused(pool, branches, fused, precision, candidates)) is not None:
        options.insert(0, one_call)
    cheap = "int8" if precision == "auto" else precision
    if precision == "auto":
        options.append(_plan(pool, "int8", branches, "int8", candidates))
    fewer = max(candidates // 4, 10)
    options.append(_plan(pool, f"{cheap}:candidates={fewer}", branches, cheap, fewer))
    reduced = options[-1]
    fitting = [b for b in reduced.branches if predicted_ms(pool, reduced.branches[b]) <= available_ms]
    if fitting:
        dropped = [b for b in branches if b not in fitting]
        options.append(_plan(pool, f"{cheap}:drop={'+'.join(dropped)}", fitting, cheap, fewer))
    options.append(Plan("local", {}, fewer, 0.0))
    for option in options:
        if option.cost_ms <= available_ms:
            return option, options
    return options[-1], options
