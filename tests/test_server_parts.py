"""The server's plain parts, without a network: fusion, planning, latency windows, settings, feedback, cold start."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from server.budget import choose_plan, effective_budget_ms
from server.bundle import BundleError, load_bundle
from server.coldstart import CONTENT, FULL, POPULARITY, Popularity, content_scores, encode_demographics, rung_for
from server.fusion import RankedList, _member, fuse, in_order, merge, mmr, ranked
from server.latency import LatencyBook, LatencyWindow
from server.logs import JsonFormatter, request_id
from server.settings import SettingsError, load_settings
from server.triton_models import ModelPool
from tests.stack import Artifacts
from training.fusion import FusionSpec
from training.fusion import fuse as offline_fuse

MODELS = [
    "sae_torchscript_fp32",
    "sae_torchscript_int8",
    "rbm_torchscript_fp32",
    "two_tower_user_torchscript_fp32",
    "two_tower_user_torchscript_int8",
    "two_tower_items_torchscript_fp32",
]


def test_rrf_over_full_lists_equals_the_training_fusion() -> None:
    rng = np.random.default_rng(0)
    scores = {"sae": rng.normal(size=30), "rbm": rng.normal(size=30), "popularity": rng.normal(size=30)}
    weights = {"sae": 0.5, "rbm": 0.2, "popularity": 0.3}
    lists = {name: ranked(np.arange(30), s) for name, s in scores.items()}
    for method in ("rrf", "weighted"):
        served = fuse(lists, weights, method, 60.0)
        offline = offline_fuse({n: s[None] for n, s in scores.items()}, FusionSpec(method, weights, 60.0))[0]
        assert sorted(served.items.tolist()) == list(range(30))
        np.testing.assert_allclose(served.scores, offline[served.items])
        assert (np.diff(served.scores) <= 0).all()


def _dense_fusion(lists: dict[str, RankedList], weights: dict[str, float], method: str, n_items: int) -> np.ndarray:
    """What a catalogue-wide fusion scores: every unlisted item at each model's floor."""
    total = np.zeros(n_items)
    for name, ranking in lists.items():
        if weights.get(name, 0) <= 0:
            continue
        if method == "rrf":
            listed = 1.0 / (60.0 + np.arange(1, len(ranking.items) + 1))
            floor = 1.0 / (60.0 + len(ranking.items) + 1)
        else:
            listed = (ranking.scores - ranking.scores.mean()) / ranking.scores.std()
            floor = listed.min()
        per_item = np.full(n_items, floor)
        per_item[ranking.items] = listed
        total += weights[name] * per_item
    return total


@pytest.mark.parametrize("method", ["rrf", "weighted"])
def test_fusing_the_union_gives_the_catalogue_wide_top_items(method: str) -> None:
    rng = np.random.default_rng(1)
    n_items = 5000
    lists = {
        name: ranked(rng.choice(n_items, 100, replace=False), rng.normal(size=100))
        for name in ("sae", "rbm", "two_tower")
    }
    weights = {"sae": 0.4, "rbm": 0.1, "two_tower": 0.2}
    served = fuse(lists, weights, method, 60.0)
    dense = _dense_fusion(lists, weights, method, n_items)
    assert len(served.items) <= 300  # the union, never the catalogue
    np.testing.assert_allclose(served.scores, dense[served.items])
    listed = np.unique(np.concatenate([r.items for r in lists.values()]))
    best = np.argsort(-dense, kind="stable")[:50]
    assert set(best) <= set(listed)  # nothing outside the union can beat an item in it
    assert served.items[:50].tolist() == best[np.argsort(-dense[best], kind="stable")].tolist()


def test_partial_lists_rank_unlisted_items_after_the_list() -> None:
    lists = {
        "a": RankedList(np.array([3, 1]), np.array([2.0, 1.0])),
        "popularity": RankedList(np.array([4, 1, 0]), np.array([9.0, 8.0, 7.0])),
    }
    fused = fuse(lists, {"a": 1.0, "unused": 1.0}, "rrf", 10.0)
    # Items only popularity (no weight) names get a's floor, in popularity's order.
    assert fused.items.tolist() == [3, 1, 4, 0]
    np.testing.assert_allclose(fused.scores, [1 / 11, 1 / 12, 1 / 13, 1 / 13])
    assert fuse({}, {"a": 1.0}, "rrf", 10.0).items.tolist() == []


