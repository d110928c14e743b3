"""The issue's bars on the real ml-100k u1 split (several minutes on 2 cores: it trains every model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.benches import quality as bench_quality
from training.data.splits import make_split
from training.evaluation.ranking import ranking_task
from training.pipeline import LEARNED, MISSION, full_history

pytestmark = pytest.mark.slow


def test_protocol_matches_the_published_one(ml100k) -> None:
    split = make_split(ml100k, "u1")
    assert (len(split.train), len(split.test)) == (80_000, 20_000)
    assert len(ranking_task(full_history(ml100k, split.train), split.test).users) == 456


def test_bench_clears_the_bars(ml100k, tmp_path: Path) -> None:
    report = bench_quality.main(["--data", str(ml100k.source), "--out", str(tmp_path / "quality.json")])
    rows = report["models"]
    assert set(rows) == {"popularity", *LEARNED, "ensemble"}
    floor = rows["popularity"]["ndcg@10"]
    assert 0.2 < floor < 0.3  # the reference popularity NDCG@10 is 0.245
    for name in MISSION:  # each mission model stands on its own above popularity
        assert rows[name]["ndcg@10"] > floor, name
    best_single = max(rows[n]["ndcg@10"] for n in LEARNED)  # EASE included
    assert rows["ensemble"]["ndcg@10"] >= best_single
    assert rows["sae"]["rmse"] <= 0.90  # the bar; measured 0.896 on u1
    assert (tmp_path / "quality.json").is_file()
