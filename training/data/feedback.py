"""Merge stored feedback into a MovieLens data set, for retraining (``train --feedback STORE_URL``).

The merge writes a new ml-100k-layout folder (the base's files, with ``u.data``, ``u.user`` and the
official split files rewritten), so training, the registry's lineage and export all read it like
any other data set and its fingerprint names exactly the events it holds. Rules:

- the store already dropped repeated event ids; of several events for one (user, item) the latest
  by event time wins (ties: the later arrival);
- a click becomes an implicit "liked" rating (the scale's 75% point, 4 of 1..5) unless the user
  rated that item, in the feedback or in the base data (explicit beats implicit);
- a feedback rating replaces the base rating of the same (user, item) and moves that pair into the
  training part of every split (it is no longer a held-out judgement);
- users new since the base data are added (numeric ids as they are, other ids numbered after the
  largest; the map is written to ``feedback_users.json``) with unknown demographics;
- events for items the catalogue does not have are counted, reported and skipped.

The watermark (last event's store sequence and time) travels with the result for MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from server.store import open_store
from training.data.readers import DataError, detect_format, read_ratings_file
from training.data.splits import OFFICIAL_SPLITS

log = logging.getLogger(__name__)
COLUMNS = ["user", "item", "rating", "timestamp"]


@dataclass
class FeedbackMerge:
    folder: Path
    store: str
    events: int = 0
    watermark_seq: int = 0
    watermark_time_ms: int = 0
    ratings: int = 0  # (user, item) pairs the feedback contributes
    clicks_as_liked: int = 0
    superseded: int = 0  # older events of a pair the latest one replaced
    new_users: int = 0
    unknown_items: dict[int, int] = field(default_factory=dict)  # item id -> events skipped

    def params(self) -> dict[str, object]:
        """Flat values for MLflow: the lineage of a model trained on this merge."""
        out = {f"feedback_{k}": v for k, v in asdict(self).items() if k not in ("folder", "unknown_items")}
        out["feedback_unknown_item_events"] = sum(self.unknown_items.values())
        return out


def merge_feedback(base: Path, store_url: str, out_root: Path) -> FeedbackMerge:
    base = Path(base)
    if detect_format(base) != "ml-100k":
        raise DataError(f"{base}: merging feedback writes the ml-100k layout; the base must be ml-100k")
    store = open_store(store_url)
    try:
        events = pd.DataFrame(
            [(e.user_id, e.item_id, e.kind, e.rating, e.timestamp_ms, e.seq) for e in store.events_after(0)],
            columns=["user_id", "item", "kind", "rating", "timestamp_ms", "seq"],
        )
    finally:
        store.close()
    merge = FeedbackMerge(base, store_url.split("@")[-1], len(events))  # never a password in lineage
    if events.empty:
        raise DataError(f"{merge.store} holds no feedback events; nothing to merge")
    merge.watermark_seq, merge.watermark_time_ms = int(events["seq"].max()), int(events["timestamp_ms"].max())
    base_ratings = read_ratings_file(base / "u.data", "ml-100k")
    users = pd.read_csv(
        base / "u.user", sep="|", names=["user", "age", "gender", "occupation", "zip"], encoding="latin-1"
    )
    items = set(pd.read_csv(base / "u.item", sep="|", header=None, usecols=[0], encoding="latin-1")[0].tolist())

    known = events["item"].isin(items)
    merge.unknown_items = {int(k): int(v) for k, v in Counter(events.loc[~known, "item"]).most_common()}
    if merge.unknown_items:
        log.warning(
            "skipped feedback for unknown items count=%d examples=%s",
            sum(merge.unknown_items.values()),
            list(merge.unknown_items)[:5],
        )
    events = events[known]
    user_map = _user_ids(events["user_id"], set(users["user"].tolist()))
    merge.new_users = sum(1 for raw in user_map.values() if raw not in set(users["user"].tolist()))
    events = events.assign(user=events["user_id"].map(user_map))
    feedback = _resolve(events, base_ratings, merge)
    digest = hashlib.sha256(pd.util.hash_pandas_object(feedback, index=False).values.tobytes()).hexdigest()[:10]
    folder = Path(out_root) / f"feedback-w{merge.watermark_seq}-{digest}"
    merge.folder = folder
    if not folder.is_dir():  # same events, same folder: a re-run reuses it
        _write(base, folder, base_ratings, feedback, users, user_map)
    return merge


def _user_ids(user_ids: pd.Series, existing: set[int]) -> dict[str, int]:
    """Feedback user id (text) -> ml-100k user id: numeric ids as they are, others numbered after the largest."""
    mapping: dict[str, int] = {}
    numeric = {u: int(u) for u in user_ids.unique() if str(u).isdigit()}
    next_id = max([*existing, *numeric.values(), 0]) + 1
    for user in user_ids.unique():
        if user in numeric:
            mapping[user] = numeric[user]
        else:
            mapping[user], next_id = next_id, next_id + 1
    return mapping


def _resolve(events: pd.DataFrame, base_ratings: pd.DataFrame, merge: FeedbackMerge) -> pd.DataFrame:
    """One row per (user, item): the latest rating, else a click as "liked" where nothing is rated."""
    ordered = events.sort_values(["timestamp_ms", "seq"], kind="stable")
    rating_events, click_events = ordered[ordered["kind"] == "rating"], ordered[ordered["kind"] == "click"]
    rated = rating_events.drop_duplicates(["user", "item"], keep="last")
    clicked = click_events.drop_duplicates(["user", "item"], keep="last")
    merge.superseded = len(rating_events) - len(rated) + len(click_events) - len(clicked)
    rated_before = pd.MultiIndex.from_frame(pd.concat([rated[["user", "item"]], base_ratings[["user", "item"]]]))
    clicks = clicked[~pd.MultiIndex.from_frame(clicked[["user", "item"]]).isin(rated_before)]
    liked = 4.0  # ml-100k's 1..5 scale: the 75% point, as the server counts a click
    out = pd.concat([rated.assign(rating=rated["rating"].astype(np.float32)), clicks.assign(rating=np.float32(liked))])
    merge.ratings, merge.clicks_as_liked = len(out), len(clicks)
    out = out.assign(timestamp=(out["timestamp_ms"] // 1000).astype(np.int64))
    return out[COLUMNS].reset_index(drop=True)


def _without(rows: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    pairs = pd.MultiIndex.from_frame(feedback[["user", "item"]])
    return rows[~pd.MultiIndex.from_frame(rows[["user", "item"]]).isin(pairs)]


def _write(
    base: Path,
    folder: Path,
    base_ratings: pd.DataFrame,
    feedback: pd.DataFrame,
    users: pd.DataFrame,
    user_map: dict[str, int],
) -> None:
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in base.iterdir():
        if path.is_file() and path.name not in ("u.data", "u.user"):
            shutil.copy(path, staging / path.name)
    _save(pd.concat([_without(base_ratings, feedback), feedback]), staging / "u.data")
    for name in OFFICIAL_SPLITS:
        if (base / f"{name}.base").is_file():
            train = read_ratings_file(base / f"{name}.base", "ml-100k")
            test = read_ratings_file(base / f"{name}.test", "ml-100k")
            _save(pd.concat([_without(train, feedback), feedback]), staging / f"{name}.base")
            _save(_without(test, feedback), staging / f"{name}.test")
    new = sorted(set(user_map.values()) - set(users["user"].tolist()))
    extra = pd.DataFrame({"user": new, "age": 0, "gender": "U", "occupation": "none", "zip": "00000"})
    pd.concat([users, extra]).to_csv(staging / "u.user", sep="|", header=False, index=False, encoding="latin-1")
    (staging / "feedback_users.json").write_text(json.dumps(user_map))
    staging.rename(folder)


def _save(ratings: pd.DataFrame, path: Path) -> None:
    ratings[COLUMNS].astype(
        {
            "user": np.int64,
            "item": np.int64,
            "rating": np.int64 if bool(np.all(np.mod(ratings["rating"], 1) == 0)) else np.float32,
            "timestamp": np.int64,
        }
    ).to_csv(path, sep="\t", header=False, index=False)