def test_ranked_drops_blocked_items_and_merge_keeps_one_order() -> None:
    top = ranked(np.array([4, 2, 7]), np.array([0.5, 0.9, -np.inf]))
    assert top.items.tolist() == [2, 4]
    assert ranked(np.arange(6), np.array([1.0, 6, 2, 5, 3, 4]), limit=3).items.tolist() == [1, 3, 5]
    keep = np.array([True, False, True, True])
    assert in_order(np.array([3, 1, 0, 2]), np.array([0.1, 0.9, 0.2, 1.0]), keep).items.tolist() == [3, 0, 2]
    order = np.arange(1000)[::-1].copy()
    every_third = np.arange(1000) % 3 == 0
    assert in_order(order, np.zeros(1000), every_third, limit=100).items.tolist() == list(range(999, 699, -3))[:100]
    assert len(in_order(order, np.zeros(1000), every_third, limit=5000).items) == 334
    merged = merge(top, np.array([4, 9, 8]), np.array([0.5, 0.7, 0.1]))
    assert merged.items.tolist() == [2, 9, 4, 8]
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 100):  # merge's membership test is np.isin's, including empty lists
        values, among = rng.integers(0, 60, 50), rng.integers(0, 60, size)
        assert np.array_equal(_member(values, among), np.isin(values, among))


def test_mmr_trades_relevance_for_genre_spread() -> None:
    genres = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=bool)
    order = np.arange(4)
    relevance = np.array([1.0, 0.9, 0.8, 0.1])
    assert mmr(order, relevance, genres, 2, 0.0).tolist() == [0, 1]
    assert mmr(order, relevance, genres, 2, 0.9).tolist() == [0, 3]


def _pool(ready: list[str] = MODELS) -> tuple[ModelPool, LatencyBook]:
    book = LatencyBook(prior_ms=10.0)
    pool = ModelPool("unused:1", MODELS, ["torchscript_fp32", "torchscript_int8"], "torchscript_fp32", book)
    pool.ready = set(ready)
    return pool, book


def _observe(book: LatencyBook, **ms: float) -> None:
    for model, value in ms.items():
        for _ in range(10):
            book.observe(model, value)


def test_plans_downgrade_step_by_step() -> None:
    pool, book = _pool()
    _observe(
        book,
        sae_torchscript_fp32=30,
        sae_torchscript_int8=12,
        rbm_torchscript_fp32=8,
        two_tower_user_torchscript_fp32=4,
        two_tower_user_torchscript_int8=3,
        two_tower_items_torchscript_fp32=3,
    )
    branches = ["sae", "two_tower", "rbm"]
    # Two stages cost the two-tower's calls (4 + 3) plus the slowest ranker (30).
    full, _ = choose_plan(pool, branches, "auto", 50, 200)
    assert (full.name, full.staged, full.cost_ms, sorted(full.rankers)) == ("full", True, 37, ["rbm", "sae"])
    one_stage, _ = choose_plan(pool, branches, "auto", 35, 200)
    assert (one_stage.name, one_stage.staged, one_stage.cost_ms) == ("one_stage", False, 30)
    unstaged, _ = choose_plan(pool, branches, "auto", 50, 200, two_stage=False)  # the operator's choice
    assert (unstaged.name, unstaged.staged, unstaged.cost_ms) == ("full", False, 30)
    int8, _ = choose_plan(pool, branches, "auto", 20, 200)
    assert int8.name == "int8" and int8.branches["sae"] == ("sae_torchscript_int8",)
    assert int8.branches["rbm"] == ("rbm_torchscript_fp32",)  # no int8 RBM: the default stands in
    dropped, _ = choose_plan(pool, branches, "auto", 10, 200)
    assert dropped.name == "int8:drop=sae" and set(dropped.branches) == {"two_tower", "rbm"}
    assert dropped.candidates == 50
    assert choose_plan(pool, branches, "auto", 2, 200)[0].name == "local"
    # An explicit precision is kept: no int8 step, models that do not fit are dropped instead.
    assert choose_plan(pool, branches, "fp32", 20, 200)[0].name == "fp32:drop=sae"


def test_plans_leave_out_models_that_are_not_ready() -> None:
    pool, _ = _pool([m for m in MODELS if not m.startswith("rbm")])
    plan, options = choose_plan(pool, ["sae", "two_tower", "rbm"], "auto", 100, 200)
    assert plan.name == "full" and set(plan.branches) == {"sae", "two_tower"} and "rbm" not in options[0].branches


def test_only_a_generator_with_rankers_makes_two_stages() -> None:
    pool, _ = _pool([m for m in MODELS if not m.startswith("two_tower_items")])
    assert not choose_plan(pool, ["sae", "two_tower", "rbm"], "auto", 100, 200)[0].staged  # two-tower not ready
    pool, _ = _pool()
    assert not choose_plan(pool, ["two_tower"], "auto", 100, 200)[0].staged  # the content rung
    assert not choose_plan(pool, ["sae"], "auto", 100, 200)[0].staged  # one model


