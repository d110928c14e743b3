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

from export.bundle import write_drift_reference
from server.drift import DriftMonitor, psi
from server.drift.reference import Reference
from server.drift.report import live_monitor, write_report
from server.metrics import Metrics
from server.store import Event, open_store, sqlite_url
from tests.stack import Artifacts
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
    monitor.observe_feedback(Event(str(u), int(i), "rating", float(r), int(t) * 1000)
                             for u, i, r, t in zip(ratings["user"], raw_items, ratings["rating"], ratings["timestamp"],
                                                   strict=True))
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
    monitor = DriftMonitor(reference, ml100k.genres, {int(r): i for i, r in enumerate(ml100k.item_ids.raw_ids)},
                           metrics.drift_psi, window=20_000)
    _replay(monitor, ml100k, make_split(ml100k, "u1").test)
    values = monitor.psi()
    assert all(v is not None and v < 0.1 for v in values.values()), values
    port = metrics.serve("127.0.0.1", 0)
    try:
        assert _alert_fires(port) == dict.fromkeys(values, False)
    finally:
        metrics.stop()


@pytest.mark.parametrize("shift", ["one_genre", "long_tail"])
def test_shifted_streams_raise_the_relevant_psi_and_the_alert(ml100k: MovieLens, reference: Reference,
                                                              shift: str) -> None:
    test = make_split(ml100k, "u1").test
    if shift == "one_genre":
        horror = ml100k.genre_names.index("Horror")
        stream, feature = test[ml100k.genres[test["item"], horror] == 1], "genre"
    else:
        stream, feature = test[reference.item_decile[test["item"]] >= 5], "popularity_decile"
    metrics = Metrics()
    monitor = DriftMonitor(reference, ml100k.genres, {int(r): i for i, r in enumerate(ml100k.item_ids.raw_ids)},
                           metrics.drift_psi, window=20_000)
    _replay(monitor, ml100k, stream)
    values = monitor.psi()
    assert values[feature] is not None and values[feature] > 0.25, values
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
