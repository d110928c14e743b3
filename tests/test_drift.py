"""Drift: PSI, the reference export writes, the live monitor on ml-100k streams, the alert rule
against the server's real /metrics, and the offline report."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from recsys import contract

from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from export.bundle import write_drift_reference
from server.drift import DriftMonitor, psi
from server.drift.reference import Reference
from server.drift.report import live_monitor, write_report
from server.metrics import Metrics
from server.store import Event, open_store, sqlite_url
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for
from training.data import MovieLens
from training.data.splits import make_split

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"


def test_psi_is_zero_for_equal_mixes_and_grows_with_the_shift() -> None:
    base = np.array([0.5, 0.3, 0.2])
    assert psi(base, base * 40) == pytest.approx(0.0)
    small, large = psi(base, [0.45, 0.33, 0.22]), psi(base, [0.1, 0.2, 0.7])
    assert 0 < small < 0.1 < 0.25 < large
    assert np.isfinite(psi(base, [1.0, 0.0, 0.0]))  # an empty bin is floored, not infinite


@pytest.fixture(scope="module")
def reference(ml100k: MovieLens, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    folder = tmp_path_factory.mktemp("bundle")
    write_drift_reference(folder, ml100k, make_split(ml100k, "u1").train)
    loaded = Reference.load(folder)
    assert loaded is not None
    return loaded


def _replay(monitor: DriftMonitor, dataset: MovieLens, ratings: pd.DataFrame) -> None:
    raw_items = dataset.item_ids.to_raw(ratings["item"].to_numpy())
    monitor.observe_feedback(
        Event(str(u), int(i), "rating", float(r), int(t) * 1000)
        for u, i, r, t in zip(ratings["user"], raw_items, ratings["rating"], ratings["timestamp"], strict=True)
    )
    lengths = np.bincount(dataset.ratings["user"], minlength=dataset.n_users)  # the bundle's histories
    for user in np.unique(ratings["user"]):
        monitor.observe_answer(str(user), int(lengths[user]))


def _alert_fires(metrics_port: int) -> dict[str, bool]:
    """Evaluate the RecsysFeatureDrift rule's expression against the server's scraped /metrics."""
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    match = re.fullmatch(r"max by \(feature\) \((\w+)\) > ([\d.]+)", rules["RecsysFeatureDrift"]["expr"].strip())
    assert match, "the rule's expression changed: update this evaluator with it"
    metric, threshold = match.group(1), float(match.group(2))
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == metric]
    assert samples, f"{metric} not exported"
    return {s.labels["feature"]: s.value > threshold for s in samples}


def test_u1_test_replayed_stays_in_distribution(ml100k: MovieLens, reference: Reference) -> None:
    metrics = Metrics()
    monitor = DriftMonitor(
        reference,
        ml100k.genres,
        {int(r): i for i, r in enumerate(ml100k.item_ids.raw_ids)},
        metrics.drift_psi,
        window=20_000,
    )
    _replay(monitor, ml100k, make_split(ml100k, "u1").test)
    values = monitor.psi()
    assert all(v is not None and v < 0.1 for v in values.values()), values
    port = metrics.serve("127.0.0.1", 0)
    try:
        assert _alert_fires(port) == dict.fromkeys(values, False)
    finally:
        metrics.stop()


@pytest.mark.parametrize("shift", ["one_genre", "long_tail"])
def test_shifted_streams_raise_the_relevant_psi_and_the_alert(
    ml100k: MovieLens, reference: Reference, shift: str
) -> None:
    test = make_split(ml100k, "u1").test
    if shift == "one_genre":
        horror = ml100k.genre_names.index("Horror")
        stream, feature = test[ml100k.genres[test["item"], horror] == 1], "genre"
    else:
        stream, feature = test[reference.item_decile[test["item"]] >= 5], "popularity_decile"
    metrics = Metrics()
    monitor = DriftMonitor(
        reference,
        ml100k.genres,
        {int(r): i for i, r in enumerate(ml100k.item_ids.raw_ids)},
        metrics.drift_psi,
        window=20_000,
    )
    _replay(monitor, ml100k, stream)
    values = monitor.psi()
    assert (value := values[feature]) is not None and value > 0.25, values
    port = metrics.serve("127.0.0.1", 0)
    try:
        assert _alert_fires(port)[feature]
    finally:
        metrics.stop()


def test_offline_report_writes_png_and_html(serving_artifacts: Artifacts, tmp_path: Path) -> None:
    from server.bundle import load_bundle

    bundle = load_bundle(serving_artifacts.bundle)
    url = sqlite_url(tmp_path / "fb.sqlite")
    store = open_store(url)
    rng = np.random.default_rng(0)
    for n in range(300):
        item = int(bundle.item_ids[rng.integers(bundle.n_items)])
        store.append([Event(f"u{n % 30}", item, "rating", float(rng.integers(1, 6)), n)], "r")
    store.close()
    monitor, events = live_monitor(serving_artifacts.bundle, url, window=250)
    summary = write_report(monitor, events, tmp_path / "report")
    assert events == 250 and set(summary["psi"]) == {"history_length", "rating", "popularity_decile", "genre"}
    # Uniformly random ratings are far from the training mix of ratings: the report says so.
    assert summary["psi"]["rating"] > 0.1
    assert (tmp_path / "report" / "drift.png").stat().st_size > 10_000
    assert "drift.png" in (tmp_path / "report" / "drift.html").read_text()


@pytest.mark.slow
def test_live_model_score_features_in_distribution_and_shifted(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, tmp_path: Path
) -> None:
    """The server observes each model's top scores in its live answers (real Triton): the bundle's
    users asking with their histories keep every score_<model> PSI below 0.1, which checks that the
    live lists are binned like export's reference; a stream of new users who disliked only long-tail
    items moves every score PSI above 0.25 and the alert fires for them."""
    from server.bundle import load_bundle

    bundle = load_bundle(serving_artifacts.bundle)
    reference = Reference.load(bundle.folder)
    assert reference is not None
    # Every model, EASE too: its scores grow with the history, and the reference holds only the
    # users the server calls it for (the full rung's), as the live windows do.
    scored = [f"score_{m}" for m in contract.MODELS]
    assert set(scored) <= set(reference.features)
    assert reference.score_min_history["score_ease"] == contract.FULL_MIN_RATINGS
    assert reference.score_min_history[f"score_{contract.GENERATOR}"] == 1
    # fp32 only: the reference is the fp32 graphs' (int8 scores differ by their quantisation error).
    # A window of 1,000 scores (100 answers) so that the shifted stream below fills it.
    settings = settings_for(
        serving_artifacts, serving_triton.grpc_url, tmp_path, variants=["torchscript_fp32"], drift_window=1_000
    )
    rng = np.random.default_rng(0)
    with ServerThread(settings) as server, RecommenderClient(server.target, timeout=30, retry=NO_RETRY) as client:
        assert server.server is not None and server.server.metrics_port is not None
        for user in rng.permutation(list(bundle.user_index)):
            client.recommend(str(user), k=10, budget_ms=5000)  # every model answers, however busy the cores
        values = server.server.drift.psi()
        assert all((v := values[k]) is not None and v < 0.1 for k in scored), {k: values[k] for k in scored}
        assert not any(_alert_fires(server.server.metrics_port)[k] for k in scored)
        tail = np.flatnonzero(reference.item_decile >= 5)
        for n in range(120):  # new users (ids the bundle does not know), 12 long-tail items rated 1 each
            picked = bundle.item_ids[rng.choice(tail, 12, replace=False)]
            client.recommend(f"shifted-{n}", k=10, budget_ms=5000, ratings={int(i): 1.0 for i in picked})
        shifted = server.server.drift.psi()
        assert all((v := shifted[k]) is not None and v > 0.25 for k in scored), shifted
        assert all(_alert_fires(server.server.metrics_port)[k] for k in scored)


def test_a_score_feature_counts_only_answers_from_its_reference_population() -> None:
    """A score feature whose reference users all had >= N ratings ignores answers for shorter
    histories (the server ranks those without the catalogue scorers, and scores grow with the
    history): the window and the PSI are those of the same population."""
    base = Reference.from_ratings(
        np.array([3, 12, 20]),
        np.array([0, 1, 2]),
        np.array([4.0, 5.0, 3.0]),
        np.array([5, 3, 1]),
        np.eye(3),
        ["a", "b", "c"],
        np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
    )
    rng = np.random.default_rng(0)
    reference = base.with_scores({"ease": rng.random(1_000), "two_tower": rng.random(1_000)}, {"ease": 10})
    assert reference.score_min_history == {"score_ease": 10, "score_two_tower": 1}
    monitor = DriftMonitor(reference, np.eye(3), {1: 0, 2: 1, 3: 2}, None, window=1_000, min_samples=1)
    high = np.full(10, 5.0)  # far above every reference score: counted, it would be a shift
    for n in range(20):
        monitor.observe_answer(f"short-{n}", 9, {"ease": high, "two_tower": high})
    assert len(monitor.windows["score_ease"]) == 0 and len(monitor.windows["score_two_tower"]) == 200
    monitor.observe_answer("long", 10, {"ease": high})
    assert len(monitor.windows["score_ease"]) == 10


def test_the_monitor_follows_another_bundles_reference(serving_artifacts: Artifacts, tmp_path: Path) -> None:
    """A promoted bundle brings its own reference: the monitor switches to it, empties its windows,
    and drops the gauge of a model the new bundle does not serve (RolloutManager calls ``follow``)."""
    import json
    import shutil

    from server.bundle import load_bundle

    first = load_bundle(serving_artifacts.bundle)
    folder = shutil.copytree(first.folder, tmp_path / "7")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "bundle_version": 7}))
    data = json.loads((folder / "drift_reference.json").read_text())
    del data["features"]["score_rbm"], data["score_edges"]["score_rbm"]  # the new bundle serves no RBM
    data["features"]["rating"]["expected"] = [0.0, 0.0, 0.0, 0.0, 1.0]  # and was trained on 5-star ratings only
    (folder / "drift_reference.json").write_text(json.dumps(data))
    second = load_bundle(folder)

    metrics = Metrics()
    monitor = DriftMonitor(None, first.genres, first.item_index, metrics.drift_psi, min_samples=1)
    assert monitor.psi() == {}  # no reference yet: nothing watched
    monitor.follow(first)
    assert monitor.version == first.version and "score_rbm" in monitor.windows
    item = int(first.item_ids[0])
    monitor.observe_feedback([Event("u", item, "rating", 5.0, 1)])
    monitor.observe_answer("u", 20, {"rbm": np.array([0.5, 0.4])})
    assert (rating := monitor.psi()["rating"]) is not None and rating > 0.25
    assert len(monitor.windows["score_rbm"]) == 2
    monitor.follow(second)
    assert monitor.version == "7" and "score_rbm" not in monitor.windows
    assert not any(len(w) for w in monitor.windows.values())
    monitor.observe_feedback([Event("u", item, "rating", 5.0, 2)])
    assert monitor.psi()["rating"] == pytest.approx(0.0, abs=1e-6)  # judged by the new reference
    port = metrics.serve("127.0.0.1", 0)
    try:
        assert "score_rbm" not in _alert_fires(port) and "score_sae" in _alert_fires(port)
    finally:
        metrics.stop()