def test_budget_is_the_tightest_of_request_deadline_and_maximum() -> None:
    assert effective_budget_ms(0, None, 250, 10_000) == 250
    assert effective_budget_ms(80, None, 250, 10_000) == 80
    assert effective_budget_ms(80, 0.05, 250, 10_000) == pytest.approx(50)
    assert effective_budget_ms(20_000, None, 250, 10_000) == 10_000


def test_latency_window_prior_p95_and_ageing(monkeypatch: pytest.MonkeyPatch) -> None:
    window = LatencyWindow(size=100, prior_ms=10.0, max_age_s=5.0)
    window.observe(3.0)
    assert window.p95() == 10.0  # too few samples: the prior
    for ms in range(1, 101):
        window.observe(float(ms))
    assert window.p95() == 95.0
    later = time.monotonic() + 10
    monkeypatch.setattr("server.latency.time.monotonic", lambda: later)
    assert window.p95() == 10.0 and window.calls == 101


def test_settings_layers_defaults_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text('grpc_port = 6000\nmax_k = 50\ndefault_budget_ms = 90\nvariants = ["onnx_fp32"]\n')
    monkeypatch.setenv("RECSYS_MAX_K", "60")
    monkeypatch.setenv("RECSYS_GRPC_PORT", "7000")
    settings = load_settings(
        ["--config", str(config), "--grpc-port", "8000", "--content-weights", '{"two_tower": 1.0}']
    )
    assert (settings.grpc_port, settings.max_k, settings.default_budget_ms) == (8000, 60, 90)
    assert settings.variants == ["onnx_fp32"] and settings.content_weights == {"two_tower": 1.0}
    assert load_settings([]).grpc_port == 7000
    with pytest.raises(SettingsError, match="max_k"):
        load_settings(["--max-k", "lots"])
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(["--config", str(tmp_path / "missing.toml")])


def test_cold_start_parts(serving_artifacts: Artifacts) -> None:
    bundle = load_bundle(serving_artifacts.bundle)
    assert [rung_for(n, 10) for n in (0, 1, 9, 10)] == [POPULARITY, CONTENT, CONTENT, FULL]
    codes = encode_demographics(bundle, 30, bundle.vocab["genders"][0], "no-such-job")
    assert codes[0] > 0 and codes[1] == 1 and codes[2] == 0
    popularity = Popularity(bundle, min_segment_users=1)
    overall, order, segment = popularity.scores(None)
    assert segment == "all users" and np.array_equal(overall, bundle.popularity)
    assert np.all(np.diff(overall[order]) <= 0)
    scores, order, segment = popularity.scores(codes)
    assert segment.startswith("users like you") and not np.array_equal(scores, overall)
    assert np.all(np.diff(scores[order]) <= 0)
    assert Popularity(bundle, min_segment_users=10**6).scores(codes)[2] == "all users"
    genre = int(np.argmax(bundle.genres.sum(axis=0)))
    fans = np.flatnonzero(bundle.genres[:, genre])[:3]
    content = content_scores(bundle, fans, np.full(3, bundle.scale[1], dtype=np.float32))
    assert content[bundle.genres[:, genre]].mean() > content[~bundle.genres[:, genre]].mean()
    # Replies list genre names from a table built once; it must match every item's own row.
    assert len(bundle.item_genre_names) == bundle.n_items
    assert all(
        names == [bundle.genre_names[j] for j in np.flatnonzero(row)]
        for names, row in zip(bundle.item_genre_names, bundle.genres, strict=True)
    )


def test_missing_bundle_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="make export"):
        load_bundle(tmp_path)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "manifest.json").write_text(json.dumps({"scale": {"low": 1, "high": 5}}))
    with pytest.raises(BundleError, match="incomplete"):
        load_bundle(tmp_path)


def test_json_logs_carry_the_request_id_and_extra_fields() -> None:
    record = logging.LogRecord("server.rpc", logging.INFO, __file__, 1, "recommend", None, None)
    record.rung = "full"
    token = request_id.set("abc123")
    try:
        entry = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert entry["request_id"] == "abc123" and entry["rung"] == "full" and entry["msg"] == "recommend"
    assert entry["level"] == "INFO" and entry["ts"].endswith("Z")


