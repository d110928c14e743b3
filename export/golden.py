"""Golden requests: what each exported model answers for a few real users, written into the bundle.

A rollout replays them against Triton at the candidate's pinned versions before any traffic
moves (``server.golden``): the answers must be the ones export saw from the very same files,
mapped through the bundle's own id maps. That catches a Triton serving other weights, a
manifest naming the wrong versions, and a catalogue or id map that does not belong to the models.

Item indices are stored as raw item ids (``-1`` stays padding), so the check goes through the
candidate bundle's id maps rather than trusting positions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from recsys import contract

from export.formats import VARIANTS, runner
from export.repository import read_config

GOLDEN_FILE = contract.BUNDLE_FILES["golden"]
FILES = contract.BUNDLE_FILES
# User towers first: item scorers take their output. The one-graph two-tower model and the full-rung
# model (the same members' graphs in one) have no golden requests.
ROLES = (f"{contract.GENERATOR}_user", f"{contract.GENERATOR}_items", *contract.CATALOG_SCORERS)
CANDIDATES = 20
INDEX_INPUTS = ("ITEM_IDX", "EXCLUDE_IDX", "CANDIDATE_IDX", "TOP_IDX")


def golden_users(histories: sp.csr_matrix, n: int) -> np.ndarray:
    """``n`` users spread over the id range, each with at least 5 ratings (deterministic)."""
    rows = np.flatnonzero(np.diff(histories.indptr) >= 5)
    return rows[np.linspace(0, len(rows) - 1, num=min(n, len(rows))).astype(int)] if len(rows) else rows


def write_golden(folder: Path, repository: Path, pins: dict[str, int], users: int = 8) -> Path:
    histories = sp.load_npz(folder / FILES["histories"]).tocsr()
    item_ids = np.asarray(json.loads((folder / FILES["id_maps"]).read_text())["items"], dtype=np.int64)
    order = np.load(folder / FILES["popularity"])["order"]
    demographics = np.load(folder / FILES["demographics"]) if (folder / FILES["demographics"]).is_file() else None
    requests: list[dict[str, Any]] = []
    embeddings: dict[tuple[str, int], np.ndarray] = {}  # (variant, user) -> the user tower's output
    ordered = sorted(pins, key=lambda m: next((i for i, r in enumerate(ROLES) if m.startswith(r + "_")), len(ROLES)))
    for model in ordered:
        role = next((r for r in ROLES if model.startswith(r + "_")), None)
        variant = VARIANTS.get(model[len(role) + 1 :]) if role else None
        if variant is None:
            continue
        config = read_config(repository / model)
        run = runner(variant, repository / model / str(pins[model]) / config.default_model_filename)
        for user in golden_users(histories, users):
            row = histories[user]
            values = {
                "ITEM_IDX": row.indices.astype(np.int64),
                "RATING": row.data.astype(np.float32),
                "EXCLUDE_IDX": row.indices.astype(np.int64) if role == "two_tower_items" else np.full(1, -1, np.int64),
                "CANDIDATE_IDX": order[:CANDIDATES].astype(np.int64),
                "DEMOGRAPHICS": (demographics[user] if demographics is not None else np.zeros(3)).astype(np.int64),
                "USER_EMBEDDING": embeddings.get((variant.name, int(user)), np.zeros(0, np.float32)),
            }
            feeds = {t.name: values[t.name.split("__")[0]][None, :] for t in config.input}
            if any(v.size == 0 for v in feeds.values()):
                continue  # an item scorer without its user tower in this bundle
            outputs = dict(zip((t.name for t in config.output), (o[0] for o in run(feeds)), strict=True))
            if role == "two_tower_user":
                embeddings[(variant.name, int(user))] = next(iter(outputs.values())).astype(np.float32)
            requests.append(
                {
                    "model": model,
                    "user_row": int(user),
                    "inputs": {n: _plain(n, v[0], item_ids) for n, v in feeds.items()},
                    "outputs": {n: _plain(n, v, item_ids) for n, v in outputs.items()},
                }
            )
    path = folder / GOLDEN_FILE
    path.write_text(json.dumps({"requests": requests}))
    return path


def _plain(name: str, values: np.ndarray, item_ids: np.ndarray) -> list[Any]:
    if name.split("__")[0] in INDEX_INPUTS:
        return [int(item_ids[i]) if 0 <= i < len(item_ids) else -1 for i in values.tolist()]
    return values.tolist()
