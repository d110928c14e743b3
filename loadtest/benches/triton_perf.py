"""Model-level throughput and latency through the embedded Triton, batching on and off.

    python -m loadtest.benches.triton_perf [--concurrency 1,8,32] [--duration 5] [--variant torchscript_fp32]
                                                                         (make bench-triton)

``perf_analyzer`` would be the tool for this, but the ``perf-analyzer`` package on the index is
a placeholder (its module prints "hello"; no binary), and the nvidia-pytriton wheel ships none.
This does what ``perf_analyzer --concurrency-range`` does, with tritonclient's asyncio gRPC
client: ``concurrency`` workers send one model the same realistic single-user request in a
closed loop, for each model of the bundle, each concurrency, with Triton's dynamic batching on
(the repository as exported) and off (a copy without the dynamic batcher). Triton's own
counters give the average batch and queue/compute time per request.

Writes ``reports/triton-perf.json``: ``{"runs": [{model, batching, concurrency, rps, p50_ms,
p99_ms, avg_batch, queue_ms, compute_ms}], "meta"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tritonaio
from recsys import contract

from export.repository import copy_with_batching, read_config
from loadtest.benches.catalogs import CATALOGS, catalog
from loadtest.benches.serving import _tensor, load
from server.bundle import Bundle, load_bundle
from server.paths import REPORTS
from server.settings import Settings
from server.triton import EmbeddedTriton
from server.triton_metrics import batching_between, scrape

log = logging.getLogger("loadtest.benches.triton_perf")
ROLES = tuple(contract.ROLES)


def request_for(role: str, bundle: Bundle, dims: dict[str, list[int]], candidates: int = 200) -> dict[str, np.ndarray]:
    """One known user's request to a model of ``role``, as the server builds it (a median-length history)."""
    counts = np.diff(bundle.histories.indptr)
    row = int(np.argsort(counts)[len(counts) // 2])
    history = bundle.histories[row]
    items, ratings = history.indices.astype(np.int64)[None], history.data.astype(np.float32)[None]
    none = np.full((1, 1), -1, dtype=np.int64)
    codes = (bundle.demographics[row] if bundle.demographics is not None else np.zeros(3)).astype(np.int64)[None]
    popular = bundle.popularity_order[:candidates].astype(np.int64)[None]
    by_name = {"ITEM_IDX__0": items, "RATING__1": ratings, "DEMOGRAPHICS__2": codes, "CANDIDATE_IDX__3": popular}
    if role in contract.CATALOG_SCORERS:
        by_name["EXCLUDE_IDX__2"] = none
    elif role in (contract.GENERATOR, contract.FULL_RUNG):
        by_name["EXCLUDE_IDX__3"] = none
        by_name["CANDIDATE_IDX__4"] = popular  # the full rung's local candidates
    elif role == "two_tower_items":
        dim = dims["USER_EMBEDDING__0"][0]
        by_name = {
            "USER_EMBEDDING__0": np.random.default_rng(0).normal(size=(1, dim)).astype(np.float32),
            "EXCLUDE_IDX__1": items,
        }
    return {name: by_name[name] for name in dims}


async def measure(
    triton: EmbeddedTriton, model: str, request: dict[str, np.ndarray], concurrency: int, duration: float
) -> dict[str, Any]:
    async with tritonaio.InferenceServerClient(triton.grpc_url) as client:

        async def call(_: int) -> None:
            await client.infer(model, [_tensor(n, a) for n, a in request.items()])

        await load(call, 1, concurrency, min(duration, 1.0))  # warm-up
        before = scrape(triton.metrics_url)
        stats = await load(call, 1, concurrency, duration)
        counters = batching_between(before, scrape(triton.metrics_url)).get(model, {})
    return {**stats, **{k: counters.get(k) for k in ("avg_batch", "queue_ms", "compute_ms")}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.benches.triton_perf", description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per (model, batching, concurrency)")
    parser.add_argument("--variant", default=Settings().default_variant)
    parser.add_argument("--catalog", choices=CATALOGS, default="default")
    parser.add_argument("--out", type=Path, default=REPORTS / "triton-perf.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("triton").setLevel(logging.WARNING)
    chosen = catalog(args.catalog, Settings())
    bundle = load_bundle(chosen.bundle)
    models = [f"{r}_{args.variant}" for r in ROLES if f"{r}_{args.variant}" in bundle.manifest.get("repository", {})]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        repositories = {
            "on": chosen.repository,
            "off": copy_with_batching(chosen.repository, Path(scratch) / "off", None),
        }
        for batching, repository in repositories.items():
            with EmbeddedTriton(repository, models=tuple(models)) as triton:
                for model in models:
                    config = read_config(repository / model)
                    request = request_for(
                        model.removesuffix(f"_{args.variant}"), bundle, {i.name: list(i.dims) for i in config.input}
                    )
                    for concurrency in concurrencies:
                        result = asyncio.run(measure(triton, model, request, concurrency, args.duration))
                        runs.append({"model": model, "batching": batching, "concurrency": concurrency, **result})
                        log.info("%s", runs[-1])
    report = {
        "runs": runs,
        "meta": {
            "catalog_size": bundle.n_items,
            "variant": args.variant,
            "duration_s": args.duration,
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "catalog": args.catalog,
            "queue_delay_us": {
                m: read_config(chosen.repository / m).dynamic_batching.max_queue_delay_microseconds for m in models
            },
            "tool": "tritonclient asyncio closed loop (no perf_analyzer binary here)",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
