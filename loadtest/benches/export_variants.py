"""Export benchmark: every model variant served by the embedded Triton, measured side by side.

    python -m loadtest.benches.export_variants [--alias champion] [--requests 300] [--concurrency 8]

For each variant: file size; latency p50/p99 of single-user requests sent one at a time; requests
per second with ``--concurrency`` clients in parallel; NDCG@10 of the variant on held-out users
and its difference to the PyTorch model; the parity error. Writes ``reports/export.json`` as a
list of rows ``{model, variant, format, bytes, p50_ms, p99_ms, rps, ndcg@10, ndcg@10_delta,
parity_max_abs_err}`` (plus ``concurrency``). Our own tritonclient loop: perf_analyzer is not
available here.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from recsys import contract

from export.graphs import DEFAULT_TOP_N, graphs_for, signature
from export.parity import graph_feeds
from export.pipeline import export_models, parity_users
from export.registry import ExportError, load_champions
from server.paths import REPORTS
from server.triton import EmbeddedTriton
from training.data import load_movielens
from training.data.splits import make_split
from training.train import DEFAULT_STATE


def _inputs(feeds: dict[str, np.ndarray], graph: Any, row: int) -> list[grpcclient.InferInput]:
    inputs = []
    for (name, dtype, _), tensor in zip(signature(graph)[0], feeds.values(), strict=True):
        one = np.ascontiguousarray(tensor[row : row + 1])
        infer_input = grpcclient.InferInput(name, list(one.shape), dtype)
        infer_input.set_data_from_numpy(one)
        inputs.append(infer_input)
    return inputs


def measure(url: str, model: str, requests: list[list[grpcclient.InferInput]], concurrency: int) -> dict[str, float]:
    """Sequential latency percentiles, then throughput with ``concurrency`` clients (one channel each)."""
    client = grpcclient.InferenceServerClient(url)
    for inputs in requests[:10]:  # warm-up
        client.infer(model, inputs)
    latencies = []
    for inputs in requests:
        started = time.perf_counter()
        client.infer(model, inputs)
        latencies.append((time.perf_counter() - started) * 1000)
    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]

    def worker(k: int) -> None:
        for inputs in requests[k::concurrency]:
            clients[k].infer(model, inputs)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    elapsed = time.perf_counter() - started
    for c in [client, *clients]:
        c.close()
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "rps": len(requests) / elapsed,
        "concurrency": concurrency,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--out", type=Path, default=REPORTS / "export.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from training import tracking

    tracking.configure(args.state_dir)
    try:
        models, tags, _ = load_champions(args.alias)
    except ExportError as err:
        raise SystemExit(str(err)) from None
    dataset = load_movielens(tags["data"])
    split = make_split(dataset, tags["split"], int(tags["validation_seed"]))
    task = parity_users(dataset, split.train, split.test, args.requests)
    histories, users = task.history[task.users], task.users
    graphs = {g: graph for n in contract.MODELS if n in models for g, graph in graphs_for(n, models[n]).items()}
    codes = models["two_tower"].user_codes
    feeds = {g: graph_feeds(graphs, g, histories, users, codes) for g in graphs}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_models(models, dataset, split.train, split.test, Path(tmp), top_n=DEFAULT_TOP_N)
        with EmbeddedTriton(Path(tmp), startup_timeout=120) as triton:
            for row in exported:
                name, graph = row["repository_model"], graphs[row["model"]]
                triton.load(name)
                requests = [_inputs(feeds[row["model"]], graph, i) for i in range(len(users))]
                timing = measure(triton.grpc_url, name, requests, args.concurrency)
                triton.unload(name)  # one model resident at a time: no neighbour steals the 2 cores
                rows.append(
                    {k: row[k] for k in ("model", "variant", "format", "bytes")}
                    | timing
                    | {k: row[k] for k in ("ndcg@10", "ndcg@10_delta", "parity_max_abs_err")}
                )
                logging.getLogger(__name__).info("bench %s", rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(
        f"{'model':<16}{'variant':<18}{'KiB':>8}{'p50 ms':>9}{'p99 ms':>9}{'rps':>8}{'NDCG@10':>9}{'delta':>9}"
        f"{'err':>10}"
    )
    for r in rows:
        print(
            f"{r['model']:<16}{r['variant']:<18}{r['bytes'] / 1024:>8.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['rps']:>8.0f}{r['ndcg@10']:>9.4f}{r['ndcg@10_delta']:>+9.4f}{r['parity_max_abs_err']:>10.2g}"
        )
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
