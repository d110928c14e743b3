"""The working tree's layout: where every stage reads and writes by default, defined once.

The runtime owns it and the tools (training, export, the benches) import it, never the other way
round. Each path is only a default: settings, flags and ``$RECSYS_*`` variables override it.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "var"  # MLflow store, checkpoints, feedback store, rollout pointer, fetched data
REPORTS = ROOT / "reports"  # every bench's JSON
MODEL_REPOSITORY = ROOT / "model_repository"  # what export writes and Triton serves
SERVING_BUNDLE = ROOT / "serving_bundle"  # what export writes beside it and the server reads
TRITON_HOME = ROOT / ".triton"  # the nvidia-pytriton wheel unpacked by `make setup`
# Where the README tells a new user to unpack MovieLens 100K (beside the clone).
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "movielens" / "ml-100k"
