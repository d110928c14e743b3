"""Serving benchmark: the same workload sent (a) to the Triton models directly and (b) through our server.

    python -m loadtest.benches.serving [--duration 10] [--concurrency 1,8,32] [--users 200]   (make bench-serving)

One embedded Triton serves both paths; our server runs as its own process (as deployed), so the
load generator does not share its interpreter. A request is one known user's top-10 from the
full ensemble. (a) makes the calls the server's two-stage plan makes for it -- the two-tower
user tower then item scorer, then SAE and RBM concurrently with the user's ratings and the
two-tower's top items as candidates -- with tritonclient's asyncio client; (b) calls
``Recommend`` through the SDK, which adds the profile lookup, planning, fusion, filters and
the gRPC hop. Both paths run one after the other at each concurrency, in one run, so the ratio
(b)/(a) is read off the same machine state; ``plans`` says which plans the server chose.

Writes ``reports/serving.json``: ``{"runs": [{"concurrency", "path", "p50_ms", "p99_ms", "rps",
"triton_avg_batch": {model: x}, "triton": {model: counters}}], "overhead_p50": {concurrency: ratio},
"triton_avg_batch": {concurrency: {model: x}}}`` (server path; from Triton's request and execution
counters) plus ``quality`` (NDCG@10 of the served ensemble on the held-out split, through the
server with inline ratings), ``meta``, ``"unbatched"``: the same report from a second Triton
(and server) over a copy of the repository without dynamic batching, measured right after the
batched stack at each concurrency, ``server_rps_vs_unbatched`` and ``bars`` (the issue's bars).
``--catalog synthetic-60k`` runs on the 60k-item catalogue (built once under ``var/catalogs/``).

The servers try the full-rung model first as ``fused_full_rung`` says (the two-stage ensemble in
one call, when the repository has it; the direct path then makes that one call). ``--compare-fused``
runs the main server with it off (per-model calls) and adds a second server over the same Triton
with it on, measured right after the first at each concurrency: the report gains ``"fused"`` (the
same report for it), ``server_rps_fused_vs_per_model`` and ``server_p50_fused_vs_per_model`` /
``server_p99_fused_vs_per_model`` (fused / per-model, per concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tritonaio
from recsys import contract
from tritonclient.grpc import InferInput, InferRequestedOutput

from clients.aio import AsyncRecommenderClient
from export.repository import copy_with_batching, read_config
from loadtest.benches.catalogs import CATALOGS, catalog
from loadtest.server_process import start_server, stop_server
from server.bundle import Bundle, load_bundle
from server.paths import REPORTS
from server.settings import Settings
from server.triton import EmbeddedTriton
from server.triton_metrics import batching_between, scrape

log = logging.getLogger("loadtest.benches.serving")


def _tensor(name: str, array: np.ndarray) -> InferInput:
    tensor = InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def direct_request(
    bundle: Bundle, row: int, variant: str, candidates: int, two_stage: bool, full_rung: bool = False
) -> Callable[[tritonaio.InferenceServerClient], Awaitable[None]]:
    """The Triton calls the server makes for this user's full-ensemble Recommend (models with a fusion
    weight); ``full_rung``: its one call to the full-rung model, as the server's ``fused`` plan."""
    history = bundle.histories[row]
    items = history.indices.astype(np.int64)[None]
    ratings = history.data.astype(np.float32)[None]
    eligible = np.ones(bundle.n_items, dtype=bool)
    eligible[history.indices] = False
    popular = np.flatnonzero(eligible)[np.argsort(-bundle.popularity[eligible], kind="stable")][:candidates]
    none = np.full((1, 1), -1, dtype=np.int64)
    codes = (bundle.demographics[row] if bundle.demographics is not None else np.zeros(3)).astype(np.int64)[None]
    fused = f"two_tower_{variant}" in bundle.manifest.get("repository", {})

    async def catalog(client: tritonaio.InferenceServerClient, role: str, cands: np.ndarray) -> None:
        await client.infer(
            f"{role}_{variant}",
            [
                _tensor("ITEM_IDX__0", items),
                _tensor("RATING__1", ratings),
                _tensor("EXCLUDE_IDX__2", none),
                _tensor("CANDIDATE_IDX__3", cands[None]),
            ],
        )

    async def two_tower(client: tritonaio.InferenceServerClient) -> np.ndarray:
        if fused:  # one call, as the server makes when the one-graph model is exported
            top = await client.infer(
                f"two_tower_{variant}",
                [
                    _tensor("ITEM_IDX__0", items),
                    _tensor("RATING__1", ratings),
                    _tensor("DEMOGRAPHICS__2", codes),
                    _tensor("EXCLUDE_IDX__3", none),
                ],
            )
            ranked: np.ndarray = top.as_numpy("TOP_IDX__0")[0]
            return ranked
        user = await client.infer(
            f"two_tower_user_{variant}",
            [_tensor("ITEM_IDX__0", items), _tensor("RATING__1", ratings), _tensor("DEMOGRAPHICS__2", codes)],
        )
        embedding = user.as_numpy("USER_EMBEDDING__0").astype(np.float32)
        top = await client.infer(
            f"two_tower_items_{variant}", [_tensor("USER_EMBEDDING__0", embedding), _tensor("EXCLUDE_IDX__1", items)]
        )
        ranked_items: np.ndarray = top.as_numpy("TOP_IDX__0")[0]
        return ranked_items

    # The models the server's full rung calls: those the bundle's fusion gives a weight.
    weights = bundle.fusion.weights
    rankers = [role for role in contract.CATALOG_SCORERS if weights.get(role, 0) > 0]

    members = tuple(bundle.manifest.get("full_rung_members") or contract.full_rung_members(weights))
    full_rung = (
        full_rung
        and two_stage
        and contract.model_name(contract.FULL_RUNG, variant) in bundle.manifest.get("repository", {})
    )
    local = np.full((1, candidates), -1, dtype=np.int64)
    local[0, : len(popular)] = popular

    async def one_call(client: tritonaio.InferenceServerClient) -> None:
        await client.infer(
            contract.model_name(contract.FULL_RUNG, variant),
            [
                _tensor(name, value)
                for name, value in zip(contract.FULL_RUNG_INPUTS, (items, ratings, codes, none, local), strict=True)
            ],
            outputs=[InferRequestedOutput(name) for name in contract.full_rung(members).outputs],
        )

    async def run(client: tritonaio.InferenceServerClient) -> None:
        if full_rung:
            await one_call(client)
            return
        if weights.get("two_tower", 0) <= 0:
            await asyncio.gather(*(catalog(client, role, popular) for role in rankers))
            return
        if not two_stage:
            await asyncio.gather(two_tower(client), *(catalog(client, role, popular) for role in rankers))
            return
        # Two stages, as the server's "full" plan: the two-tower's top items (then popular ones) are
        # the candidates SAE and RBM rank.
        generated = await two_tower(client)
        cands = np.concatenate([generated, popular[~np.isin(popular, generated)]])[: len(popular)]
        await asyncio.gather(*(catalog(client, role, cands) for role in rankers))

    return run


