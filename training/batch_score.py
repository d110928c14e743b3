"""Top-K for every user of a registered model, written to Parquet (through the model's pyfunc).

    python -m training.batch_score --model recsys-ensemble --alias champion -k 10 --out top10.parquet
    python -m training.batch_score --model sae --alias 3 --out sae-v3.parquet

One row per recommendation: user_id, rank (1 = best), item_id, score, as ``training.pyfunc``
documents; every user the model was trained with is scored, and items they rated are left out.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from training.cli_exit import exit_user_error
from training.train import DEFAULT_STATE

PROG = "batch_score"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m training.{PROG}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="ensemble", help="registered model: recsys-ensemble or ensemble (default: %(default)s)"
    )
    parser.add_argument("--alias", default="champion", help="registry alias or version number (default: %(default)s)")
    parser.add_argument("-k", type=int, default=10, help="items per user (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE,
        help="local MLflow store, unless MLFLOW_TRACKING_URI is set (default: var/ in the checkout)",
    )
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"-k must be at least 1, not {args.k}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import mlflow  # slow to import: after the arguments are checked
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from training import tracking

    tracking.configure(args.state_dir)
    uri = tracking.model_uri(args.model.removeprefix("recsys-"), args.alias)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        exit_user_error(PROG, f"cannot load {uri} ({err}); train first (`make train`) or pick another alias/version")
    users = model.unwrap_python_model().users.raw_ids
    top = model.predict(pd.DataFrame({"user_id": users}), params={"k": args.k})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    top.to_parquet(args.out, index=False)
    summary = {"model": uri, "users": len(users), "rows": len(top), "k": args.k, "out": str(args.out)}
    print(json.dumps(summary))
    return summary


def cli() -> None:
    """A console-script entry: ``main`` returns the summary, which a script must not exit with."""
    main()


if __name__ == "__main__":
    cli()
