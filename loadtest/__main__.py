"""``python -m loadtest`` (``make loadtest``): a bounded, headless locust run and its summary.

    python -m loadtest --users 32 --spawn-rate 8 --duration 60s            # starts its own stack
    python -m loadtest --target 10.0.0.5:50051 --known-users 1-943         # against a running server

Without ``--target`` it starts the embedded Triton and our server (a child process) on loopback
from ``model_repository/`` and ``serving_bundle/``. Locust's CSVs and HTML report land in
``--out`` (``reports/loadtest/``) beside ``summary.json``: ``rps``, ``p50_ms``, ``p95_ms``,
``p99_ms``, ``failures``, ``degraded_share`` overall and per request type (``per_type``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.settings import ROOT, Settings

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


@contextlib.contextmanager
def own_stack(settings: Settings) -> Iterator[tuple[str, str]]:
    """(target, known user id range) of an embedded Triton + server started for this run."""
    from export.triton import EmbeddedTriton
    from server.bundle import load_bundle
    from server.process import start_server, stop_server

    bundle = load_bundle(settings.bundle)
    ids = sorted(int(u) for u in bundle.user_index if u.isdigit())
    with tempfile.TemporaryDirectory() as state, EmbeddedTriton(settings.model_repository) as triton:
        process, target = start_server(triton.grpc_url, Path(state), "--metrics-port", "null",
                                       "--bundle", str(settings.bundle), "--max-concurrent-rpcs", "1024")
        try:
            yield target, f"{ids[0]}-{ids[-1]}"
        finally:
            stop_server(process)


def run_locust(target: str, known_users: str, users: int, spawn_rate: float, duration: str, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
               "-u", str(users), "-r", str(spawn_rate), "-t", duration, "--host", target,
               "--csv", str(out / "locust"), "--html", str(out / "report.html"),
               "--degraded-out", str(out / "degraded.json"), "--known-users", known_users,
               "--loglevel", "WARNING", "--stop-timeout", "5"]
    return subprocess.run(command, cwd=ROOT, check=False).returncode


def _row(stats: dict[str, str], answers: int, degraded: int) -> dict[str, Any]:
    return {"requests": int(stats["Request Count"]), "rps": round(float(stats["Requests/s"]), 2),
            "p50_ms": float(stats["50%"]), "p95_ms": float(stats["95%"]), "p99_ms": float(stats["99%"]),
            "failures": int(stats["Failure Count"]),
            "degraded_share": round(degraded / answers, 4) if answers else 0.0}


def summarise(out: Path) -> dict[str, Any]:
    with (out / "locust_stats.csv").open() as f:
        rows = list(csv.DictReader(f))
    counts = json.loads((out / "degraded.json").read_text()) if (out / "degraded.json").is_file() else {}
    answers, degraded = counts.get("answers", {}), counts.get("degraded", {})
    per_type = {r["Name"]: _row(r, answers.get(r["Name"], 0), degraded.get(r["Name"], 0))
                for r in rows if r["Name"] != "Aggregated"}
    total = next(r for r in rows if r["Name"] == "Aggregated")
    return {**_row(total, sum(answers.values()), sum(degraded.values())), "per_type": per_type}


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n{'request type':<18} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'failures':>9} {'degraded':>9}")
    for name, row in [*summary["per_type"].items(), ("all", summary)]:
        print(f"{name:<18} {row['requests']:>9} {row['rps']:>8.1f} {row['p50_ms']:>8.0f} {row['p95_ms']:>8.0f} "
              f"{row['p99_ms']:>8.0f} {row['failures']:>9} {row['degraded_share']:>8.1%}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="host:port of a running server (default: start one here)")
    parser.add_argument("--known-users", default="1-943", help="known user ids FIRST-LAST (with --target)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--spawn-rate", type=float, default=8)
    parser.add_argument("--duration", default="60s", help="locust run time, e.g. 30s, 2m")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "loadtest")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.target:
            target, known = args.target, args.known_users
        else:
            target, known = stack.enter_context(own_stack(Settings()))
        code = run_locust(target, known, args.users, args.spawn_rate, args.duration, args.out)
    summary = {**summarise(args.out), "meta": {"target": target, "out": str(args.out), "users": args.users,
                                               "spawn_rate": args.spawn_rate,
                                               "duration": args.duration, "locust_exit_code": code}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main()