async def load(
    call: Callable[[int], Awaitable[Any]], n_requests: int, concurrency: int, duration: float
) -> dict[str, float]:
    """``concurrency`` workers calling in a loop for ``duration`` seconds; latency percentiles and rps."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call(i % n_requests)
            latencies.append((time.perf_counter() - started) * 1000)
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "rps": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
    }


@dataclass
class Stack:
    """One Triton and one server over a repository; ``label`` says how Triton batches (or, for
    ``fused``, that the server tries the full-rung model first)."""

    label: str
    triton: EmbeddedTriton
    target: str
    full_rung: bool = False


async def measure(
    stack: Stack,
    bundle: Bundle,
    rows: list[int],
    users: list[str],
    concurrencies: list[int],
    duration: float,
    settings: Settings,
) -> dict[str, Any]:
    runs, overhead, degraded, plans, batches = [], {}, {}, {}, {}
    requests = [
        direct_request(
            bundle, row, settings.default_variant, settings.candidates, settings.two_stage, full_rung=stack.full_rung
        )
        for row in rows
    ]
    # One shared channel per path, as the server itself shares one channel to Triton.
    triton = tritonaio.InferenceServerClient(stack.triton.grpc_url)
    sdk = AsyncRecommenderClient(stack.target, timeout=30)
    seen: list[tuple[bool, str]] = []  # (degraded, plan) of each server answer

    async def via_server(i: int) -> None:
        result = await sdk.recommend(users[i], k=10, budget_ms=5000)
        seen.append((result.degraded, result.plan))

    async def direct(i: int) -> None:
        await requests[i](triton)

    for concurrency in concurrencies:
        for path, call in (("direct", direct), ("server", via_server)):
            await load(call, len(rows), concurrency, min(duration, 2.0))  # warm-up at this concurrency
            seen.clear()
            before = scrape(stack.triton.metrics_url)
            stats = await load(call, len(rows), concurrency, duration)
            per_model = batching_between(before, scrape(stack.triton.metrics_url))
            runs.append(
                {
                    "concurrency": concurrency,
                    "path": path,
                    **stats,
                    "triton_avg_batch": {m: v["avg_batch"] for m, v in per_model.items()},
                    "triton": per_model,
                }
            )
            log.info(
                "%s concurrency=%d path=%s %s batches=%s",
                stack.label,
                concurrency,
                path,
                stats,
                runs[-1]["triton_avg_batch"],
            )
            if path == "server":
                degraded[str(concurrency)] = round(float(np.mean([d for d, _ in seen])), 4)
                plans[str(concurrency)] = dict(Counter(plan for _, plan in seen))
                batches[str(concurrency)] = runs[-1]["triton_avg_batch"]
        a, b = (_run(runs, concurrency, p) for p in ("direct", "server"))
        overhead[str(concurrency)] = round(b["p50_ms"] / a["p50_ms"], 3)
    await triton.close()
    await sdk.close()
    return {
        "runs": runs,
        "overhead_p50": overhead,
        "degraded_share": degraded,
        "plans": plans,
        "triton_avg_batch": batches,
    }


def _run(runs: list[dict[str, Any]], concurrency: int, path: str) -> dict[str, Any]:
    return next(r for r in runs if r["concurrency"] == concurrency and r["path"] == path)


async def compare(
    stacks: list[Stack],
    bundle: Bundle,
    rows: list[int],
    users: list[str],
    concurrencies: list[int],
    duration: float,
    settings: Settings,
) -> dict[str, Any]:
    """Each concurrency on every stack in turn (batched, then unbatched), so both see the same machine state."""
    parts: dict[str, list[dict[str, Any]]] = {s.label: [] for s in stacks}
    for concurrency in concurrencies:
        for stack in stacks:
            parts[stack.label].append(await measure(stack, bundle, rows, users, [concurrency], duration, settings))
    merged: dict[str, dict[str, Any]] = {
        label: {
            key: (
                {k: v for p in pieces for k, v in p[key].items()}
                if isinstance(pieces[0][key], dict)
                else [r for p in pieces for r in p[key]]
            )
            for key in pieces[0]
        }
        for label, pieces in parts.items()
    }
    report = merged[stacks[0].label]
    for stack in stacks[1:]:
        report[stack.label] = merged[stack.label]

    def ratio(other: dict[str, Any], key: str, c: int) -> float:
        return round(_run(report["runs"], c, "server")[key] / _run(other["runs"], c, "server")[key], 3)

    if "unbatched" in merged:
        report["server_rps_vs_unbatched"] = {str(c): ratio(merged["unbatched"], "rps", c) for c in concurrencies}
    if "fused" in merged:  # fused / per-model (this report's own runs)
        for key in ("rps", "p50_ms", "p99_ms"):
            report[f"server_{key.removesuffix('_ms')}_fused_vs_per_model"] = {
                str(c): round(1 / ratio(merged["fused"], key, c), 3) for c in concurrencies
            }
    report["bars"] = bars(report, concurrencies)
    return report


def bars(report: dict[str, Any], concurrencies: list[int]) -> dict[str, Any]:
    """The issue's bars, read off this run (present only where the run had that concurrency)."""
    out: dict[str, Any] = {}
    if 32 in concurrencies:
        batches = report["triton_avg_batch"]["32"]
        # The full-rung model's batch too, when the server called it (it runs SAE and RBM's work).
        for role in (
            "sae",
            "rbm",
            *([contract.FULL_RUNG] if any(m.startswith(contract.FULL_RUNG) for m in batches) else []),
        ):
            sizes = [v for m, v in batches.items() if m.startswith(f"{role}_")]
            out[f"{role}_avg_batch_c32"] = {
                "value": max(sizes, default=0.0),
                "bar": 4.0,
                "met": max(sizes, default=0.0) >= 4.0,
            }
        if "server_rps_vs_unbatched" in report:
            ratio = report["server_rps_vs_unbatched"]["32"]
            out["server_rps_vs_unbatched_c32"] = {"value": ratio, "bar": 1.5, "goal": 2.0, "met": ratio >= 1.5}
    if 8 in concurrencies:
        ratio = report["overhead_p50"]["8"]
        out["server_p50_vs_direct_c8"] = {"value": ratio, "bar": 1.3, "met": ratio <= 1.3}
    return out


