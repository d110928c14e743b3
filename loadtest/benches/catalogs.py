"""The catalogues the serving benchmarks run on: the default bundle, or a 60k-item synthetic one.

``synthetic-60k`` is built once under ``var/catalogs/synthetic-60k/`` (data, two training epochs,
export of the fp32 and int8 TorchScript variants) and reused. Its fitted fusion gives SAE and RBM
no weight on this synthetic data, so, as in docs/throughput.md's 60k measurements, the bundle gets
ml-100k's fitted weights: the server then calls every model, which is what a scale bench is for.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from server.paths import STATE
from server.settings import Settings

log = logging.getLogger(__name__)
CATALOGS = ("default", "synthetic-60k")
ML100K_WEIGHTS = {"popularity": 0.3, "sae": 0.4, "rbm": 0.1, "two_tower": 0.2}


@dataclass(frozen=True)
class Catalog:
    name: str
    repository: Path
    bundle: Path


def _run(*args: str) -> None:
    log.info("catalog build: %s", " ".join(args))
    subprocess.run([sys.executable, "-m", *args], check=True)


def synthetic_60k(root: Path = STATE / "catalogs" / "synthetic-60k") -> Catalog:
    catalog = Catalog("synthetic-60k", root / "model_repository", root / "serving_bundle")
    if (catalog.bundle / "1" / "manifest.json").is_file():
        return catalog
    data, state = root / "data", root / "state"
    if not (data / "u.data").is_file():
        _run("training.data.synthetic", str(data), "--items", "60000", "--users", "3000")
    _run(
        "training.train",
        "--data",
        str(data),
        "--max-epochs",
        "2",
        "--fusion-steps",
        "2",
        "--no-progress",
        "--state-dir",
        str(state),
    )
    _run(
        "export",
        "--state-dir",
        str(state),
        "--out",
        str(catalog.repository),
        "--bundle",
        str(catalog.bundle),
        "--variants",
        "torchscript_fp32,torchscript_int8",
    )
    fusion = catalog.bundle / "1" / "fusion.json"
    spec = json.loads(fusion.read_text())
    spec["weights"] = dict(ML100K_WEIGHTS)
    fusion.write_text(json.dumps(spec))
    return catalog


def catalog(name: str, settings: Settings) -> Catalog:
    if name == "synthetic-60k":
        return synthetic_60k()
    if name == "default":
        return Catalog("default", settings.model_repository, settings.bundle)
    raise SystemExit(f"--catalog {name!r}: choose from {', '.join(CATALOGS)}")
