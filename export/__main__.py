"""Export registered models into a Triton model repository and write the serving bundle.

    python -m export                                   # champions -> model_repository/, serving_bundle/
    python -m export --alias 3 --variants onnx_fp32,torchscript_fp32

Models come from the MLflow registry: the ensemble by alias or version and exactly the member
versions it pins, so what is served traces back to one training run and the fusion weights fit.
The data set and split recorded with the models give the held-out users of the parity gate;
export refuses to run if that data changed since training.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from export.bundle import write_bundle, write_drift_reference
from export.formats import VARIANTS
from export.graphs import DEFAULT_TOP_N
from export.parity import ParityError
from export.pipeline import export_models
from export.registry import ExportError, load_champions
from server.paths import MODEL_REPOSITORY, SERVING_BUNDLE
from training.cli_exit import exit_user_error
from training.data import DataError, load_movielens
from training.data.splits import make_split
from training.train import DEFAULT_STATE


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alias", default="champion", help="registry alias or version number")
    parser.add_argument("--out", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument("--bundle", type=Path, default=SERVING_BUNDLE)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--top-n", type=int, default=DEFAULT_TOP_N)
    parser.add_argument("--keep-versions", type=int, default=2)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument(
        "--no-ragged-batches",
        action="store_true",
        help="configs for the NGC container's native backends, which cannot take ragged inputs",
    )
    parser.add_argument(
        "--no-fused-two-tower",
        action="store_true",
        help="skip the one-graph two-tower model (the server then makes two calls in a row)",
    )
    parser.add_argument(
        "--no-full-rung",
        action="store_true",
        help="skip the full-rung model (the whole two-stage ensemble in one call; the server then "
        "calls the models one by one)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    from training import tracking

    tracking.configure(args.state_dir)
    models, tags, registry_versions = load_champions(args.alias)
    if "data" not in tags:
        raise ExportError(
            "the registered models do not record their data set path (trained by an older "
            "version); retrain with `make train`"
        )
    dataset = load_movielens(tags["data"])
    if dataset.fingerprint() != tags["data_fingerprint"]:
        raise ExportError(
            f"{tags['data']} changed since the models were trained (fingerprint "
            f"{dataset.fingerprint()} != {tags['data_fingerprint']}); retrain or restore the data"
        )
    split = make_split(dataset, tags["split"], int(tags["validation_seed"]))
    rows = export_models(
        models,
        dataset,
        split.train,
        split.test,
        args.out,
        variants=variants,
        top_n=args.top_n,
        keep_versions=args.keep_versions,
        fused_two_tower=not args.no_fused_two_tower,
        full_rung=not args.no_full_rung,
        ragged_batches=not args.no_ragged_batches,
    )
    manifest = {
        "registry_versions": registry_versions,
        "alias": args.alias,
        "top_n": args.top_n,
        "repository": {r["repository_model"]: r["version"] for r in rows},
        # The models the full-rung model runs, which name its outputs (recsys.contract.full_rung).
        "full_rung_members": next((r["members"] for r in rows if "members" in r), None),
    }
    bundle = write_bundle(
        args.bundle,
        dataset,
        models["popularity"],
        models.get("two_tower"),
        models.get("ensemble"),
        manifest,
        repository=args.out,
    )
    write_drift_reference(bundle, dataset, split.train, models)
    print(json.dumps({"repository": str(args.out), "bundle": str(bundle), "models": rows}, indent=1))
    return rows


def cli(argv: list[str] | None = None) -> None:
    """``python -m export`` with expected failures as one line: a user error (nothing registered,
    data missing or changed) exits 2, a variant failing its parity gate exits 1."""
    try:
        main(argv)
    except (ExportError, DataError) as err:
        exit_user_error("export", err)
    except ParityError as err:
        raise SystemExit(f"export failed: {err}") from None


if __name__ == "__main__":
    cli()
