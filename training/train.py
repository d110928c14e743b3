"""Train the recommenders, fit the ensemble, and track everything in MLflow.

    python -m training.train                                   # ml-100k, split u1, all models
    python -m training.train --data DIR --models sae,two_tower --set sae.hidden=[300]
    python -m training.train --tune --budget-minutes 20        # search settings on validation first

Defaults: the data set in ``$RECSYS_DATA`` or ``../shared/data/movielens/ml-100k``; split ``u1``
for ml-100k and a 20% per-user holdout otherwise; MLflow at ``$MLFLOW_TRACKING_URI`` or a
SQLite store under ``var/``.

Every model is gated against popularity on validation NDCG@10 (``--gate-margin`` or
``$RECSYS_GATE_MARGIN``): one that fails is registered but not promoted, and left out of the
fusion. ``--tune`` searches each model's settings on the same validation slice (never the test
part) before the final training; see ``training.tuning``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.paths import DEFAULT_DATA, STATE
from training.cli_exit import exit_user_error
from training.data import DataError, load_movielens
from training.data.acquire import resolve_data
from training.data.readers import FORMATS
from training.data.splits import make_split
from training.models.base import TrainingData
from training.pipeline import LEARNED, MODELS, prepare, train_models
from training.runtime import pick_device

if TYPE_CHECKING:
    from training.tuning import TuningResult

DEFAULT_STATE = STATE


def default_data() -> Path:
    return Path(os.environ.get("RECSYS_DATA", DEFAULT_DATA))


def parse_overrides(settings: list[str]) -> dict[str, dict[str, Any]]:
    """``model.key=value`` pairs; values are JSON where they parse, else strings."""
    out: dict[str, dict[str, Any]] = {}
    for setting in settings:
        key, sep, raw = setting.partition("=")
        model, dot, field = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set {setting!r}: use MODEL.KEY=VALUE, e.g. sae.hidden=[300]")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(model, {})[field] = value
    return out


def parse_models(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help='MovieLens folder, or "synthetic" for a generated catalogue (no download); '
        "a missing default ml-100k is fetched from GroupLens and checked",
    )
    parser.add_argument("--format", choices=FORMATS, default=None, help="override format detection")
    parser.add_argument("--split", default=None, help="u1..u5/ua/ub, holdout[:0.2] or temporal[:1]")
    parser.add_argument("--models", default=",".join(LEARNED), help="comma-separated; popularity always trains")
    parser.add_argument(
        "--set", action="append", default=[], metavar="MODEL.KEY=VALUE", help="override a model setting (repeatable)"
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="cap epochs for every model")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument(
        "--fusion-steps",
        type=int,
        default=10,
        help="ensemble weight grid resolution (fewer: faster on large catalogues)",
    )
    parser.add_argument(
        "--gate-margin",
        type=float,
        default=None,
        help="relative margin over popularity's validation NDCG@10 a model must beat "
        "(default $RECSYS_GATE_MARGIN or 0.05)",
    )
    parser.add_argument("--tune", action="store_true", help="search settings on the validation slice first")
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="--tune time budget, all models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="checkpoints and local MLflow")
    parser.add_argument(
        "--feedback",
        default=None,
        metavar="STORE_URL",
        help="merge the feedback stored there into --data first (training.data.feedback)",
    )
    parser.add_argument("--no-track", action="store_true", help="skip MLflow logging and registration")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def configure_tracking(state_dir: Path) -> str:
    from training import tracking  # MLflow is slow to import; only when tracking

    return tracking.configure(state_dir)


def run_tuning(
    data: TrainingData,
    names: list[str],
    overrides: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    params: dict[str, Any],
    *,
    track: bool,
) -> TuningResult:
    """The validation-only search, each trial logged to MLflow when tracking."""
    from training.tuning import tune

    def search(on_trial: Any = None) -> TuningResult:
        return tune(
            data,
            names,
            args.budget_minutes,
            seed=args.seed,
            device=str(pick_device(args.device)),
            max_epochs=args.max_epochs,
            fixed=overrides,
            on_trial=on_trial,
        )

    if not track:
        return search()
    import mlflow

    from training import tracking

    with tracking.tuning_run({**params, "budget_minutes": args.budget_minutes}) as on_trial:
        tuned = search(on_trial)
        mlflow.log_dict(
            {"settings": tuned.settings, "validation_ndcg@10": tuned.best, "trials": tuned.trials},
            "tuned_settings.json",
        )
    return tuned


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    lineage: dict[str, Any] = {}
    try:
        # Recorded with the models; export reads it back. "synthetic" or a missing default folder
        # are resolved (generated, or fetched and checked) by training.data.acquire.
        data_dir = resolve_data(args.data or default_data(), DEFAULT_DATA, args.state_dir).resolve()
        if args.feedback:  # train on base + feedback: a merged folder whose fingerprint names the events it holds
            from training.data.feedback import merge_feedback

            merged = merge_feedback(data_dir, args.feedback, args.state_dir / "feedback_data")
            data_dir, lineage = merged.folder.resolve(), merged.params()
        dataset = load_movielens(data_dir, args.format)
        split = make_split(dataset, args.split or ("u1" if dataset.name == "ml-100k" else "holdout"), args.seed)
    except DataError as err:
        exit_user_error("training", err)
    device = pick_device(args.device)
    logging.getLogger(__name__).info("training data=%s split=%s device=%s", data_dir, split.name, device)
    data = prepare(dataset, split, args.val_fraction, args.seed)
    names, overrides = parse_models(args.models), parse_overrides(args.set)
    params = {
        "data": str(data_dir),
        "dataset": dataset.name,
        "split": split.name,
        "seed": args.seed,
        "validation_seed": args.seed,
        "val_fraction": args.val_fraction,
        "device": str(device),
        "data_fingerprint": dataset.fingerprint(),
        "users": dataset.n_users,
        "items": dataset.n_items,
        "ratings": len(dataset.ratings),
        **lineage,
    }
    tracking_uri = None if args.no_track else configure_tracking(args.state_dir)
    artifacts: dict[str, Any] = {}
    if args.tune:
        tuned = run_tuning(data, names, overrides, args, params, track=tracking_uri is not None)
        # Explicit --set values win over what the search chose.
        overrides = {n: {**tuned.settings.get(n, {}), **overrides.get(n, {})} for n in {*tuned.settings, *overrides}}
        artifacts["tuned_settings.json"] = {
            "settings": tuned.settings,
            "validation_ndcg@10": tuned.best,
            "seconds": tuned.seconds,
        }
    result = train_models(
        data,
        names,
        overrides,
        seed=args.seed,
        device=str(device),
        max_epochs=args.max_epochs,
        progress=not args.no_progress and sys.stderr.isatty(),
        checkpoint_dir=args.state_dir / "checkpoints",
        fusion_steps=args.fusion_steps,
        gate_margin=args.gate_margin,
    )
    summary: dict[str, Any] = {
        "data": str(data_dir),
        "split": split.name,
        "validation": result.validation,
        "train_seconds": result.train_seconds,
        "gates": {n: g.to_dict() for n, g in result.gates.items()},
        **artifacts,
        **lineage,
    }
    if tracking_uri is not None:
        from training import tracking

        summary["tracking_uri"] = tracking_uri
        id_maps = {"users": dataset.user_ids.to_list(), "items": dataset.item_ids.to_list()}
        summary["registry"] = tracking.log_training(
            result, {**params, "models": ",".join(result.models)}, id_maps, artifacts
        )
    print(json.dumps(summary, indent=1))
    return summary


def cli() -> None:
    """The ``recsys-train`` console script: ``main`` returns the summary, which a script must not exit with."""
    main()


if __name__ == "__main__":
    cli()
