"""``python -m loadtest`` (``make loadtest``): a bounded, headless locust run and its summary.

    python -m loadtest --users 32 --spawn-rate 8 --duration 60s            # starts its own stack
    python -m loadtest --target 10.0.0.5:50051 --known-users 1-943         # against a running server
    python -m loadtest --sweep 1,8,32,64 --duration 60s                    # p99 against concurrency
    python -m loadtest --target HOST:PORT --token-file t --tls-ca ca.pem   # a secured server (+ --client-cert/-key)

Without ``--target`` it starts the embedded Triton and our server (a child process) on loopback
from ``model_repository/`` and ``serving_bundle/``. Locust's CSVs and HTML report land in
``--out`` (``reports/loadtest/``) beside ``summary.json``: ``rps``, ``p50_ms``, ``p95_ms``,
``p99_ms``, ``failures``, ``degraded_share`` overall and per request type (``per_type``).
With its own stack it also reports the CPU each process used (seconds of CPU per second of
load, from /proc: Linux only), which is where the bottleneck shows; ``--profile`` samples the
server with py-spy meanwhile (``server-profile.txt``, collapsed stacks; the top frames in
``summary.json``). A sweep runs once per user count (all users spawned at once) into
``users-N/`` and writes ``sweep.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.credentials import add_options as add_credential_options
from loadtest.credentials import credentials_from, forwarded
from server.paths import REPORTS, ROOT
from server.settings import Settings

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


@dataclass(frozen=True)
class Stack:
    target: str
    known_users: str  # FIRST-LAST
    pids: dict[str, int] = field(default_factory=dict)  # process trees to account CPU to


@contextlib.contextmanager
def own_stack(settings: Settings) -> Iterator[Stack]:
    """An embedded Triton + our server (a child process) started for this run."""
    from loadtest.server_process import start_server, stop_server
    from server.bundle import load_bundle
    from server.triton import EmbeddedTriton

    bundle = load_bundle(settings.bundle)
    ids = sorted(int(u) for u in bundle.user_index if u.isdigit())
    with tempfile.TemporaryDirectory() as state, EmbeddedTriton(settings.model_repository) as triton:
        process, target = start_server(
            triton.grpc_url,
            Path(state),
            "--metrics-port",
            "null",
            "--bundle",
            str(settings.bundle),
            "--max-concurrent-rpcs",
            "1024",
        )
        try:
            assert triton.process is not None
            yield Stack(target, f"{ids[0]}-{ids[-1]}", {"server": process.pid, "triton": triton.process.pid})
        finally:
            stop_server(process)


def locust_command(
    target: str,
    known_users: str,
    users: int,
    spawn_rate: float,
    duration: str,
    out: Path,
    credentials: argparse.Namespace | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The locust command line and environment for one run."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "-t",
        duration,
        "--host",
        target,
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "report.html"),
        "--degraded-out",
        str(out / "degraded.json"),
        "--known-users",
        known_users,
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "5",
    ]
    extra_args, extra_env = forwarded(credentials) if credentials is not None else ([], {})
    # locust imports this checkout's SDK and generated stubs, whatever else is installed.
    path = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "protos"), os.environ.get("PYTHONPATH", "")) if p)
    return [*command, *extra_args], {**os.environ, "PYTHONPATH": path, **extra_env}


def run_locust(
    target: str,
    known_users: str,
    users: int,
    spawn_rate: float,
    duration: str,
    out: Path,
    credentials: argparse.Namespace | None = None,
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    command, env = locust_command(target, known_users, users, spawn_rate, duration, out, credentials)
    return subprocess.run(command, cwd=ROOT, check=False, env=env).returncode


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) of a process and all its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            parents[pid], times[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(times.get(pid, 0.0) for pid in tree)


def start_profile(stack: Stack, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling our server's threads while locust runs (numpy time too: it runs without the GIL)."""
    if "server" not in stack.pids:
        return None
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(stack.pids["server"]),
            "--format",
            "raw",
            "--nonblocking",
            "--rate",
            "200",
            "--output",
            str(out / "server-profile.txt"),
        ],
        stdout=subprocess.DEVNULL,
    )


# Where a sampled frame's file lives -> the part of the stack it belongs to.
AREAS = (
    ("server/", "our code"),
    ("clients/", "our code"),
    ("asyncio/", "asyncio loop (and gRPC core callbacks)"),
    ("grpc", "grpc python"),
    ("tritonclient/", "tritonclient"),
    ("numpy/", "numpy"),
    ("scipy/", "scipy"),
    ("google/protobuf/", "protobuf"),
    ("prometheus_client/", "prometheus_client"),
)


def profile_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """Samples by innermost frame ("self") and by the library that frame is in ("areas")."""
    own: dict[str, int] = {}
    areas: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        name, _, where = leaf.partition(" (")
        file = where.rsplit(":", 1)[0]
        n = int(count)
        samples += n
        own[f"{name} ({file})"] = own.get(f"{name} ({file})", 0) + n
        area = next((label for prefix, label in AREAS if file.startswith(prefix)), "other")
        areas[area] = areas.get(area, 0) + n

    def share(table: dict[str, int], limit: int) -> list[list[Any]]:
        return [[k, round(n / samples, 4)] for k, n in sorted(table.items(), key=lambda kv: -kv[1])[:limit]]

    return {"samples": samples, "areas": share(areas, len(areas)), "self": share(own, top)}


