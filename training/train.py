"""Train the recommenders, fit the ensemble, and track everything in MLflow.

    python -m training.train                                   # ml-100k, split u1, all models
    python -m training.train --data DIR --models sae,two_tower --set sae.hidden=[300]

Defaults: the data set in ``$RECSYS_DATA`` or ``../shared/data/movielens/ml-100k``; split ``u1``
for ml-100k and a 20% per-user holdout otherwise; MLflow at ``$MLFLOW_TRACKING_URI`` or a
SQLite store under ``var/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from training.data import load_movielens
from training.data.readers import FORMATS
from training.data.splits import make_split
from training.pipeline import LEARNED, MODELS, prepare, train_models
from training.runtime import pick_device

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "movielens" / "ml-100k"
DEFAULT_STATE = ROOT / "var"


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
    parser.add_argument("--data", type=Path, default=None, help="MovieLens folder")
    parser.add_argument("--format", choices=FORMATS, default=None, help="override format detection")
    parser.add_argument("--split", default=None, help="u1..u5/ua/ub, holdout[:0.2] or temporal[:1]")
    parser.add_argument("--models", default=",".join(LEARNED), help="comma-separated; popularity always trains")
    parser.add_argument("--set", action="append", default=[], metavar="MODEL.KEY=VALUE",
                        help="override a model setting (repeatable)")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap epochs for every model")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--fusion-steps", type=int, default=10,
                        help="ensemble weight grid resolution (fewer: faster on large catalogues)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="checkpoints and local MLflow")
    parser.add_argument("--feedback", default=None, metavar="STORE_URL",
                        help="merge the feedback stored there into --data first (training.data.feedback)")
    parser.add_argument("--no-track", action="store_true", help="skip MLflow logging and registration")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    data_dir = (args.data or default_data()).resolve()  # recorded with the models; export reads it back
    lineage: dict[str, Any] = {}
    if args.feedback:  # train on base + feedback: a merged folder whose fingerprint names the events it holds
        from training.data.feedback import merge_feedback

        merged = merge_feedback(data_dir, args.feedback, args.state_dir / "feedback_data")
        data_dir, lineage = merged.folder.resolve(), merged.params()
    dataset = load_movielens(data_dir, args.format)
    split = make_split(dataset, args.split or ("u1" if dataset.name == "ml-100k" else "holdout"), args.seed)
    device = pick_device(args.device)
    logging.getLogger(__name__).info("training data=%s split=%s device=%s", data_dir, split.name, device)
    data = prepare(dataset, split, args.val_fraction, args.seed)
    result = train_models(data, parse_models(args.models), parse_overrides(args.set), seed=args.seed,
                          device=str(device), max_epochs=args.max_epochs,
                          progress=not args.no_progress and sys.stderr.isatty(),
                          checkpoint_dir=args.state_dir / "checkpoints", fusion_steps=args.fusion_steps)
    summary: dict[str, Any] = {"data": str(data_dir), "split": split.name, "validation": result.validation,
                               "train_seconds": result.train_seconds, **lineage}
    if not args.no_track:
        from training import tracking  # MLflow is slow to import; only when tracking

        summary["tracking_uri"] = tracking.configure(args.state_dir)
        params = {"data": str(data_dir), "dataset": dataset.name, "split": split.name, "seed": args.seed,
                  "validation_seed": args.seed, "val_fraction": args.val_fraction, "device": str(device),
                  "models": ",".join(result.models), "data_fingerprint": dataset.fingerprint(),
                  "users": dataset.n_users, "items": dataset.n_items, "ratings": len(dataset.ratings), **lineage}
        id_maps = {"users": dataset.user_ids.to_list(), "items": dataset.item_ids.to_list()}
        summary["registry"] = tracking.log_training(result, params, id_maps)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
