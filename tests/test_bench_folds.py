"""The fold bench's bookkeeping: which splits it runs, mean ± sd, and the issue's bars."""

from __future__ import annotations

import pytest

from loadtest.benches.folds import ORDER, bars, split_names, summarise
from training.data import MovieLens


def _fold(**ndcg: float) -> dict:
    return {
        "models": {
            n: {"ndcg@10": ndcg.get(n, 0.0), "recall@10": 0.1, "precision@10": 0.1, "rmse": None, "train_seconds": 1.0}
            for n in ORDER
        }
    }


def test_official_folds_for_ml100k_and_seeded_holdouts_elsewhere(tiny: MovieLens, synthetic_dirs) -> None:
    assert split_names(tiny, 5) == ["u1", "u2", "u3", "u4", "u5"]  # the synthetic ml-100k folder ships them
    from training.data import load_movielens

    csv = load_movielens(synthetic_dirs["csv"])
    assert split_names(csv, 3) == ["holdout-0.2-seed0", "holdout-0.2-seed1", "holdout-0.2-seed2"]


def test_summary_and_bars() -> None:
    good = dict(popularity=0.2, sae=0.3, rbm=0.31, two_tower=0.25, ensemble=0.33, ease=0.32)
    per_fold = {"u1": _fold(**good), "u2": _fold(**{**good, "rbm": 0.19, "ensemble": 0.3})}
    summary = summarise(per_fold)
    assert summary["ensemble"]["ndcg@10"]["mean"] == pytest.approx(0.315)
    assert summary["ensemble"]["ndcg@10"]["sd"] == pytest.approx(0.0212132, rel=1e-4)
    assert "rmse" not in summary["sae"]  # no fold had a value
    verdict = bars(per_fold, summary)
    assert verdict["sae_beats_popularity_every_fold"] and not verdict["rbm_beats_popularity_every_fold"]
    assert verdict["ensemble_at_least_best_single_every_fold"]
    assert not verdict["ensemble_at_least_ease_mean"]  # 0.315 < 0.32


def test_the_bench_trains_models_as_tasks_and_reports_every_fold(synthetic_dirs, tmp_path) -> None:
    """End to end on the tiny CSV set: mission models in tasks of their own, then EASE, fusion, test."""
    from loadtest.benches.folds import main

    out = tmp_path / "folds.json"
    report = main(["--data", str(synthetic_dirs["csv"]), "--folds", "2", "--jobs", "2", "--out", str(out)])
    assert report["complete"] and sorted(report["folds"]) == ["holdout-0.2-seed0", "holdout-0.2-seed1"]
    for fold in report["folds"].values():
        assert list(fold["models"]) == list(ORDER)
        assert set(fold["gates"]) == {"popularity", "sae", "rbm", "two_tower", "ease_member", "ensemble"}
        assert fold["models"]["ensemble"]["train_seconds"] >= fold["models"]["sae"]["train_seconds"]
    assert set(report["bars"]) >= {"ensemble_at_least_best_single_every_fold", "ensemble_at_least_ease_mean"}
