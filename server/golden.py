"""Replay a bundle's golden requests (``export.golden``) against Triton at its pinned versions.

Returns the problems found, empty when Triton answers what export saw. Item ids go in and come
out through the bundle's own id maps, so a catalogue that does not belong to the models shows
up here as unknown ids or other items, not later as wrong titles.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from recsys import contract

from server.runtime import BundleRuntime
from server.triton_models import ModelCallError

INDEX_TENSORS = ("ITEM_IDX", "EXCLUDE_IDX", "CANDIDATE_IDX", "TOP_IDX")
CALL_TIMEOUT_S = 10.0


def load_golden(runtime: BundleRuntime) -> list[dict[str, Any]]:
    name = runtime.bundle.manifest.get("golden")
    path = runtime.bundle.folder / str(name or contract.BUNDLE_FILES["golden"])
    if not name or not path.is_file():
        raise FileNotFoundError(
            f"bundle {runtime.bundle.folder} has no golden requests ({path.name}); "
            "export it again with `make export`, which writes them"
        )
    requests: list[dict[str, Any]] = json.loads(path.read_text())["requests"]
    return requests


async def verify(runtime: BundleRuntime, min_overlap: float, tolerance: float) -> list[str]:
    """Problems with ``runtime``'s models on its golden requests (at most one per model)."""
    problems: dict[str, str] = {}
    index = runtime.bundle.item_index
    for request in load_golden(runtime):
        model = request["model"]
        if model not in runtime.pool.pins or model in problems:
            continue
        inputs = {}
        for name, values in request["inputs"].items():
            if name.split("__")[0] in INDEX_TENSORS:
                unknown = [v for v in values if v != -1 and v not in index]
                if unknown:
                    problems[model] = f"golden item ids {unknown[:3]} are not in the bundle's id maps"
                    break
                values = [index.get(v, -1) for v in values]
                inputs[name] = np.asarray([values], dtype=np.int64)
            else:
                inputs[name] = np.asarray([values], dtype=np.int64 if name.startswith("DEMOGRAPHICS") else np.float32)
        if model in problems:
            continue
        try:
            got = (await runtime.pool.infer(model, inputs, tuple(request["outputs"]), CALL_TIMEOUT_S, "golden")).outputs
        except ModelCallError as err:
            problems[model] = f"call failed: {err.reason}"
            continue
        problem = _compare(request["outputs"], got, runtime.bundle.item_ids, min_overlap, tolerance)
        if problem:
            problems[model] = f"{problem} (user row {request['user_row']}, version {runtime.pool.pins[model]})"
    return [f"{model}: {problem}" for model, problem in sorted(problems.items())]


def _compare(
    expected: dict[str, list[float]],
    got: dict[str, np.ndarray],
    item_ids: np.ndarray,
    min_overlap: float,
    tolerance: float,
) -> str:
    for name, want in expected.items():
        values = np.asarray(got[name]).ravel()
        if name.split("__")[0] in INDEX_TENSORS:
            ids = [int(item_ids[i]) if 0 <= i < len(item_ids) else -1 for i in values.tolist()]
            top = min(10, len(want))
            overlap = len(set(ids[:top]) & set(want[:top])) / max(top, 1)
            if overlap < min_overlap:
                return f"{name} top-{top} overlap {overlap:.2f} < {min_overlap:.2f} with export's answer"
        else:
            want_arr = np.asarray(want, dtype=np.float64).ravel()
            if want_arr.shape != values.shape:
                return f"{name} has shape {values.shape}, export's {want_arr.shape}"
            err = float(np.max(np.abs(values - want_arr))) if len(values) else 0.0
            if err > tolerance * (1 + float(np.max(np.abs(want_arr), initial=0.0))):
                return f"{name} differs from export's answer by {err:.3g}"
    return ""
