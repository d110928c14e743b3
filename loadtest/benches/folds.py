"""Quality across folds and data sets, with EASE computed on each fold as the reference row.

    python -m loadtest.benches.folds                           # ml-100k u1..u5 -> reports/quality-folds.json
    python -m loadtest.benches.folds --data DIR                # any MovieLens folder (CSV family too)
    python -m loadtest.benches.folds --synthetic-items 10000   # a generated 10k-item catalogue

Every fold trains with the defaults (which were chosen on u1's validation slice only), so the
other folds and data sets are held-back checks. ml-100k uses its official folds; any other
folder gets ``--folds`` per-user 20% holdouts with seeds 0, 1, ... Reports the test metrics per
fold, mean ± sd per model, the baseline-gate decisions, and whether the issue's bars hold.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from server.paths import REPORTS
from training.data import load_movielens
from training.data.dataset import MovieLens
from training.data.splits import Split, make_split
from training.data.synthetic import SyntheticSpec, write
from training.evaluation.report import evaluate_models
from training.models import ease
from training.models.base import TrainingData
from training.pipeline import LEARNED, MISSION, TrainedModels, full_history, gate_and_fuse, prepare, train_models
from training.train import default_data

METRICS = ("ndcg@10", "recall@10", "precision@10", "rmse")
# "ease_member" is the pipeline's EASE (λ chosen on validation, a fusion member); "ease" the fixed-λ
# reference row, computed by the bench as before so the row stays comparable across reports.
MEMBER = "ease_member"
ORDER = ("popularity", *MISSION, MEMBER, "ensemble", "ease")
SINGLES = (*MISSION, MEMBER)
T = TypeVar("T")


def split_names(dataset: MovieLens, folds: int) -> list[str]:
    if dataset.name == "ml-100k" and dataset.source is not None and (dataset.source / "u1.base").is_file():
        return [f"u{k}" for k in range(1, min(folds, 5) + 1)]
    return [f"holdout-0.2-seed{k}" for k in range(folds)]


# Trained in a task of their own each, longest first, so --jobs N keeps N cores busy to the end
# (three folds on two cores by whole folds left one core idle for a third of the run). Every model
# seeds itself, so a model trains the same in a task of its own as in one train_models call.
# The mission models are in that order (SAE, RBM, two-tower: ~4 min, ~2 min, ~10 s a fold at 10k items).
PARTS = MISSION


def fold_data(dataset: MovieLens, split_name: str, seed: int) -> tuple[Split, TrainingData]:
    split = make_split(dataset, split_name, seed)
    return split, prepare(dataset, split, seed=seed)


def train_part(dataset: MovieLens, split_name: str, seed: int, name: str) -> TrainedModels:
    """One learned model of one fold (with popularity, which every train_models call trains)."""
    _, data = fold_data(dataset, split_name, seed)
    return train_models(data, [name], seed=seed, progress=False, ensemble=False)


def run_fold(
    dataset: MovieLens, split_name: str, seed: int, ease_l2: float, parts: list[TrainedModels] | None = None
) -> dict[str, Any]:
    """The fold's row: EASE (member and reference), the gates and fusion over ``parts`` (the
    mission models, trained here when not given), and every model evaluated on the test part."""
    split, data = fold_data(dataset, split_name, seed)
    if parts is None:
        parts = [train_part(dataset, split_name, seed, name) for name in PARTS]
    trained = train_models(data, ["ease"], seed=seed, progress=False, ensemble=False)
    for part in parts:
        for name in set(part.models) - {"popularity"}:
            trained.models[name], trained.histories[name] = part.models[name], part.histories[name]
            trained.train_seconds[name], trained.validation[name] = part.train_seconds[name], part.validation[name]
    # In train_models' order, so the report lists them as a single call would.
    trained.models, trained.train_seconds = _in_order(trained.models), _in_order(trained.train_seconds)
    trained.validation, trained.histories = _in_order(trained.validation), _in_order(trained.histories)
    gate_and_fuse(trained)
    started = time.perf_counter()
    # EASE learns from the same ratings as the learned models (train minus the validation slice) and,
    # like them, scores from the full train history; it is the fixed-λ reference row, apart from the
    # pipeline's EASE member (its λ chosen on validation).
    reference = ease.train(data, ease.EASEConfig(ease_l2))
    assert trained.ensemble is not None, "gate_and_fuse fits the ensemble unless told not to"
    seconds = {**_renamed(trained.train_seconds), "ease": time.perf_counter() - started}
    models = {**_renamed(trained.models), "ensemble": trained.ensemble, "ease": reference}
    details = evaluate_models(models, dataset, full_history(dataset, split.train), split.test)
    rows = {n: {m: details[n].get(m) for m in METRICS} for n in ORDER}
    for name in ORDER:
        rows[name]["train_seconds"] = seconds[name]
    return {
        "models": rows,
        "gates": _renamed({n: g.to_dict() for n, g in trained.gates.items()}),
        "validation": _renamed(trained.validation),
        "fusion": trained.ensemble.config_dict(),
        "ease_member_l2": trained.models["ease"].config.l2,
    }


def _in_order(per_model: dict[str, T]) -> dict[str, T]:
    return {n: per_model[n] for n in ("popularity", *LEARNED) if n in per_model}


def _renamed(per_model: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's "ease" under the member's row name (the "ease" row is the reference)."""
    return {(MEMBER if n == "ease" else n): v for n, v in per_model.items()}


