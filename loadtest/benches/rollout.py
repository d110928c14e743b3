"""``make bench-rollout``: roll bundles through a loaded stack and write ``reports/rollout.json``.

    python -m loadtest.benches.rollout --data ../shared/data/movielens/ml-100k --users 32

Starts the embedded Triton and our server (a child process, admin service on a free loopback
port) over the bench's bundles (``loadtest.benches.rollout_bundles``), and locust at ``--users``.
Under that load it measures a steady phase, rolls the freshly trained candidate through
load -> shadow -> canary 10% -> full -> retire, then rolls the wrong bundle and waits for the
server's guardrails to roll it back. Each phase gets its requests, failures, p50/p99, degraded
share and the bundles that answered; ``mixed_answers`` counts answers whose model calls are not
all the answering bundle's pinned versions. The bars: no failures, no mixed answers, every
phase's p99 within 1.5x the steady p99 of the same run, the wrong bundle rolled back by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from clients.admin import RolloutAdminClient, hold
from loadtest.benches.rollout_bundles import build_bundles
from server.paths import DEFAULT_DATA, REPORTS, ROOT, STATE

LOCUSTFILE = Path(__file__).resolve().parent / "rollout_locust.py"
P99_BAR = 1.5


class Phases:
    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    @contextmanager
    def phase(self, name: str) -> Any:
        started = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] phase {name}", flush=True)
        try:
            yield
        finally:
            self.spans.append((name, started, time.time()))


def drive(admin: RolloutAdminClient, bundles: dict[str, Path], phases: Phases, seconds: float) -> dict[str, Any]:
    with phases.phase("steady"):
        time.sleep(seconds * 2)
    with phases.phase("load"):  # the candidate's versions load beside the live ones, warm up, golden requests
        rollout = admin.start(str(bundles["candidate"])).rollout_id
    with phases.phase("shadow"):
        hold(admin, rollout, seconds)
    with phases.phase("canary"):
        admin.promote("canary", 10)
        hold(admin, rollout, seconds)
    with phases.phase("full"):
        admin.promote("full")
        hold(admin, rollout, seconds)
    with phases.phase("retire"):  # the old versions unload once drained
        admin.promote("retire")
        time.sleep(seconds / 2)
    with phases.phase("bad_load"):
        state = admin.start(str(bundles["wrong"]))
    with phases.phase("bad_shadow"):
        deadline = time.monotonic() + 10 * seconds
        while state.stage != "idle" and time.monotonic() < deadline:
            time.sleep(0.2)
            state = admin.get()
    started = next(e.at for e in state.events if e.rollout_id == state.rollout_id and "started" in e.message)
    ended = next((e.at for e in state.events if e.rollout_id == state.rollout_id and "rolled back" in e.message), None)
    with phases.phase("after_rollback"):
        time.sleep(seconds / 2)
    trigger = state.outcome.split("(", 1)[1].split(")", 1)[0] if state.outcome.startswith("rolled back (") else ""
    return {
        "trigger": trigger,
        "reason": state.outcome,
        "automatic": trigger not in ("", "operator"),
        "seconds_to_rollback": round(ended - started, 2) if ended else None,
    }


def summarise(
    rows: list[dict[str, Any]], phases: Phases, pins: dict[str, dict[str, str]], rollback: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    report_phases: list[dict[str, Any]] = []
    mixed = 0
    for row in rows:
        if row["ok"]:
            want = pins.get(row["bundle"], {})
            mixed += int(not want or any(want.get(model) != version for model, version in row["calls"]))
    for name, start, end in phases.spans:
        inside = [r for r in rows if start <= r["t"] < end]
        ms = np.asarray([r["ms"] for r in inside if r["ok"]]) if inside else np.zeros(0)
        answered = [r for r in inside if r["ok"]]
        report_phases.append(
            {
                "phase": name,
                "seconds": round(end - start, 1),
                "requests": len(inside),
                "failures": sum(not r["ok"] for r in inside),
                "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
                "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
                "degraded_share": round(sum(r["degraded"] for r in answered) / len(answered), 4) if answered else 0.0,
                "bundle_versions": dict(Counter(r["bundle"] for r in answered)),
            }
        )
    steady = next(p for p in report_phases if p["phase"] == "steady")["p99_ms"]
    failures = sum(not r["ok"] for r in rows)
    bars = {
        "no_failures": failures == 0,
        "no_mixed_answers": mixed == 0,
        "p99_within_1.5x_steady": all(p["p99_ms"] is None or p["p99_ms"] <= P99_BAR * steady for p in report_phases),
        "bad_bundle_rolled_back_automatically": bool(rollback.get("automatic")),
    }
    # The report's keys are exactly the issue's; the bars and the rollback's reason go to stdout.
    report = {
        "phases": report_phases,
        "failures": failures,
        "mixed_answers": mixed,
        "rollback": {"trigger": rollback["trigger"], "seconds_to_rollback": rollback["seconds_to_rollback"]},
        "steady_p99_ms": steady,
    }
    return report, {**bars, "rollback_reason": rollback["reason"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.benches.rollout", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=STATE / "bench-rollout", help="bundles, kept for reuse")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--wait-ms", default="100-300", help="each user's pause between calls, MIN-MAX")
    parser.add_argument("--stage-s", type=float, default=30.0, help="seconds per stage (steady: twice)")
    parser.add_argument("--out", type=Path, default=REPORTS / "rollout.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from loadtest.server_process import start_server, stop_server
    from server.bundle import load_bundle
    from server.triton import EmbeddedTriton
    from server.triton.launcher import free_port

    bundles = build_bundles(args.data, args.work, args.epochs)
    pins = {
        load_bundle(b).version: {m: str(v) for m, v in load_bundle(b).manifest["repository"].items()}
        for b in bundles.values()
    }
    users = sorted(int(u) for u in load_bundle(bundles["live"]).user_index)
    phases = Phases()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedTriton(args.work / "model_repository") as triton:
        admin_port, rows_path = free_port(), Path(tmp) / "rows.jsonl"
        server, target = start_server(
            triton.grpc_url,
            Path(tmp),
            "--bundle",
            str(bundles["live"]),
            "--metrics-port",
            "null",
            "--model-repository",
            str(args.work / "model_repository"),
            "--variants",
            '["torchscript_fp32"]',
            "--admin-port",
            str(admin_port),
            "--rollout-state-dir",
            str(Path(tmp) / "rollout"),
            "--max-concurrent-rpcs",
            "1024",
        )
        locust = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "--only-summary",
                "-u",
                str(args.users),
                "-r",
                str(args.users),
                "--host",
                target,
                "--rows-out",
                str(rows_path),
                "--known-users",
                f"{users[0]}-{users[-1]}",
                "--wait-ms",
                args.wait_ms,
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
        )
        try:
            time.sleep(10)  # users spawned, first-call costs paid: not part of any phase
            with RolloutAdminClient(f"127.0.0.1:{admin_port}", timeout=600) as admin:
                rollback = drive(admin, bundles, phases, args.stage_s)
        finally:
            locust.send_signal(signal.SIGINT)
            locust.wait(60)
            stop_server(server)
            rows = (
                [json.loads(line) for line in rows_path.read_text().splitlines() if line] if rows_path.exists() else []
            )
    report, bars = summarise(rows, phases, pins, rollback)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(
        f"\n{'phase':<15} {'s':>6} {'requests':>9} {'failures':>9} {'p50 ms':>7} {'p99 ms':>7} {'degraded':>9}  bundles"
    )
    for p in report["phases"]:
        print(
            f"{p['phase']:<15} {p['seconds']:>6.1f} {p['requests']:>9} {p['failures']:>9} {p['p50_ms'] or 0:>7.1f} "
            f"{p['p99_ms'] or 0:>7.1f} {p['degraded_share']:>8.1%}  {p['bundle_versions']}"
        )
    print("bars:", json.dumps(bars, indent=1))
    return report


if __name__ == "__main__":
    main()
