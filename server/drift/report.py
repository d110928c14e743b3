"""The offline drift report: the store's recent feedback against the bundle's reference, as a PNG
(reference vs live histogram per feature), an HTML page around it and a JSON of the PSI values.

    python -m server.drift --bundle serving_bundle --store sqlite:///var/feedback.sqlite --out reports/drift
"""

from __future__ import annotations

import argparse
import html
import json
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from server.bundle import load_bundle
from server.drift import DriftMonitor
from server.drift.reference import FEATURES, Reference
from server.paths import REPORTS, SERVING_BUNDLE, STATE
from server.profiles import Profiles
from server.store import open_store, sqlite_url

SHIFTED, STABLE = 0.25, 0.1


def live_monitor(bundle_path: Path, store_url: str, window: int) -> tuple[DriftMonitor, int]:
    """A monitor fed with the store's last ``window`` events and the profile size of each of their users."""
    bundle = load_bundle(bundle_path)
    reference = Reference.load(bundle.folder)
    if reference is None:
        raise SystemExit(f"{bundle.folder} has no drift reference; re-export it (`make export`)")
    store = open_store(store_url)
    try:
        total = store.count()
        events = list(islice(store.events_after(0), max(total - window, 0), None)) if total else []
        monitor = DriftMonitor(reference, bundle.genres, bundle.item_index, None, window=window, min_samples=1)
        monitor.observe_feedback(events)
        profiles = Profiles(bundle, store)
        for user in dict.fromkeys(e.user_id for e in events):
            profiles.refresh(user)
            monitor.observe_answer(user, len(profiles.get(user)))
    finally:
        store.close()
    return monitor, len(events)


def write_report(monitor: DriftMonitor, events: int, out: Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = monitor.reference
    if reference is None:
        raise ValueError("the bundle has no drift reference (exported before drift references): nothing to compare")
    out.mkdir(parents=True, exist_ok=True)
    # The stored events say nothing of the models' scores (the live gauges watch those).
    values = {k: v for k, v in monitor.psi().items() if k in FEATURES}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for ax, feature in zip(axes.flat, FEATURES, strict=True):
        expected = reference.expected[feature]
        counts = monitor.windows[feature].counts
        live = counts / counts.sum() if counts.sum() else counts
        x = np.arange(len(expected))
        ax.bar(x - 0.2, expected, 0.4, label="reference (training)")
        ax.bar(x + 0.2, live, 0.4, label=f"live ({len(monitor.windows[feature])} obs.)")
        ax.set_xticks(x, reference.labels[feature], rotation=60, fontsize=7)
        value = values[feature]
        ax.set_title(
            f"{feature}: PSI {'n/a' if value is None else f'{value:.3f}'}",
            color="red" if value is not None and value > SHIFTED else "black",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "drift.png", dpi=90)
    plt.close(fig)
    summary = {"events": events, "psi": values, "shifted": [k for k, v in values.items() if v and v > SHIFTED]}
    (out / "drift.json").write_text(json.dumps(summary, indent=1))
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{'n/a' if v is None else f'{v:.4f}'}</td><td>"
        f"{'n/a' if v is None else 'shifted' if v > SHIFTED else 'watch' if v > STABLE else 'stable'}"
        f"</td></tr>"
        for k, v in values.items()
    )
    (out / "drift.html").write_text(
        f"<html><head><title>Drift report</title></head><body><h1>Drift: live feedback vs training data</h1>"
        f"<p>{events} recent feedback events. PSI &lt; {STABLE}: stable; &gt; {SHIFTED}: shifted.</p>"
        f"<table border=1><tr><th>feature</th><th>PSI</th><th>verdict</th></tr>{rows}</table>"
        f"<img src='drift.png' alt='reference vs live histograms'></body></html>"
    )
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=SERVING_BUNDLE)
    parser.add_argument("--store", default=sqlite_url(STATE / "feedback.sqlite"))
    parser.add_argument("--window", type=int, default=10_000, help="the most recent events compared")
    parser.add_argument("--out", type=Path, default=REPORTS / "drift")
    args = parser.parse_args(argv)
    summary = write_report(*live_monitor(args.bundle, args.store, args.window), args.out)
    print(json.dumps({**summary, "report": str(args.out / "drift.html")}, indent=1))
    return summary