def summarise(per_fold: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in ORDER:
        out[name] = {}
        for metric in (*METRICS, "train_seconds"):
            values = [f["models"][name][metric] for f in per_fold.values() if f["models"][name][metric] is not None]
            if values:
                out[name][metric] = {
                    "mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                }
    return out


def bars(per_fold: dict[str, dict[str, Any]], summary: dict[str, Any]) -> dict[str, bool]:
    folds = [f["models"] for f in per_fold.values()]
    out = {
        f"{n}_beats_popularity_every_fold": all(f[n]["ndcg@10"] > f["popularity"]["ndcg@10"] for f in folds)
        for n in MISSION
    }
    out["ensemble_at_least_best_single_every_fold"] = all(
        f["ensemble"]["ndcg@10"] >= max(f[n]["ndcg@10"] for n in SINGLES) for f in folds
    )
    out["ensemble_at_least_ease_mean"] = summary["ensemble"]["ndcg@10"]["mean"] >= summary["ease"]["ndcg@10"]["mean"]
    return out


def table(summary: dict[str, Any]) -> str:
    lines = [f"{'model':<11}" + "".join(f"{m:>22}" for m in METRICS)]
    for name, row in summary.items():
        cells = "".join(f"{row[m]['mean']:>14.4f} ± {row[m]['sd']:.4f}" if m in row else f"{'-':>22}" for m in METRICS)
        lines.append(f"{name:<11}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="MovieLens folder (default: ml-100k)")
    parser.add_argument("--synthetic-items", type=int, default=None, help="generate a catalogue this large instead")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--ease-l2", type=float, default=250.0, help="EASE's λ (the issue's reference used 250)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at once (one thread each)")
    parser.add_argument("--out", type=Path, default=REPORTS / "quality-folds.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic_items:
            # Shaped like ml-latest-small (610 users, ~100k half-star ratings), with 10k items by default.
            spec = SyntheticSpec(users=610, items=args.synthetic_items, mean_ratings=160, seed=1, format="csv")
            dataset = load_movielens(write(Path(tmp) / f"synthetic-{args.synthetic_items}", spec))
        else:
            dataset = load_movielens(args.data or default_data())
        splits = split_names(dataset, args.folds)
        per_fold: dict[str, dict[str, Any]] = {}
        # --jobs N runs N tasks at once, one BLAS thread each (the models are small, so N
        # single-threaded processes use N cores better than one process with N threads): first
        # each fold's mission models (PARTS, longest first), then per fold EASE, fusion and test.
        with ProcessPoolExecutor(max_workers=args.jobs, initializer=_one_thread) as pool:
            parts: dict[str, list[TrainedModels]] = {name: [] for name in splits}
            pending: dict[Future[Any], tuple[str, str]] = {
                pool.submit(train_part, dataset, split, args.seed, model): (split, model)
                for model in PARTS
                for split in splits
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    split, model = pending.pop(future)
                    if model != "fold":
                        parts[split].append(future.result())
                        if len(parts[split]) == len(PARTS):
                            fold = pool.submit(run_fold, dataset, split, args.seed, args.ease_l2, parts.pop(split))
                            pending[fold] = (split, "fold")
                        continue
                    per_fold[split] = future.result()
                    logging.getLogger(__name__).info(
                        "fold %s: %s", split, {n: round(r["ndcg@10"], 4) for n, r in per_fold[split]["models"].items()}
                    )
                    # After every fold, so a slow run leaves what it has.
                    report = write_report(args, dataset, splits, dict(sorted(per_fold.items())), started)
    return report


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def write_report(
    args: argparse.Namespace, dataset: MovieLens, splits: list[str], per_fold: dict[str, Any], started: float
) -> dict[str, Any]:
    """Write the report of the folds done so far (``complete`` says whether all are)."""
    summary = summarise(per_fold)
    report = {
        "dataset": dataset.name,
        "items": dataset.n_items,
        "users": dataset.n_users,
        "ratings": len(dataset.ratings),
        "splits": splits,
        "complete": len(per_fold) == len(splits),
        "summary": summary,
        "bars": bars(per_fold, summary),
        "folds": per_fold,
        "ease_l2": args.ease_l2,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(table(summary))
    print(json.dumps(report["bars"], indent=1))
    print(f"wrote {args.out} ({report['seconds']:.0f} s, {len(per_fold)} of {len(splits)} folds)")
    return report


if __name__ == "__main__":
    main()
