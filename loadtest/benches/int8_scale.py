"""Does int8 pay for the graphs whose weights grow with the catalogue? Size and latency at N items.

    python -m loadtest.benches.int8_scale --items 60000        (make bench-int8)

Builds the RBM scorer and the two-tower item scorer at N items with random weights (their cost
depends on the shapes, not the values), writes each in every variant, and times single-user
requests (batch 1) and a batch of 8 in-process on one thread, as the Triton stand-ins run them.
Writes ``reports/int8-scale.json``: per graph and variant the file size and p50 ms per batch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from export.formats import VARIANTS, runner, write
from export.graphs import CatalogScorer, ItemScorerGraph, _RBMScores
from server.paths import REPORTS
from training.data.dataset import IdMap, RatingScale
from training.models.rbm import RBM, RBMConfig, _make_net


def graphs(n_items: int, embedding_dim: int = 33) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    scale = RatingScale(1.0, 5.0, 1.0)
    net = _make_net(n_items, RBMConfig(), scale)
    with torch.no_grad():
        net.weight.normal_(0, 0.05)
    rbm = RBM(IdMap(np.arange(n_items)), scale, RBMConfig(), net)
    items = torch.randn(n_items, embedding_dim)
    # ItemScorerGraph reads only item_embeddings() from the trained model.
    two_tower = SimpleNamespace(item_embeddings=lambda: items)
    return {"rbm": CatalogScorer(_RBMScores(rbm), n_items).eval(), "two_tower_items": ItemScorerGraph(two_tower).eval()}  # type: ignore[arg-type]


def feeds(name: str, n_items: int, batch: int, history: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    rated = np.stack([rng.choice(n_items, history, replace=False) for _ in range(batch)]).astype(np.int64)
    if name == "rbm":
        return {
            "ITEM_IDX__0": rated,
            "RATING__1": rng.integers(1, 6, rated.shape).astype(np.float32),
            "EXCLUDE_IDX__2": np.full((batch, 1), -1, np.int64),
            "CANDIDATE_IDX__3": rng.integers(0, n_items, (batch, 200)).astype(np.int64),
        }
    return {"USER_EMBEDDING__0": rng.normal(size=(batch, 33)).astype(np.float32), "EXCLUDE_IDX__1": rated}


def p50_ms(run: Any, inputs: dict[str, np.ndarray], repeats: int) -> float:
    run(inputs)  # first-call costs out of the timing
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(inputs)
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(times)), 3)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.benches.int8_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=60000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--variants", default="torchscript_fp32,torchscript_int8,onnx_fp32,onnx_int8")
    parser.add_argument("--out", type=Path, default=REPORTS / "int8-scale.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, graph in graphs(args.items).items():
            for variant in (VARIANTS[v] for v in args.variants.split(",")):
                path = write(graph, variant, Path(scratch) / name / variant.name / variant.filename)
                run = runner(variant, path)
                rows.append(
                    {
                        "graph": name,
                        "variant": variant.name,
                        "bytes": path.stat().st_size,
                        **{f"p50_ms_batch{b}": p50_ms(run, feeds(name, args.items, b), args.repeats) for b in (1, 8)},
                    }
                )
                print(json.dumps(rows[-1]))
    report = {"items": args.items, "rows": rows, "threads": 1}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