def test_the_one_graph_two_tower_is_one_call_and_its_halves_the_fallback() -> None:
    fused = "two_tower_torchscript_fp32"
    book = LatencyBook(prior_ms=10.0)
    pool = ModelPool("unused:1", [*MODELS, fused], ["torchscript_fp32", "torchscript_int8"], "torchscript_fp32", book)
    pool.ready = {*MODELS, fused}
    _observe(
        book,
        two_tower_torchscript_fp32=5,
        two_tower_user_torchscript_fp32=4,
        two_tower_items_torchscript_fp32=3,
        sae_torchscript_fp32=6,
        rbm_torchscript_fp32=6,
    )
    plan, _ = choose_plan(pool, ["sae", "two_tower", "rbm"], "fp32", 50, 200)
    assert plan.branches["two_tower"] == (fused,) and plan.cost_ms == 11  # one call, then the rankers
    pool.ready.discard(fused)  # not loaded, or failed: the two calls in a row
    plan, _ = choose_plan(pool, ["sae", "two_tower", "rbm"], "fp32", 50, 200)
    assert plan.branches["two_tower"] == ("two_tower_user_torchscript_fp32", "two_tower_items_torchscript_fp32")


def test_the_full_rung_model_is_tried_first_and_the_per_model_plans_are_its_degrade_path() -> None:
    """One call for the whole two-stage plan when the full-rung model is ready at the precision the
    per-model calls would use and its p95 fits; otherwise the per-model plans, as without it."""
    full_rung = "full_rung_torchscript_fp32"
    members = ("two_tower", "sae", "rbm")
    branches = ["sae", "two_tower", "rbm"]
    book = LatencyBook(prior_ms=10.0)
    pool = ModelPool(
        "unused:1", [*MODELS, full_rung], ["torchscript_fp32", "torchscript_int8"], "torchscript_fp32", book
    )
    pool.ready = {*MODELS, full_rung}
    _observe(
        book,
        full_rung_torchscript_fp32=9,
        two_tower_user_torchscript_fp32=4,
        two_tower_items_torchscript_fp32=3,
        sae_torchscript_fp32=6,
        rbm_torchscript_fp32=6,
    )
    plan, options = choose_plan(pool, branches, "fp32", 50, 200, fused=members)
    assert (plan.name, plan.fused, plan.cost_ms, plan.staged) == ("fused", full_rung, 9, False)
    assert set(plan.branches) == set(branches) and [o.name for o in options[1:3]] == ["full", "one_stage"]
    assert choose_plan(pool, branches, "fp32", 50, 200)[0].name == "full"  # not asked for (fused_full_rung off)
    # Predicted too slow: the staged per-model plan (13 ms) fits where the one call (9 ms here) does not.
    _observe(book, full_rung_torchscript_fp32=40)
    assert choose_plan(pool, branches, "fp32", 20, 200, fused=members)[0].name == "full"
    _observe(book, full_rung_torchscript_fp32=9)
    # Fewer branches than members (one the fusion does not weigh): still one call, the rest unread.
    assert choose_plan(pool, ["sae", "two_tower"], "fp32", 50, 200, fused=members)[0].name == "fused"
    # A branch it does not run, no ranker, a precision it lacks, one stage asked for, or not ready: per model.
    assert choose_plan(pool, branches, "fp32", 50, 200, fused=("two_tower", "sae"))[0].name == "full"
    assert choose_plan(pool, ["two_tower"], "fp32", 50, 200, fused=members)[0].name == "full"
    assert choose_plan(pool, branches, "int8", 50, 200, fused=members)[0].name != "fused"
    assert choose_plan(pool, branches, "fp32", 50, 200, two_stage=False, fused=members)[0].name == "full"
    pool.ready.discard(full_rung)
    assert choose_plan(pool, branches, "fp32", 50, 200, fused=members)[0].name == "full"


def test_a_restarted_triton_loads_the_full_rung_then_the_full_plans_models_first() -> None:
    variants = ["torchscript_fp32", "torchscript_int8"]
    roles = ["full_rung", "two_tower", "two_tower_user", "two_tower_items", "sae", "rbm", "ease"]
    available = [f"{r}_{v}" for r in roles for v in variants]
    pool = ModelPool("127.0.0.1:1", available, variants, "torchscript_fp32", LatencyBook())
    pool.load_first(["two_tower", "rbm", "ease"], fused=True)
    assert pool.first == [
        {"full_rung_torchscript_fp32"},  # one stub: whole answers again
        {"two_tower_torchscript_fp32", "rbm_torchscript_fp32", "ease_torchscript_fp32"},  # its degrade path
    ]
    pool.load_first(["two_tower", "sae"])  # the fused plan off; SAE weighted
    assert pool.first == [{"two_tower_torchscript_fp32", "sae_torchscript_fp32"}]
    halves = ModelPool(
        "127.0.0.1:1",
        [m for m in available if not m.startswith(("two_tower_t", "full"))],
        variants,
        "torchscript_fp32",
        LatencyBook(),
    )
    halves.load_first(["two_tower"], fused=True)  # no one-graph two-tower model, no full-rung model
    assert halves.first == [{"two_tower_user_torchscript_fp32", "two_tower_items_torchscript_fp32"}]
