"""Start, watch and stop the embedded Triton.

The binary, its libraries and the Python backend come from the nvidia-pytriton wheel (installed
by ``make setup`` into ``.triton/``). The launcher assembles a backend directory holding the
Python backend plus our Python-based stand-ins for the ``onnxruntime`` and ``pytorch`` backends,
so a model repository written for the NGC container loads here unchanged. Triton runs with
explicit model control on loopback ports, its log goes to the ``triton`` logger, and it dies
with its parent (PR_SET_PDEATHSIG), so no server outlives the process that started it.

Locked control plane: Triton's model-repository and model-config APIs (load/unload can lead to
code execution) answer only calls carrying the ``triton-grpc-protocol-recsys-triton-key`` header with a secret made up
per launcher (``control_key``); ``control_key_for(url)`` gives it to a server in this process.
With ``supervise=True`` a Triton that exits is restarted on the same ports: at once (each second of
delay is a second of degraded answers), unless it was restarted less than ``STABLE_S`` before; a
Triton that keeps exiting waits a doubling backoff (the server's health watcher then loads its models).

    python -m server.triton --model-repository model_repository --load all
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from server.paths import TRITON_HOME

log = logging.getLogger(__name__)
triton_log = logging.getLogger("triton")
SHIMS = Path(__file__).resolve().parent / "backends"
HOME_ENV = "RECSYS_TRITON_HOME"
CONTROL_KEY_NAME = "recsys-triton-key"
# Triton prefixes the key name on gRPC; the same value as server.triton_models.CONTROL_HEADER.
CONTROL_HEADER = f"triton-grpc-protocol-{CONTROL_KEY_NAME}"
RESTRICTED = "model-repository,model-config"
_control_keys: dict[str, str] = {}  # grpc url -> key, for the launchers of this process
# A Triton that exits again within this long of its last restart counts as crash-looping: it waits.
STABLE_S = 60.0
FIRST_BACKOFF_S = 0.5
# tritonserver 2.51 now and then aborts while it starts (SIGABRT from gRPC's event engine: "epoll_wait
# error: Bad file descriptor"), seen once in CI on a restart. A start that a signal ended is tried again
# on the same ports; one that exits with a status (a bad flag, a bad repository) is not: it would again.
START_ATTEMPTS = 3
PORTS_FREE_WAIT_S = 5.0
# The control channel polls a starting Triton: gRPC's default reconnect backoff (1 s, growing) after
# the first refused connection made the launcher see a restarted Triton live most of a second late.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),  # tritonclient's own defaults
    ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def control_key_for(url: str | None) -> str | None:
    """The control key of the embedded Triton this process started at ``url`` (None: not one of ours)."""
    return _control_keys.get(url or "")


class TritonNotFound(RuntimeError):
    """The tritonserver binary (or its Python backend) is not where we looked."""


class TritonStartError(RuntimeError):
    """Triton did not come up; the message carries the end of its log."""


class TritonCrashedStarting(TritonStartError):
    """tritonserver was ended by a signal before it was live: worth another try."""


class ModelLoadError(RuntimeError):
    """Triton refused to load a model; the message names the model and says why."""


def find_home(explicit: Path | None = None) -> Path:
    """The wheel's ``pytriton/tritonserver`` folder.

    A location given as an argument or in ``$RECSYS_TRITON_HOME`` is the only place looked at (a
    wrong setting is an error, not a silent fallback); otherwise ``.triton/`` then site-packages.
    """
    if explicit or os.environ.get(HOME_ENV):
        candidates = [Path(explicit or os.environ[HOME_ENV])]
    else:
        candidates = [
            TRITON_HOME / "pytriton" / "tritonserver",
            *(Path(p) / "pytriton" / "tritonserver" for p in sys.path if p),
        ]
    for home in candidates:
        if (home / "bin" / "tritonserver").is_file():
            return home
    looked = ", ".join(str(c) for c in candidates[:3])
    raise TritonNotFound(
        f"tritonserver binary not found (looked in {looked}); run `make setup`, which installs "
        f"nvidia-pytriton into .triton/, or set ${HOME_ENV} to a pytriton/tritonserver folder"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class Ports:
    grpc: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)

    def all(self) -> tuple[int, int, int]:
        return self.grpc, self.http, self.metrics


def prepare_backends(home: Path, target: Path) -> Path:
    """A backend directory: Python backend + stub for this interpreter + our onnxruntime/pytorch stand-ins."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonNotFound(f"no Python backend stub for Python {version} in {home / 'python_backend_stubs'}")
    python = target / "python"
    python.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(home / "backends" / "python" / name, python / name)
    shutil.copy2(stub, python / "triton_python_backend_stub")
    for shim in SHIMS.iterdir():
        if (shim / "model.py").is_file():
            (target / shim.name).mkdir(exist_ok=True)
            shutil.copy2(shim / "model.py", target / shim.name / "model.py")
            # The stand-ins share how they pad, run and split a batch.
            shutil.copy2(SHIMS / "batching.py", target / shim.name / "batching.py")
    return target


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedTriton:
    """One tritonserver process serving ``model_repository`` on loopback ports."""

    def __init__(
        self,
        model_repository: Path,
        *,
        models: tuple[str, ...] = (),
        ports: Ports | None = None,
        home: Path | None = None,
        startup_timeout: float = 60.0,
        verbose: int = 0,
        supervise: bool = False,
        max_backoff_s: float = 10.0,
        control_key: str | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.control_key = control_key or secrets.token_urlsafe(24)
        self.supervise, self.max_backoff_s = supervise, max_backoff_s
        self.restarts = 0
        self._restarted_at = -STABLE_S
        self._stopping = threading.Event()
        self.models = tuple(models)
        self.ports = ports or Ports()
        self.home = find_home(home)
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self.process: subprocess.Popen[str] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_tail: deque[str] = deque(maxlen=200)
        self._client: grpcclient.InferenceServerClient | None = None
        atexit.register(self.stop)  # a no-op unless running; stop() is idempotent

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.grpc_url, channel_args=CHANNEL_ARGS)
        return self._client

    def log_tail(self, lines: int = 30) -> str:
        return "".join(list(self._log_tail)[-lines:])

    def _command(self, backends: Path) -> list[str]:
        return [
            str(self.home / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={self.home / 'caches'}",
            "--model-control-mode=explicit",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.ports.grpc}",
            "--http-address=127.0.0.1",
            f"--http-port={self.ports.http}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=false",
            # Triton's default is 4 loads at a time: a fifth model of the default variant (five roles)
            # would start its stub only after one of the first four, and one stub uses one core.
            "--model-load-thread-count=8",
            # Our configs are complete. With auto-complete on, the Python backend starts one stub per
            # model just to ask it for config changes (importing torch, ~half of a model's load time),
            # then another per instance: a restarted Triton came back to its models twice as slowly.
            "--disable-auto-complete-config",
            f"--grpc-restricted-protocol={RESTRICTED}:{CONTROL_KEY_NAME}={self.control_key}",
            f"--http-restricted-api={RESTRICTED}:{CONTROL_KEY_NAME}={self.control_key}",
            f"--log-verbose={self.verbose}",
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = self.home.parents[1] / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [env.get("LD_LIBRARY_PATH"), str(libs)]))
        # The Python backend stub finds its interpreter (and so our venv's packages) through PATH.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def _forward_logs(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._log_tail.append(line)
            level = {"E": logging.ERROR, "W": logging.WARNING}.get(line[:1], logging.DEBUG)
            triton_log.log(level, "%s", line.rstrip())

    def start(self) -> EmbeddedTriton:
        if self.process is not None and self.process.poll() is None:
            return self
        self._stopping.clear()
        self._launch()
        _control_keys[self.grpc_url] = self.control_key
        if self.supervise:
            threading.Thread(
                target=self._supervise, args=(self.process,), name="triton-supervisor", daemon=True
            ).start()
        return self

    def _supervise(self, process: subprocess.Popen[str] | None) -> None:
        """Restart a Triton that exits (not one stop() ended) on the same ports: at once, unless the last
        restart was under ``STABLE_S`` ago or a start failed: then with a doubling backoff up to ``max_backoff_s``."""
        backoff = 0.0
        while process is not None:
            process.wait()
            if self._stopping.is_set() or process is not self.process:
                return
            crash_looping = time.monotonic() - self._restarted_at < STABLE_S
            backoff = min(max(backoff * 2, FIRST_BACKOFF_S), self.max_backoff_s) if crash_looping else 0.0
            log.warning("triton exited code=%s; restarting in %.1f s", process.returncode, backoff)
            while not self._stopping.wait(backoff):
                try:
                    self._cleanup()
                    self._launch()
                    if self._stopping.is_set():  # stop() came while this one was starting
                        self._terminate()
                        return
                    self.restarts += 1
                    self._restarted_at = time.monotonic()
                    process = self.process
                    break
                except (TritonStartError, OSError) as err:
                    log.error("triton restart failed: %s", err)
                    backoff = min(max(backoff * 2, FIRST_BACKOFF_S), self.max_backoff_s)
            else:
                return

    def _launch(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._launch_once()
                return
            except TritonCrashedStarting as err:
                if attempt == START_ATTEMPTS or self._stopping.is_set():  # stop() ended it: no retry
                    raise
                log.warning(
                    "tritonserver died while starting (attempt %d of %d); again: %s", attempt, START_ATTEMPTS, err
                )
                self._cleanup()
                self._wait_ports_free(PORTS_FREE_WAIT_S)

    def _wait_ports_free(self, timeout: float) -> None:
        """The dead server's stubs leave with it (PR_SET_PDEATHSIG), but not in the same instant."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(port_in_use(port) for port in self.ports.all()):
            time.sleep(0.05)

    def _launch_once(self) -> None:
        if not self.model_repository.is_dir():
            raise TritonStartError(f"model repository {self.model_repository} does not exist")
        for kind, port in zip(("grpc", "http", "metrics"), self.ports.all(), strict=True):
            if port_in_use(port):
                raise TritonStartError(f"cannot start Triton: {kind} port {port} on 127.0.0.1 is already in use")
        self._workdir = tempfile.TemporaryDirectory(prefix="recsys-triton-")
        backends = prepare_backends(self.home, Path(self._workdir.name) / "backends")
        self._log_tail.clear()
        self._close_client()  # a fresh channel: the old one is in reconnect backoff to a Triton that died
        self.process = subprocess.Popen(
            self._command(backends),
            env=self._environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._forward_logs, args=(self.process.stdout,), daemon=True).start()
        self._wait_live()
        log.info("triton started pid=%d grpc=%s metrics=%s", self.process.pid, self.grpc_url, self.metrics_url)
        for model in self.models:
            self.load(model)

    def _wait_live(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                self._terminate()
                crashed = code is not None and code < 0
                error = TritonCrashedStarting if crashed else TritonStartError
                raise error(f"tritonserver exited with code {code} while starting:\n{self.log_tail()}")
            try:
                if self.client.is_server_live():
                    return
            except InferenceServerException:
                pass
            time.sleep(0.05)
        self._terminate()
        raise TritonStartError(f"tritonserver not live after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def load(self, model: str) -> None:
        """Load (or reload, picking up new versions and config) one model; raise naming it on failure."""
        try:
            self.client.load_model(model, headers=self.control_headers)
        except InferenceServerException as err:
            raise ModelLoadError(f"Triton could not load model '{model}': {err.message()}") from None
        if not self.client.is_model_ready(model):
            raise ModelLoadError(f"Triton loaded model '{model}' but it is not ready")

    reload = load

    def unload(self, model: str) -> None:
        self.client.unload_model(model, headers=self.control_headers)

    @property
    def control_headers(self) -> dict[str, str]:
        return {CONTROL_HEADER: self.control_key}

    def is_ready(self) -> bool:
        try:
            return self.process is not None and self.process.poll() is None and self.client.is_server_ready()
        except InferenceServerException:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group (Triton, its stubs), then SIGKILL what is left; no restart."""
        self._stopping.set()
        _control_keys.pop(self.grpc_url, None)
        self._terminate(timeout)

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _terminate(self, timeout: float = 15.0) -> None:
        self._close_client()
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
            log.info("triton stopped code=%s", process.returncode)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def restart(self) -> EmbeddedTriton:
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedTriton:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