def measured_run(
    stack: Stack,
    users: int,
    spawn_rate: float,
    duration: str,
    out: Path,
    profile: bool = False,
    credentials: argparse.Namespace | None = None,
) -> dict[str, Any]:
    """One locust run plus, for our own stack, cores used per process while it ran (and a profile)."""
    profiler = start_profile(stack, out) if profile else None
    before = {name: cpu_seconds(pid) for name, pid in stack.pids.items()}
    locust_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    code = run_locust(stack.target, stack.known_users, users, spawn_rate, duration, out, credentials)
    wall = time.monotonic() - started
    locust_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = {name: round((cpu_seconds(pid) - before[name]) / wall, 2) for name, pid in stack.pids.items()}
    if stack.pids:
        cores["locust"] = round(
            (locust_after.ru_utime + locust_after.ru_stime - locust_before.ru_utime - locust_before.ru_stime) / wall, 2
        )
    summary = {
        **summarise(out),
        "meta": {
            "target": stack.target,
            "out": str(out),
            "users": users,
            "spawn_rate": spawn_rate,
            "duration": duration,
            "locust_exit_code": code,
            "cores_used": cores,
            "cpus": os.cpu_count(),
        },
    }
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        profiler.wait(30)
        summary["server_profile"] = profile_summary(out / "server-profile.txt")
    return summary


def _ms(value: str) -> float | None:
    return None if value == "N/A" else float(value)  # locust writes N/A when no request completed


def _row(stats: dict[str, str], answers: int, degraded: int) -> dict[str, Any]:
    return {
        "requests": int(stats["Request Count"]),
        "rps": round(float(stats["Requests/s"]), 2),
        "p50_ms": _ms(stats["50%"]),
        "p95_ms": _ms(stats["95%"]),
        "p99_ms": _ms(stats["99%"]),
        "failures": int(stats["Failure Count"]),
        "degraded_share": round(degraded / answers, 4) if answers else 0.0,
    }


def summarise(out: Path) -> dict[str, Any]:
    with (out / "locust_stats.csv").open() as f:
        rows = list(csv.DictReader(f))
    counts = json.loads((out / "degraded.json").read_text()) if (out / "degraded.json").is_file() else {}
    answers, degraded = counts.get("answers", {}), counts.get("degraded", {})
    per_type = {
        r["Name"]: _row(r, answers.get(r["Name"], 0), degraded.get(r["Name"], 0))
        for r in rows
        if r["Name"] != "Aggregated"
    }
    total = next(r for r in rows if r["Name"] == "Aggregated")
    return {
        **_row(total, sum(answers.values()), sum(degraded.values())),
        "per_type": per_type,
        "cache": counts.get("cache", {}),
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"\n{'request type':<18} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'failures':>9} {'degraded':>9}"
    )
    for name, row in [*summary["per_type"].items(), ("all", summary)]:
        p50, p95, p99 = ("-" if row[k] is None else f"{row[k]:.0f}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        print(
            f"{name:<18} {row['requests']:>9} {row['rps']:>8.1f} {p50:>8} {p95:>8} "
            f"{p99:>8} {row['failures']:>9} {row['degraded_share']:>8.1%}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="host:port of a running server (default: start one here)")
    parser.add_argument("--known-users", default="1-943", help="known user ids FIRST-LAST (with --target)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--spawn-rate", type=float, default=8)
    parser.add_argument("--duration", default="60s", help="locust run time, e.g. 30s, 2m")
    parser.add_argument("--out", type=Path, default=REPORTS / "loadtest")
    parser.add_argument("--sweep", help="comma-separated user counts, e.g. 1,8,32,64 (one run each)")
    parser.add_argument("--profile", action="store_true", help="py-spy the server during the run (own stack)")
    add_credential_options(parser)  # for a secured --target
    args = parser.parse_args(argv)
    try:
        credentials_from(args)  # checked here, before any stack starts: the locust users would all fail
    except ValueError as err:
        parser.error(str(err))
    with contextlib.ExitStack() as resources:
        stack = Stack(args.target, args.known_users) if args.target else resources.enter_context(own_stack(Settings()))
        if not args.sweep:
            summary = measured_run(stack, args.users, args.spawn_rate, args.duration, args.out, args.profile, args)
            (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
            print_summary(summary)
            return summary
        runs = []
        for users in (int(u) for u in args.sweep.split(",")):
            summary = measured_run(stack, users, users, args.duration, args.out / f"users-{users}", credentials=args)
            (args.out / f"users-{users}" / "summary.json").write_text(json.dumps(summary, indent=1))
            print(f"\n{users} users:")
            print_summary(summary)
            runs.append(
                {
                    "users": users,
                    **{
                        k: summary[k]
                        for k in ("requests", "rps", "p50_ms", "p95_ms", "p99_ms", "failures", "degraded_share")
                    },
                    "cores_used": summary["meta"]["cores_used"],
                    "locust_exit_code": summary["meta"]["locust_exit_code"],
                }
            )
    sweep = {"runs": runs, "duration": args.duration, "target": stack.target, "cpus": os.cpu_count()}
    (args.out / "sweep.json").write_text(json.dumps(sweep, indent=1))
    return sweep


def failed(result: dict[str, Any]) -> list[str]:
    """What went wrong in a run or sweep: failed requests, or locust itself exiting non-zero."""
    runs = result["runs"] if "runs" in result else [{**result, "locust_exit_code": result["meta"]["locust_exit_code"]}]
    problems = []
    for run in runs:
        where = f"{run['users']} users: " if "runs" in result else ""
        if run["failures"]:
            problems.append(f"{where}{run['failures']} of {run['requests']} requests failed")
        elif not run["requests"]:
            problems.append(f"{where}no request completed (is the target reachable?)")
        elif run["locust_exit_code"]:
            problems.append(f"{where}locust exited with code {run['locust_exit_code']}")
    return problems


def cli(argv: list[str] | None = None) -> None:
    """``python -m loadtest``: exits 1 when any request failed, so a pipeline can gate on it."""
    problems = failed(main(argv))
    if problems:
        print(f"loadtest failed: {'; '.join(problems)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    cli()
