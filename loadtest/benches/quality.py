"""Quality benchmark: train every model and the ensemble on ml-100k u1, evaluate on u1.test.

    python -m loadtest.benches.quality [--data DIR] [--out reports/quality.json]

Prints one table and writes ``reports/quality.json``:
``{"dataset", "split", "models": {name: {rmse, mae, precision@10, recall@10, ndcg@10,
hit_rate@10, map@10, coverage@10, train_seconds}}, "details": {name: every metric}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from server.paths import REPORTS
from training.data import load_movielens
from training.data.splits import make_split
from training.evaluation.report import evaluate_models
from training.pipeline import LEARNED, full_history, prepare, train_models
from training.train import default_data

COLUMNS = (
    "rmse",
    "mae",
    "precision@10",
    "recall@10",
    "ndcg@10",
    "hit_rate@10",
    "map@10",
    "coverage@10",
    "train_seconds",
)
ORDER = ("popularity", *LEARNED, "ensemble")


def table(rows: dict[str, dict[str, Any]]) -> str:
    header = f"{'model':<11}" + "".join(f"{c:>14}" for c in COLUMNS)
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        cells = "".join(f"{'-':>14}" if row[c] is None else f"{row[c]:>14.4f}" for c in COLUMNS)
        lines.append(f"{name:<11}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--split", default="u1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPORTS / "quality.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.perf_counter()
    dataset = load_movielens(args.data or default_data())
    split = make_split(dataset, args.split, args.seed)
    trained = train_models(prepare(dataset, split, seed=args.seed), list(LEARNED), seed=args.seed, progress=False)
    assert trained.ensemble is not None, "train_models fits the ensemble unless told not to"
    models = {**trained.models, "ensemble": trained.ensemble}
    details = evaluate_models(models, dataset, full_history(dataset, split.train), split.test)
    rows = {
        name: {**{c: details[name].get(c) for c in COLUMNS[:-1]}, "train_seconds": trained.train_seconds[name]}
        for name in ORDER
    }
    report = {
        "dataset": dataset.name,
        "split": split.name,
        "models": rows,
        "details": details,
        "validation": trained.validation,
        "fusion": trained.ensemble.config_dict(),
        "ease_l2": trained.models["ease"].config.l2,  # chosen on the validation slice
        "gates": {n: g.to_dict() for n, g in trained.gates.items()},
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(table(rows))
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
