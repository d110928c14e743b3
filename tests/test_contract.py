"""The serving contract (recsys.contract) is the one list of served models, roles and tensor names.

The last test is the recipe's guard (docs/export.md, "Adding a model"): it finds every literal
collection in the shipped code that names two or more models, and fails if one appears outside
the places a new model is meant to touch, so a list copied into the server or export shows up here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from recsys import contract
from recsys.v1 import recommender_pb2 as pb

from clients.api import STRATEGIES as CLIENT_STRATEGIES
from export import graphs
from export.formats import VARIANTS
from server import budget, recommend, triton_models, validation
from training.pipeline import LEARNED

ROOT = Path(__file__).resolve().parents[1]
# Where a new catalogue model is added (with its own module under training/models/), and why.
PLACES = {
    "training/pipeline.py": "its row in MODELS (train, config, load)",
    "export/graphs.py": "its score module in CATALOG_SCORES (ratings row -> catalogue scores)",
    "protos/recsys/contract.py": "its name in CATALOG_SCORERS (roles, branches, strategies follow)",
}
# Literals naming models that a new model does not need: per-model search spaces (a model without
# one is not searched), and benches pinning the models and weights of their own fixed setups.
OPTIONAL = {
    "training/tuning.py": "SPACES, the search space of each tuned model",
    "loadtest/benches/serving.py": "the throughput issue's bars for the SAE and RBM batch sizes",
    "loadtest/benches/rollout_bundles.py": "the rollout bench's fixed recipe and weights",
    "loadtest/benches/catalogs.py": "the throughput bench's synthetic catalogues' weights",
}
SHIPPED = ("training", "export", "server", "clients", "loadtest", "protos/recsys")


def test_the_contract_imports_nothing_heavy() -> None:
    heavy = ("torch", "numpy", "server", "export", "training")
    code = f"import sys, recsys.contract; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_export_and_the_server_take_their_lists_from_it() -> None:
    assert set(LEARNED) == set(contract.MODELS)  # what training makes is what is served
    assert {cls.name for cls in graphs.CATALOG_SCORES} == set(contract.CATALOG_SCORERS)
    assert contract.CATALOG.inputs == graphs.CATALOG_INPUTS and contract.CATALOG.outputs == graphs.CATALOG_OUTPUTS
    assert VARIANTS is contract.VARIANTS
    assert tuple(contract.ROLES) == triton_models.ROLES and budget.BRANCHES is contract.BRANCHES
    assert recommend.MODEL_STRATEGIES == contract.MODELS
    # Every model with a STRATEGY_<NAME> value is a strategy on both ends of the wire.
    assert set(validation.STRATEGIES.values()) == set(CLIENT_STRATEGIES) == set(contract.STRATEGIES)
    assert CLIENT_STRATEGIES["ease"] == pb.STRATEGY_EASE and validation.STRATEGIES[pb.STRATEGY_EASE] == "ease"


def test_precisions_prefer_torchscript_and_cover_every_variant() -> None:
    assert contract.PRECISIONS == {
        "fp32": ("torchscript_fp32", "onnx_fp32"),
        "int8": ("torchscript_int8", "onnx_int8"),
        "fp16": ("onnx_fp16",),
    }
    assert {n for names in contract.PRECISIONS.values() for n in names} == set(contract.VARIANTS)


def _model_lists(path: Path) -> list[int]:
    """Lines of literal tuples, lists, sets and dict keys naming two or more served models."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            elements = node.elts
        elif isinstance(node, ast.Dict):
            elements = [k for k in node.keys if k is not None]
        else:
            continue
        names = {e.value for e in elements if isinstance(e, ast.Constant) and e.value in contract.MODELS}
        if len(names) >= 2:
            lines.append(node.lineno)
    return lines


def test_a_new_model_touches_at_most_three_places() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for folder in SHIPPED
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "_pb2" not in path.name and (lines := _model_lists(path))
    }
    stray = {f: lines for f, lines in found.items() if f not in PLACES and f not in OPTIONAL}
    assert not stray, f"lists of models outside {sorted(PLACES)}: {stray}; derive them from recsys.contract"
    assert len(PLACES) <= 3 and set(PLACES) - {"export/graphs.py"} <= set(found)
