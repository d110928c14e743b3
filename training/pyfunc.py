"""Every trained model as an MLflow pyfunc: MovieLens user ids in, each user's top-K items out.

Input: a DataFrame with a ``user_id`` column (raw MovieLens ids); the ``k`` param (default 10)
is the list length. Output, one row per recommendation: ``user_id``, ``rank`` (1 = best),
``item_id`` (raw MovieLens id) and ``score`` (the model's ranking score; higher is better).
Each user is scored from the ratings the training call knew (the split's training part,
validation slice included), stored with the model; items rated there are never recommended.
A user id the model has not seen is scored from no ratings at all.

The model's own folder (``Scorer.save``, ``id_maps.json``, ``members.json``) is the pyfunc's
``model`` artifact, unchanged, so export and evaluation read the same files as before; an
ensemble also carries its members' folders, so the one pyfunc scores on its own.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import scipy.sparse as sp
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from training.data.dataset import IdMap
from training.data.matrices import to_csr
from training.models.base import Scorer, TrainingData

MODEL, MEMBER = "model", "member-"
HISTORIES = "histories.npz"
DEFAULT_K = 10
BATCH_USERS = 512  # users scored at once: a dense users x items block each
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("long", "user_id")]),
    outputs=Schema(
        [ColSpec("long", "user_id"), ColSpec("long", "rank"), ColSpec("long", "item_id"), ColSpec("double", "score")]
    ),
    params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]),
)
# What scoring imports besides this project (installed with its `train` extra).
REQUIREMENTS = ("mlflow", "torch", "numpy", "scipy", "pandas")


def known_ratings(data: TrainingData) -> sp.csr_matrix:
    """The ratings a training call knew: what it fitted on plus the validation slice it held out."""
    if data.validation_ratings is None or not len(data.validation_ratings):
        return data.train
    held_out = to_csr(data.validation_ratings, *data.train.shape)
    return (data.train + held_out).tocsr()


def top_k_frame(model: Scorer, histories: sp.csr_matrix, users: IdMap, user_ids: np.ndarray, k: int) -> pd.DataFrame:
    """Each user's k best unrated items, one row per (user, rank)."""
    frames = []
    for start in range(0, len(user_ids), BATCH_USERS):
        raw = np.asarray(user_ids[start : start + BATCH_USERS], dtype=np.int64)
        rows = users.to_index(raw)
        known = rows >= 0
        # An unknown user's row is emptied, not dropped: they still get an answer, from no ratings.
        history = (sp.diags(known.astype(np.float32)) @ histories[np.where(known, rows, 0)]).tocsr()
        scores = np.asarray(model.score(history, rows), dtype=np.float64)
        scores[history.nonzero()] = -np.inf
        width = min(k, scores.shape[1])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :width]
        best = np.take_along_axis(scores, top, axis=1)
        keep = np.isfinite(best)  # fewer than k unrated items: the list is shorter
        frames.append(
            pd.DataFrame(
                {
                    "user_id": np.repeat(raw, width)[keep.ravel()],
                    "rank": np.tile(np.arange(1, width + 1, dtype=np.int64), len(raw))[keep.ravel()],
                    "item_id": model.item_ids.to_raw(top[keep]),
                    "score": best[keep],
                }
            )
        )
    empty = pd.DataFrame({c: pd.Series(dtype="int64") for c in ("user_id", "rank", "item_id")})
    return pd.concat(frames, ignore_index=True) if frames else empty.assign(score=pd.Series(dtype="float64"))


class TopKModel(PythonModel):
    """The pyfunc wrapper: loads the saved model folder(s) and scores users from stored ratings."""

    def load_context(self, context: PythonModelContext) -> None:
        from training.pipeline import load_model  # imports every model: only when a pyfunc loads

        folder = Path(context.artifacts[MODEL])
        members = {
            key.removeprefix(MEMBER): load_model(Path(path))
            for key, path in context.artifacts.items()
            if key.startswith(MEMBER)
        }
        self.model = load_model(folder, members or None)
        self.histories = sp.load_npz(folder / HISTORIES).tocsr()
        self.users = IdMap(json.loads((folder / "id_maps.json").read_text())["users"])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        k = int((params or {}).get("k", DEFAULT_K))
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        return top_k_frame(self.model, self.histories, self.users, model_input["user_id"].to_numpy(), k)


def log_pyfunc(folder: Path, members: dict[str, Path], example_user: int) -> Any:
    """Log ``folder`` (and an ensemble's member folders) as a pyfunc model of the active run."""
    artifacts = {MODEL: str(folder), **{f"{MEMBER}{name}": str(path) for name, path in members.items()}}
    return mlflow.pyfunc.log_model(
        name=MODEL,
        python_model=TopKModel(),
        artifacts=artifacts,
        signature=SIGNATURE,
        input_example=pd.DataFrame({"user_id": [example_user]}),
        # Given, not inferred: inference would load the model once more in a subprocess.
        pip_requirements=[f"{name}=={metadata.version(name)}" for name in REQUIREMENTS],
    )


def model_folder(downloaded: Path) -> Path:
    """The saved model folder inside a downloaded pyfunc; versions logged before pyfuncs are the folder."""
    if not (downloaded / "MLmodel").is_file():
        return downloaded
    # Where MLflow copied the artifact is recorded, not fixed (same-named folders get numbered).
    artifacts = Model.load(downloaded).flavors["python_function"]["artifacts"]
    return downloaded / str(artifacts[MODEL]["path"])
