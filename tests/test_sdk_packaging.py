"""The SDK as its own distribution: `pip install ./clients` in a fresh venv, on every Python it claims.

Each case builds a venv, installs clients/ from this tree (with the Makefile's package indexes) and
then, outside the repository and with no PYTHONPATH, checks that the server's heavy dependencies
are absent and that the SDK imports, builds a request and answers ``recsys-client --help``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the server, training and export need; the SDK must pull in none of them.
HEAVY = ("torch", "tritonclient", "pandas", "numpy", "scipy")
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def _sdk_project() -> dict[str, object]:
    with (ROOT / "clients" / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def _claimed_versions() -> list[str]:
    """Every 3.X the SDK's classifiers name (the requires-python lower bound is checked below)."""
    classifiers = _sdk_project()["classifiers"]
    assert isinstance(classifiers, list)
    return [c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]


def _interpreter(version: str) -> Path | None:
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return Path(sys.executable)
    found = sorted(PYENV.glob(f"{version}.*/bin/python"))
    return found[-1] if found else None


def _local_indexes() -> list[str]:
    """The Makefile's LOCAL_INDEXES (wheels on this disk), so the install resolves as `make setup` does."""
    match = re.search(r"^LOCAL_INDEXES \?= (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "Makefile has no LOCAL_INDEXES"
    return shlex.split(match.group(1))


def test_sdk_claims_the_versions_it_is_tested_on() -> None:
    assert _sdk_project()["requires-python"] == ">=3.10"
    assert _claimed_versions() == ["3.10", "3.11", "3.12", "3.13"]


# A client a user runs: it builds the request the server would get, without a server.
CHECK = """
import importlib.util, sys
heavy = [name for name in sys.argv[1:] if importlib.util.find_spec(name) is not None]
assert not heavy, f"installed with the SDK: {heavy}"
import clients, recsys.v1.recommender_pb2 as pb
assert "site-packages" in clients.__file__, clients.__file__
from clients.admin import RolloutAdminClient
from clients.aio import AsyncRecommenderClient
from clients.api import RecommenderApi
from clients.sync import RecommenderClient

class Capture(RecommenderApi):
    def _call(self, method, request, parse, timeout):
        return method, request

method, request = Capture().recommend(42, k=5, ratings={1: 5.0}, strategy="sae", genres=["Drama"])
assert method == "Recommend" and isinstance(request, pb.RecommendRequest)
assert request.user_id == "42" and request.k == 5 and request.strategy == pb.STRATEGY_SAE
assert pb.RecommendRequest.FromString(request.SerializeToString()) == request
print("ok", sys.version_info[:2])
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("version", _claimed_versions())
def test_pip_install_clients_in_a_fresh_venv(version: str, tmp_path: Path) -> None:
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} here (looked in {PYENV})")
    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    # No PYTHONPATH and a cwd outside the repository: only what pip installed can be imported.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    python_in_venv = str(bin_dir / "python")
    install = run(python_in_venv, "-m", "pip", "install", "-q", *_local_indexes(), str(ROOT / "clients"), timeout=480)
    assert install.returncode == 0, install.stderr[-3000:]
    check = run(python_in_venv, "-c", CHECK, *HEAVY)
    assert check.returncode == 0 and check.stdout.startswith("ok"), check.stderr[-3000:]
    helped = run(str(bin_dir / "recsys-client"), "--help")
    assert helped.returncode == 0 and "recommend" in helped.stdout, helped.stderr


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _lower_bound(dependencies: list[str], name: str) -> tuple[int, ...]:
    bounds = [m.group(1) for d in dependencies if (m := re.fullmatch(rf"{name}>=([\d.]+)(,<[\d.]+)?", d))]
    assert len(bounds) == 1, f"no single {name}>=X in {dependencies}"
    return _version(bounds[0])


@pytest.mark.parametrize("pyproject", ["clients/pyproject.toml", "pyproject.toml"])
def test_dependency_floors_accept_the_committed_stubs(pyproject: str) -> None:
    """Each *_pb2.py refuses a protobuf runtime older than its gencode, each *_pb2_grpc.py an older
    grpcio: a lower bound below them installs, then fails at import."""
    with (ROOT / pyproject).open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    stubs = sorted((ROOT / "protos" / "recsys").rglob("*_pb2*.py"))
    assert len(stubs) == 4
    for stub in stubs:
        text = stub.read_text()
        if stub.name.endswith("_grpc.py"):
            generated = re.search(r"^GRPC_GENERATED_VERSION = '([\d.]+)'", text, re.MULTILINE)
            assert generated, stub
            assert _lower_bound(dependencies, "grpcio") >= _version(generated.group(1)), stub.name
        else:
            generated = re.search(r"^# Protobuf Python Version: ([\d.]+)$", text, re.MULTILINE)
            assert generated, stub
            assert _lower_bound(dependencies, "protobuf") >= _version(generated.group(1)), stub.name
