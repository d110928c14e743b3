"""Evaluate registered models on a split's test part and print (or write) JSON.

    python -m training.evaluate                         # champions, ml-100k u1
    python -m training.evaluate --alias 3 --models sae  # a registry version
    python -m training.evaluate --models-dir DIR        # folders saved by Scorer.save (one per model)

Metrics: RMSE/MAE for rating predictors; Precision, Recall, NDCG, MAP, HitRate, MRR at 5/10/20
over the full catalogue with the user's training items excluded (relevant = rating >= 4);
coverage, novelty, genre diversity; the same on a cold-start slice (5 training ratings per user).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from training.cli_exit import exit_user_error
from training.data import DataError, load_movielens
from training.data.splits import make_split
from training.evaluation.report import evaluate_models
from training.models.base import Scorer, read_meta
from training.pipeline import MODELS, full_history, load_model
from training.train import DEFAULT_STATE, default_data


def from_registry(names: list[str], alias: str) -> dict[str, Scorer]:
    from training import tracking

    models: dict[str, Scorer] = {}
    for name in names:
        if name == "ensemble":
            folder = tracking.download("ensemble", alias)
            pinned = json.loads((folder / "members.json").read_text())
            members = {m: load_model(tracking.download(m, str(v))) for m, v in pinned.items()}
            models[name] = load_model(folder, members)
        else:
            models[name] = load_model(tracking.download(name, alias))
    return models


def from_folder(root: Path) -> dict[str, Scorer]:
    folders = {read_meta(p.parent)["model"]: p.parent for p in sorted(root.glob("*/model.json"))}
    models = {n: load_model(f) for n, f in folders.items() if n != "ensemble"}
    if "ensemble" in folders:
        models["ensemble"] = load_model(folders["ensemble"], models)
    return models


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--split", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join([*MODELS, "ensemble"]))
    parser.add_argument("--alias", default="champion", help="registry alias or version number")
    parser.add_argument("--models-dir", type=Path, default=None, help="load saved folders instead of the registry")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        dataset = load_movielens(args.data or default_data())
        split = make_split(dataset, args.split or ("u1" if dataset.name == "ml-100k" else "holdout"), args.seed)
    except DataError as err:
        exit_user_error("evaluate", err)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.models_dir:
        models = {n: m for n, m in from_folder(args.models_dir).items() if n in names}
    else:
        from training import tracking

        tracking.configure(args.state_dir)
        models = from_registry(names, args.alias)
    report = {
        "dataset": dataset.name,
        "split": split.name,
        "models": evaluate_models(models, dataset, full_history(dataset, split.train), split.test),
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
