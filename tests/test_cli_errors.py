"""User errors at the command line: one line on stderr, exit status 2, never a traceback.

Export's case (nothing registered) is in tests/test_cli.py.

The subprocess cases run the CLIs as a user does (``python -m``), since a traceback only shows
there; the others call ``main`` in process to stay fast.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import clients.__main__ as client_cli
import loadtest.__main__ as loadtest_cli
import server.__main__ as server_cli
from server.paths import ROOT
from server.settings import Settings, settings_parser
from training import evaluate

GROUPLENS = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "protos")])
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        check=False,
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_training_without_data_says_where_movielens_comes_from(tmp_path: Path) -> None:
    """What `make serve` runs first on a clone with no ../shared: the default data folder is missing."""
    missing = tmp_path / "shared" / "data" / "movielens" / "ml-100k"
    done = run_module(
        "training.train", "--no-track", "--state-dir", str(tmp_path / "var"), env={"RECSYS_DATA": str(missing)}
    )
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith(f"training: {missing}: not a directory") and GROUPLENS in line and "DATA=" in line


def test_evaluate_without_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        evaluate.main(["--data", str(tmp_path / "nowhere"), "--state-dir", str(tmp_path)])
    assert exited.value.code == 2 and GROUPLENS in one_line(capsys.readouterr().err)


def test_client_cli_refuses_an_unknown_strategy_without_a_traceback() -> None:
    done = run_module("clients", "--target", "127.0.0.1:1", "recommend", "--strategy", "foo")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "invalid choice: 'foo'" in done.stderr and "two_tower" in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--target", "127.0.0.1:1", "recommend", "--rate", "5=x"],
        ["--target", "127.0.0.1:1", "--tls-roots", "/nonexistent/ca.pem", "health"],
    ],
)
def test_client_cli_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        sys.exit(client_cli.main(argv))
    assert exited.value.code == 2 and one_line(capsys.readouterr().err).startswith("error: ")


def test_server_help_describes_every_setting_with_its_default() -> None:
    text = " ".join(settings_parser().format_help().split())  # argparse wraps lines
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description: it would be an undocumented flag"
        flag = f"--{name.replace('_', '-')}"
        assert f"{flag} " in text and f"{' '.join(field.description.split())} (default: " in text, name
        assert f"env RECSYS_{name.upper()})" in text
    assert "(default: 50051;" in text and "(default: serving_bundle;" in text


def test_server_help_runs_as_a_command() -> None:
    done = run_module("server", "--help")
    assert done.returncode == 0 and "--rollout-golden-tolerance" in done.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--grpc-port", "not-a-port"], "grpc_port"),
        (["--config", "/nonexistent/server.toml"], "no such file"),
        (
            [
                "--bundle",
                "/nonexistent/bundle",
                "--triton-url",
                "127.0.0.1:1",
                "--metrics-port",
                "null",
                "--admin-port",
                "null",
            ],
            "make export",
        ),
    ],
)
def test_server_user_errors_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        server_cli.main(argv)
    line = one_line(capsys.readouterr().err)
    assert exited.value.code == 2 and line.startswith("server: ") and needle in line


def _run(failures: int, requests: int = 100, code: int = 0, **extra: Any) -> dict[str, Any]:
    return {"requests": requests, "failures": failures, **extra, "meta": {"locust_exit_code": code}}


def test_loadtest_verdict() -> None:
    assert loadtest_cli.failed(_run(0)) == []
    assert loadtest_cli.failed(_run(3)) == ["3 of 100 requests failed"]
    assert loadtest_cli.failed(_run(0, requests=0)) == ["no request completed (is the target reachable?)"]
    assert loadtest_cli.failed(_run(0, code=1)) == ["locust exited with code 1"]
    sweep = {
        "runs": [
            {"users": 1, "requests": 10, "failures": 0, "locust_exit_code": 0},
            {"users": 8, "requests": 80, "failures": 2, "locust_exit_code": 1},
        ]
    }
    assert loadtest_cli.failed(sweep) == ["8 users: 2 of 80 requests failed"]


def test_loadtest_exits_non_zero_when_requests_fail(tmp_path: Path) -> None:
    """Nothing listens on the target: every user fails, and the exit status says so."""
    done = run_module(
        "loadtest",
        "--target",
        "127.0.0.1:1",
        "--known-users",
        "1-5",
        "--users",
        "1",
        "--spawn-rate",
        "1",
        "--duration",
        "2s",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "loadtest failed: " in done.stderr and (tmp_path / "summary.json").is_file()


def _console_scripts() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["scripts"]


@pytest.mark.parametrize("script", sorted(_console_scripts()))
def test_console_scripts_answer_help(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What each [project.scripts] entry point does when installed: `recsys-... --help` (console
    scripts call the function with no arguments, so it reads sys.argv)."""
    module, _, attribute = _console_scripts()[script].partition(":")
    entry = getattr(importlib.import_module(module), attribute)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exited:
        entry()
    assert exited.value.code == 0 and "usage:" in capsys.readouterr().out