async def served_quality(server_target: str, data: Path, split_name: str, limit: int) -> dict[str, Any]:
    """NDCG@10 of what the server answers, for held-out users sent with their training ratings inline."""
    from training.data import load_movielens
    from training.data.matrices import to_csr
    from training.data.splits import make_split
    from training.evaluation.ranking import ndcg10_of, ranking_task

    dataset = load_movielens(data)
    split = make_split(dataset, split_name)
    task = ranking_task(to_csr(split.train, dataset.n_users, dataset.n_items), split.test)
    users = task.users[:limit]
    task = type(task)(task.history, task.exclude, task.relevant, users)
    raw_items = dataset.item_ids.to_list()
    demographics = dataset.users
    lists = []
    async with AsyncRecommenderClient(server_target, timeout=30) as client:
        for user in users:
            row = task.history[user]
            extra: dict[str, Any] = {}
            if {"age", "gender", "occupation"} <= set(demographics.columns):
                person = demographics.iloc[user]
                extra = {
                    "age": int(person["age"]),
                    "gender": str(person["gender"]),
                    "occupation": str(person["occupation"]),
                }
            result = await client.recommend(
                k=10,
                ratings={raw_items[i]: float(r) for i, r in zip(row.indices, row.data, strict=True)},
                budget_ms=5000,
                **extra,
            )
            lists.append([dataset.item_ids.index_of(item.item_id) for item in result.items])
    return {"split": split_name, "users": len(users), "ndcg@10": round(ndcg10_of(np.asarray(lists), task), 4)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from training.train import default_data

    parser = argparse.ArgumentParser(prog="python -m loadtest.benches.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per (concurrency, path)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--users", type=int, default=200, help="distinct known users in the workload")
    parser.add_argument("--quality-users", type=int, default=1000, help="held-out users for served NDCG@10 (0: skip)")
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--split", default="u1")
    parser.add_argument(
        "--catalog",
        choices=CATALOGS,
        default="default",
        help="the configured bundle and repository, or a 60k-item synthetic one (built once)",
    )
    parser.add_argument("--no-unbatched", action="store_true", help="skip the comparison with batching off")
    parser.add_argument(
        "--queue-delay-us",
        type=int,
        default=None,
        help="override every model's max_queue_delay_microseconds (for tuning)",
    )
    parser.add_argument(
        "--compare-fused",
        action="store_true",
        help="the main server with per-model calls and a second trying the full-rung model first "
        "(fused_full_rung), on the same Triton",
    )
    parser.add_argument("--out", type=Path, default=REPORTS / "serving.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("triton").setLevel(logging.WARNING)
    settings = Settings()
    chosen = catalog(args.catalog, settings)
    if args.catalog != "default":
        # Quality is measured against MovieLens held-out users; a synthetic catalogue has none of them.
        args.quality_users = 0
    bundle = load_bundle(chosen.bundle)
    counts = np.diff(bundle.histories.indptr)
    rows = [int(r) for r in np.flatnonzero(counts >= settings.full_min_ratings)[: args.users]]
    index_to_user = {i: u for u, i in bundle.user_index.items()}
    users = [index_to_user[r] for r in rows]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as state, ExitStack() as running:
        repositories = {"batched": chosen.repository}
        if args.queue_delay_us is not None:
            repositories["batched"] = copy_with_batching(
                chosen.repository, Path(state) / "batched", args.queue_delay_us
            )
        if not args.no_unbatched:
            repositories["unbatched"] = copy_with_batching(chosen.repository, Path(state) / "unbatched", None)
        stacks = []
        # The servers try the full-rung model as the settings say, except the per-model one of a comparison.
        servers = [
            (label, repository, settings.fused_full_rung and not args.compare_fused)
            for label, repository in repositories.items()
        ]
        if args.compare_fused:  # a second server over the batched Triton, right after the first
            servers.insert(1, ("fused", repositories["batched"], True))
        tritons: dict[Path, EmbeddedTriton] = {}
        for label, repository, full_rung in servers:
            if repository not in tritons:
                tritons[repository] = running.enter_context(EmbeddedTriton(repository))
            triton = tritons[repository]
            (Path(state) / label).mkdir(exist_ok=True)
            # Only the variant the workload uses: every loaded model is a Python-backend process,
            # and loading the int8 ones too took minutes on a busy 2-core machine.
            process, target = start_server(
                triton.grpc_url,
                Path(state) / label,
                "--metrics-port",
                "null",
                "--bundle",
                str(chosen.bundle),
                "--max-concurrent-rpcs",
                "1024",
                # Every answer computed: cached answers would skip the models the
                # bench compares with direct calls.
                "--cache-ttl-s",
                "0",
                # The server loads its pinned versions with the config of its own
                # repository: without this, the unbatched Triton got batching back.
                "--model-repository",
                str(repository),
                "--variants",
                json.dumps([settings.default_variant]),
                "--fused-full-rung",
                json.dumps(full_rung),
                timeout=900,
            )
            running.callback(stop_server, process)
            stacks.append(Stack(label, triton, target, full_rung))
        report = asyncio.run(compare(stacks, bundle, rows, users, concurrencies, args.duration, settings))
        if args.quality_users:
            report["quality"] = asyncio.run(served_quality(stacks[0].target, args.data, args.split, args.quality_users))
        delays = {
            m: read_config(chosen.repository / m).dynamic_batching.max_queue_delay_microseconds
            for m in bundle.manifest.get("repository", {})
            if (chosen.repository / m).is_dir()
        }
    report["meta"] = {
        "dataset": bundle.manifest.get("dataset"),
        "catalog": args.catalog,
        "catalog_size": bundle.n_items,
        "bundle_version": bundle.version,
        "variant": settings.default_variant,
        "two_stage": settings.two_stage,
        "fused_full_rung": {s.label: s.full_rung for s in stacks},
        "duration_s": args.duration,
        "users": len(users),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "queue_delay_us": args.queue_delay_us if args.queue_delay_us is not None else delays,
        "request": "Recommend(user_id, k=10): the full rung",
        "models": sorted(m for m, w in bundle.fusion.weights.items() if w > 0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
