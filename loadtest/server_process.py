"""Our server as a child process (as deployed: its own interpreter), for benchmarks and load tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from clients.errors import RecsysError
from clients.sync import RecommenderClient
from server.paths import ROOT
from server.triton.launcher import control_key_for, free_port


def start_server(
    triton_url: str, state: Path, *extra: str, timeout: float = 180.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m server`` against ``triton_url`` on a free port; return once it is SERVING."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "server",
        "--triton-url",
        triton_url,
        "--grpc-port",
        str(port),
        "--feedback-db",
        str(state / "feedback.sqlite"),
        "--log-level",
        "WARNING",
        *extra,
    ]
    if "--admin-port" not in extra:  # the default 50052 would collide between children and with a running server
        command += ["--admin-port", "null"]
    # The child imports this checkout's code and generated stubs, whatever else is installed.
    path = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "protos"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    key = control_key_for(triton_url)
    if key:  # an embedded Triton this process started: the child needs its control key to load models
        env["RECSYS_TRITON_CONTROL_KEY"] = key  # the environment, not argv (which `ps` shows)
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    with RecommenderClient(target, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with code {process.returncode}")
            try:
                if client.health() == "SERVING":
                    return process, target
            except RecsysError:  # not up yet
                pass
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the server did not report SERVING within {timeout:.0f} s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # SIGTERM: NOT_SERVING, drain, exit
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
