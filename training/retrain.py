"""Retrain from feedback: train on base + stored feedback, gate against the champion, export.

    python -m training.retrain --feedback redis://valkey:6379/0        # what `make retrain` runs

1. ``training.train --feedback STORE_URL`` merges the events (training.data.feedback) and registers
   the new models with the feedback watermark and data fingerprint in MLflow.
2. The gate: the new ensemble and the champion it would replace are both scored (NDCG@10) on the
   merged data's held-out part, each through its own id maps; the new one stays champion only if
   it is not worse by more than ``--tolerance``; otherwise the old champion is restored and
   nothing is exported (exit status 3).
3. Export: the champion into the Triton repository and a new serving-bundle version (with its
   drift reference). Rolling it out is the serving side's job; the command prints how.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from server.paths import MODEL_REPOSITORY, SERVING_BUNDLE
from training.data import load_movielens
from training.data.dataset import MovieLens
from training.data.matrices import to_csr
from training.data.splits import make_split
from training.evaluation.ranking import ndcg_at_10, ranking_task
from training.train import DEFAULT_STATE, default_data

log = logging.getLogger(__name__)
GATE_FAILED = 3


def ensemble_ndcg(version: int, dataset: MovieLens, train: pd.DataFrame, test: pd.DataFrame) -> float:
    """NDCG@10 of a registered ensemble on ``test``, users and items mapped through the model's own ids."""
    from training import tracking
    from training.evaluate import from_registry

    model = from_registry(["ensemble"], str(version))["ensemble"]
    maps = json.loads((tracking.download("ensemble", str(version)) / "id_maps.json").read_text())
    users = {int(raw): i for i, raw in enumerate(maps["users"])}
    items = {int(raw): i for i, raw in enumerate(maps["items"])}

    def remap(rows: pd.DataFrame) -> pd.DataFrame:
        raw_u, raw_i = dataset.user_ids.to_raw(rows["user"]), dataset.item_ids.to_raw(rows["item"])
        u = np.fromiter((users.get(int(r), -1) for r in raw_u), np.int64, len(rows))
        i = np.fromiter((items.get(int(r), -1) for r in raw_i), np.int64, len(rows))
        keep = (u >= 0) & (i >= 0)  # users or items the model never knew cannot be judged
        return pd.DataFrame({"user": u[keep], "item": i[keep], "rating": rows["rating"].to_numpy()[keep]})

    history = to_csr(remap(train), len(users), len(items))
    task = ranking_task(history, remap(test))
    return ndcg_at_10(lambda u, h: model.score(h, u), task)


def champion_version() -> int | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.tracking import CHAMPION, registry_name

    try:
        return int(MlflowClient().get_model_version_by_alias(registry_name("ensemble"), CHAMPION).version)
    except MlflowException:
        return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feedback", required=True, metavar="STORE_URL")
    parser.add_argument("--data", type=Path, default=None, help="the base data set (ml-100k layout)")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--out", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument("--bundle", type=Path, default=SERVING_BUNDLE)
    parser.add_argument("--tolerance", type=float, default=0.005, help="NDCG@10 the new model may lose")
    parser.add_argument("--train-arg", action="append", default=[], help="passed to training.train (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from export.__main__ import main as export_main
    from training import tracking
    from training.train import main as train_main

    tracking.configure(args.state_dir)
    before = champion_version()
    summary = train_main(
        [
            "--data",
            str(args.data or default_data()),
            "--feedback",
            args.feedback,
            "--state-dir",
            str(args.state_dir),
            "--no-progress",
            *args.train_arg,
        ]
    )
    after = int(summary["registry"]["ensemble"]["version"])
    dataset = load_movielens(summary["data"])
    split = make_split(dataset, summary["split"])
    result: dict[str, Any] = {
        "data": summary["data"],
        "feedback": {k: v for k, v in summary.items() if k.startswith("feedback_")},
        "before_version": before,
        "after_version": after,
        "after_ndcg@10": ensemble_ndcg(after, dataset, split.train, split.test),
    }
    result["before_ndcg@10"] = None if before is None else ensemble_ndcg(before, dataset, split.train, split.test)
    passed = before is None or result["after_ndcg@10"] >= result["before_ndcg@10"] - args.tolerance
    result["gate"] = "passed" if passed else "failed"
    if not passed:
        from mlflow import MlflowClient

        MlflowClient().set_registered_model_alias(tracking.registry_name("ensemble"), tracking.CHAMPION, str(before))
        print(json.dumps(result, indent=1))
        log.error(
            "gate failed: the new ensemble (v%s) scores %.4f, the champion (v%s) %.4f; champion kept, nothing exported",
            after,
            result["after_ndcg@10"],
            before,
            result["before_ndcg@10"],
        )
        sys.exit(GATE_FAILED)
    rows = export_main(["--state-dir", str(args.state_dir), "--out", str(args.out), "--bundle", str(args.bundle)])
    result["exported"] = {"repository": str(args.out), "bundle": str(args.bundle), "models": len(rows)}
    result["rollout"] = (
        f"new bundle under {args.bundle} (newest version folder); roll it out with "
        f"`python -m clients rollout ship {args.bundle}` (what `make retrain` does next)"
    )
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
