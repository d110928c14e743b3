"""Serving benchmark: the same workload sent (a) to the Triton models directly and (b) through our server.

    python -m server.bench [--duration 10] [--concurrency 1,8,32] [--users 200]   (make bench-serving)

One embedded Triton serves both paths; our server runs as its own process (as deployed), so the
load generator does not share its interpreter. A request is one known user's top-10 from the
full ensemble. (a) makes the calls the server's two-stage plan makes for it -- the two-tower
user tower then item scorer, then SAE and RBM concurrently with the user's ratings and the
two-tower's top items as candidates -- with tritonclient's asyncio client; (b) calls
``Recommend`` through the SDK, which adds the profile lookup, planning, fusion, filters and
the gRPC hop. Both paths run one after the other at each concurrency, in one run, so the ratio
(b)/(a) is read off the same machine state; ``plans`` says which plans the server chose.

Writes ``reports/serving.json``: ``{"runs": [{"concurrency", "path", "p50_ms", "p99_ms", "rps"}],
"overhead_p50": {concurrency: ratio}}`` plus ``quality`` (NDCG@10 of the served ensemble on the
held-out split, through the server with inline ratings) and ``meta``.
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
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tritonaio
from tritonclient.grpc import InferInput

from clients.aio import AsyncRecommenderClient
from export.triton import EmbeddedTriton
from server.bundle import Bundle, load_bundle
from server.process import start_server, stop_server
from server.settings import ROOT, Settings

log = logging.getLogger("server.bench")


def _tensor(name: str, array: np.ndarray) -> InferInput:
    tensor = InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def direct_request(bundle: Bundle, row: int, variant: str, candidates: int, two_stage: bool
                   ) -> Callable[[tritonaio.InferenceServerClient], Awaitable[None]]:
    """The Triton calls the server makes for this user's full-ensemble Recommend (models with a fusion weight)."""
    history = bundle.histories[row]
    items = history.indices.astype(np.int64)[None]
    ratings = history.data.astype(np.float32)[None]
    eligible = np.ones(bundle.n_items, dtype=bool)
    eligible[history.indices] = False
    popular = np.flatnonzero(eligible)[np.argsort(-bundle.popularity[eligible], kind="stable")][:candidates]
    none = np.full((1, 1), -1, dtype=np.int64)
    codes = (bundle.demographics[row] if bundle.demographics is not None else np.zeros(3)).astype(np.int64)[None]

    async def catalog(client: tritonaio.InferenceServerClient, role: str, cands: np.ndarray) -> None:
        await client.infer(f"{role}_{variant}", [_tensor("ITEM_IDX__0", items), _tensor("RATING__1", ratings),
                                                 _tensor("EXCLUDE_IDX__2", none),
                                                 _tensor("CANDIDATE_IDX__3", cands[None])])

    async def two_tower(client: tritonaio.InferenceServerClient) -> np.ndarray:
        user = await client.infer(f"two_tower_user_{variant}", [_tensor("ITEM_IDX__0", items),
                                                                _tensor("RATING__1", ratings),
                                                                _tensor("DEMOGRAPHICS__2", codes)])
        embedding = user.as_numpy("USER_EMBEDDING__0").astype(np.float32)
        top = await client.infer(f"two_tower_items_{variant}", [_tensor("USER_EMBEDDING__0", embedding),
                                                                _tensor("EXCLUDE_IDX__1", items)])
        return top.as_numpy("TOP_IDX__0")[0]

    # The models the server's full rung calls: those the bundle's fusion gives a weight.
    weights = bundle.fusion.weights
    rankers = [role for role in ("sae", "rbm") if weights.get(role, 0) > 0]

    async def run(client: tritonaio.InferenceServerClient) -> None:
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


async def load(call: Callable[[int], Awaitable[Any]], n_requests: int, concurrency: int, duration: float
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
    return {"p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3),
            "rps": round(len(latencies) / elapsed, 1), "requests": len(latencies)}


async def compare(bundle: Bundle, triton_url: str, server_target: str, rows: list[int], users: list[str],
                  concurrencies: list[int], duration: float, settings: Settings) -> dict[str, Any]:
    runs, overhead, degraded, plans = [], {}, {}, {}
    requests = [direct_request(bundle, row, settings.default_variant, settings.candidates, settings.two_stage)
                for row in rows]
    # One shared channel per path, as the server itself shares one channel to Triton.
    triton = tritonaio.InferenceServerClient(triton_url)
    sdk = AsyncRecommenderClient(server_target, timeout=30)
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
            stats = await load(call, len(rows), concurrency, duration)
            runs.append({"concurrency": concurrency, "path": path, **stats})
            log.info("concurrency=%d path=%s %s", concurrency, path, stats)
            if path == "server":
                degraded[str(concurrency)] = round(float(np.mean([d for d, _ in seen])), 4)
                plans[str(concurrency)] = dict(Counter(plan for _, plan in seen))
        a, b = (next(r for r in runs if r["concurrency"] == concurrency and r["path"] == p)
                for p in ("direct", "server"))
        overhead[str(concurrency)] = round(b["p50_ms"] / a["p50_ms"], 3)
    await triton.close()
    await sdk.close()
    return {"runs": runs, "overhead_p50": overhead, "degraded_share": degraded, "plans": plans}


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
                extra = {"age": int(person["age"]), "gender": str(person["gender"]),
                         "occupation": str(person["occupation"])}
            result = await client.recommend(k=10, ratings={raw_items[i]: float(r) for i, r in
                                                           zip(row.indices, row.data, strict=True)},
                                            budget_ms=5000, **extra)
            lists.append([dataset.item_ids.index_of(item.item_id) for item in result.items])
    return {"split": split_name, "users": len(users), "ndcg@10": round(ndcg10_of(np.asarray(lists), task), 4)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from training.train import default_data

    parser = argparse.ArgumentParser(prog="python -m server.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per (concurrency, path)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--users", type=int, default=200, help="distinct known users in the workload")
    parser.add_argument("--quality-users", type=int, default=1000, help="held-out users for served NDCG@10 (0: skip)")
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--split", default="u1")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "serving.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("triton").setLevel(logging.WARNING)
    settings = Settings()
    bundle = load_bundle(settings.bundle)
    counts = np.diff(bundle.histories.indptr)
    rows = [int(r) for r in np.flatnonzero(counts >= settings.full_min_ratings)[: args.users]]
    index_to_user = {i: u for u, i in bundle.user_index.items()}
    users = [index_to_user[r] for r in rows]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as state, EmbeddedTriton(settings.model_repository) as triton:
        process, target = start_server(triton.grpc_url, Path(state), "--metrics-port", "null",
                                       "--bundle", str(settings.bundle), "--max-concurrent-rpcs", "1024")
        try:
            report = asyncio.run(compare(bundle, triton.grpc_url, target, rows, users, concurrencies, args.duration,
                                         settings))
            if args.quality_users:
                report["quality"] = asyncio.run(served_quality(target, args.data, args.split, args.quality_users))
        finally:
            stop_server(process)
    report["meta"] = {"dataset": bundle.manifest.get("dataset"), "catalog_size": bundle.n_items,
                      "bundle_version": bundle.version, "variant": settings.default_variant,
                      "two_stage": settings.two_stage,
                      "duration_s": args.duration, "users": len(users), "cpus": os.cpu_count(),
                      "request": "Recommend(user_id, k=10): the full rung",
                      "models": sorted(m for m, w in bundle.fusion.weights.items() if w > 0)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
