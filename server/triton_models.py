"""The Triton models the server calls: names, readiness, latency estimates and the calls themselves.

Models are named ``<role>_<variant>`` (``sae_torchscript_fp32``); the roles are the catalogue
scorers (``sae``, ``rbm``, ``ease``) and the two halves of the two-tower model. One asyncio gRPC channel
is shared by the control calls (tritonclient) and one by the inference calls, which build Triton's
protobufs directly (``server.triton_wire``: tritonclient's tensor wrappers were a measurable share
of the server's CPU per request). A call that fails or runs out of time raises ``ModelCallError`` with a
short reason; the caller degrades its answer, it never crashes. Readiness is refreshed by the
health watcher, and a call failing with UNAVAILABLE marks its model not ready until then, so
requests stop waiting on a Triton that is gone.

Versions are pinned: each serving bundle names the exact version of every model it uses
(``want``), calls carry that version, and loads name versions explicitly (a ``version_policy:
specific`` config override), so a rollout can bring a candidate's versions up beside the live
ones and retire the old ones later (``server.runtime``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc.aio as tritonaio
from google.protobuf import json_format, text_format
from recsys import contract
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from server.latency import LatencyBook
from server.tracing import traceparent_headers, triton_call
from server.triton_wire import first_rows, infer_request

log = logging.getLogger(__name__)
# The roles (catalogue scorers, the one-graph two-tower model and its halves) are the contract's.
ROLES = tuple(contract.ROLES)
OPTIONAL_ROLES = contract.OPTIONAL_ROLES
LOAD_RETRY_S = 30.0
# Triton answers model-repository/config calls only with this header (--grpc-restricted-protocol).
CONTROL_HEADER = "triton-grpc-protocol-recsys-triton-key"  # Triton prefixes the key name it was given
# gRPC's default reconnect backoff grows to 2 minutes; a Triton that restarts should be found in seconds.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
]
PRECISIONS = contract.PRECISIONS  # precision asked for -> variants that provide it, preferred first
model_name = contract.model_name


class ModelLoadError(RuntimeError):
    """Triton could not load the versions asked for; the message names the model and says why."""


class ModelCallError(RuntimeError):
    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"{model}: {reason}")
        self.model, self.reason = model, reason


@dataclass(frozen=True)
class CallResult:
    model: str
    version: str
    ms: float
    outputs: dict[str, np.ndarray]


class ModelPool:
    def __init__(
        self,
        url: str,
        available: list[str],
        variants: list[str],
        default_variant: str,
        latency: LatencyBook,
        repository: Path | None = None,
        control_key: str | None = None,
    ) -> None:
        """``available``: model names in the repository (the bundle manifest); ``variants``: those to use;
        ``repository``: where the configs are read for version-pinned loads; ``control_key``: the secret
        Triton's control APIs want (None: an unrestricted Triton)."""
        self.url = url
        self.control_headers = {CONTROL_HEADER: control_key} if control_key else None
        self.latency = latency
        self.default_variant = default_variant
        self.by_role = {r: [model_name(r, v) for v in variants if model_name(r, v) in available] for r in ROLES}
        self.models = [m for names in self.by_role.values() for m in names]
        self.primary = {model_name(r, default_variant) for r in ROLES} & set(self.models)
        self.first: list[set[str]] = []  # loaded in turn before the rest of the default variant (``load_first``)
        self.ready: set[str] = set()
        self.live = False
        self._failed_at: dict[str, float] = {}
        self.versions: dict[str, list[str]] = {}  # model -> versions READY in Triton
        self.repository = repository
        # model -> owner (a bundle version) -> the model version it pins; loads keep the union loaded.
        self._wanted: dict[str, dict[str, str]] = {}
        self._loading: set[str] = set()  # models with a load in flight (the watcher must not start another)
        self.lost = asyncio.Event()  # set when a call finds Triton gone: the health watcher looks at once
        self.client: tritonaio.InferenceServerClient | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: service_pb2_grpc.GRPCInferenceServiceStub | None = None

    async def open(self) -> None:
        self.client = tritonaio.InferenceServerClient(self.url, channel_args=CHANNEL_ARGS)
        self._channel = grpc.aio.insecure_channel(self.url, options=CHANNEL_ARGS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self._channel is not None:
            await self._channel.close(None)  # grace None (the default): calls in flight are cancelled
            self._channel, self._stub = None, None

    def resolve(self, role: str, precision: str) -> str | None:
        """The model for ``role`` at ``precision``: "auto", or a precision not loaded for this role,
        means the default variant (the answer's model calls say which ran)."""
        for variant in (*PRECISIONS.get(precision, ()), self.default_variant):
            if model_name(role, variant) in self.by_role[role]:
                return model_name(role, variant)
        named = self.by_role[role]
        return named[0] if named else None

    def p95(self, model: str) -> float:
        return self.latency.p95(model)

    async def refresh(self, load: bool, staged: bool = False) -> bool:
        """Ask Triton which models are ready (loading missing ones if ``load``: with ``staged``, only the
        default variant's when it misses some); True when Triton is up."""
        assert self.client is not None
        try:
            self.live = await self.client.is_server_live(client_timeout=1.0)
            index = await self.client.get_model_repository_index(
                as_json=True, client_timeout=2.0, headers=self.control_headers
            )
        except InferenceServerException as err:
            if "restricted" in (err.message() or ""):  # a live Triton that wants another control key
                log.error("Triton refused the control call: %s; set triton_control_key", err.message())
            self.live = False
        if not self.live:
            self.ready.clear()
            return False
        states: dict[str, list[str]] = {}
        for entry in index.get("models", []):
            if entry.get("state") == "READY":
                states.setdefault(entry["name"], []).append(entry.get("version", ""))
        self._set_states(states)
        now = time.monotonic()
        # A model that failed to load is retried after a pause, not on every health check.
        missing = (
            [
                m
                for m in self.models
                if self.wanted(m) - set(states.get(m, ()))
                and m not in self._loading
                and now - self._failed_at.get(m, -1e9) > LOAD_RETRY_S
            ]
            if load
            else []
        )
        # What the full plan calls, then the rest of the default variant, then the others (each at the
        # next call when ``staged``): answers are whole again once the first are ready, whereas a
        # restarted Triton loading every variant at once (a Python stub each, importing torch) kept
        # them waiting behind the rest on a small machine.
        tiers = (*(tier & self.primary for tier in self.first), self.primary, set(missing))
        loaded, done = False, set()
        for tier in tiers:
            batch = [m for m in missing if m in tier and m not in done]
            if not batch:
                continue
            done.update(batch)
            # Triton loads models in parallel; one failing is logged and stays not ready.
            loaded = any(await asyncio.gather(*(self._load(m) for m in batch))) or loaded
            if staged:
                break
        if not loaded:
            return True
        live = await self.refresh(load=False)
        for model in done:
            # Triton answers a load of versions {1, 77} without folder 77 with success and version 1
            # alone: a failure too, retried after the pause (not reloaded on every check).
            if self.wanted(model) - set(self.versions.get(model, ())):
                self._failed_at[model] = time.monotonic()
        return live

    def load_first(self, branches: list[str], fused: bool = False) -> None:
        """Models a restarted Triton gets before the rest, in turn: the full-rung model when the
        server calls it (``fused``), then the default variant of what these model branches call
        (the full plan's; the first alternative the repository has). A Python stub imports torch in
        ~1.3 s of CPU, so on a small busy machine one stub (the full-rung model) or three (the
        two-tower graph, RBM, EASE) make answers whole again well before the default variant's all."""
        per_model: set[str] = set()
        for branch in branches:
            for roles in contract.BRANCHES.get(branch, ()):
                models = {model_name(role, self.default_variant) for role in roles}
                if models <= set(self.models):
                    per_model |= models
                    break
        full_rung = {model_name(contract.FULL_RUNG, self.default_variant)} & set(self.models) if fused else set()
        self.first = [tier for tier in (full_rung, per_model) if tier]

    def _set_states(self, states: dict[str, list[str]]) -> None:
        self.ready = {m for m in self.models if m in states}
        self.versions = {m: sorted(states[m], key=_numeric) for m in self.ready}

    def want(self, owner: str, versions: dict[str, str]) -> None:
        """``owner`` (a bundle) needs these model versions loaded; refresh loads them beside the others."""
        for model, version in versions.items():
            self._wanted.setdefault(model, {})[owner] = str(version)

    def release(self, owner: str) -> None:
        for owners in self._wanted.values():
            owners.pop(owner, None)

    def wanted(self, model: str) -> set[str]:
        return set(self._wanted.get(model, {}).values())

    def has(self, model: str, version: str) -> bool:
        return version in self.versions.get(model, ())

    async def load_versions(self, model: str, versions: set[str]) -> None:
        """Load exactly ``versions`` of ``model``; Triton keeps unchanged versions loaded and the old
        set serving if the load fails. Raises ModelLoadError with Triton's reason."""
        assert self.client is not None
        if set(self.versions.get(model, ())) == versions:
            return  # already so: a reload would only cost time
        config = self._config(model)
        config.version_policy.Clear()
        config.version_policy.specific.versions.extend(sorted(int(v) for v in versions))
        self._loading.add(model)
        log.info("loading model=%s versions=%s", model, ",".join(sorted(versions, key=_numeric)))
        try:
            await self.client.load_model(
                model,
                config=json_format.MessageToJson(config, preserving_proto_field_name=True),
                client_timeout=120.0,
                headers=self.control_headers,
            )
        except InferenceServerException as err:
            raise ModelLoadError(
                f"Triton could not load {model} versions {sorted(versions, key=_numeric)}: {err.message()}"
            ) from None
        finally:
            self._loading.discard(model)
        log.info("loaded model=%s versions=%s", model, ",".join(sorted(versions, key=_numeric)))

    def _config(self, model: str) -> mc.ModelConfig:
        path = self.repository / model / "config.pbtxt" if self.repository is not None else None
        if path is None or not path.is_file():
            raise ModelLoadError(f"no config for {model} at {path}; set model_repository to Triton's repository")
        return text_format.Parse(path.read_text(), mc.ModelConfig())

    async def _load(self, model: str) -> bool:
        # The versions already loaded stay: another bundle (a rollout, a replica) may be using them.
        try:
            await self.load_versions(model, self.wanted(model) | set(self.versions.get(model, ())))
        except ModelLoadError as err:
            log.warning("could not load model=%s reason=%s", model, err)
            self._failed_at[model] = time.monotonic()
            return False
        return True

    @triton_call
    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: tuple[str, ...],
        timeout_s: float,
        request_id: str = "",
        version: str = "",
        latency: LatencyBook | None = None,
    ) -> CallResult:
        """One call; ``version`` pins the model version ("" lets Triton pick), ``latency`` is the book
        the time goes to (each bundle keeps its own, so a candidate's speed never steers the live plans)."""
        if model not in self.ready or self._stub is None or (version and not self.has(model, version)):
            raise ModelCallError(model, f"version {version} not ready" if version else "not ready")
        latency = latency or self.latency
        request = infer_request(model, version, inputs, outputs, request_id)
        started = time.perf_counter()
        # The remaining budget travels with the call as its gRPC deadline, which gRPC enforces on
        # our side too (no asyncio.wait_for: a task per call for the same timer), and Triton cancels
        # a request whose deadline passed. A cancelled RPC cancels this task, and so the gRPC call
        # to Triton. Not also as Triton's own per-request `timeout`: with it, Triton 2.51 left some
        # batched requests to the Python-backend models unanswered until the hard limit.
        try:
            # The caller's trace continues into Triton (no metadata at all when tracing is off).
            traced = tuple(traceparent_headers().items()) or None
            response = await self._stub.ModelInfer(request, timeout=timeout_s, metadata=traced)
        except asyncio.CancelledError:  # cut off at the request's hard limit: at least this slow
            latency.observe(model, (time.perf_counter() - started) * 1000)
            raise
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                self.ready.discard(model)
                self.lost.set()
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # The estimate must learn that this model is slow, or the planner keeps choosing it.
                latency.observe(model, (time.perf_counter() - started) * 1000)
                raise ModelCallError(model, f"no answer within {timeout_s * 1000:.0f} ms") from None
            raise ModelCallError(model, err.details() or str(err.code())) from None
        ms = (time.perf_counter() - started) * 1000
        latency.observe(model, ms)
        try:
            return CallResult(model, response.model_version, ms, first_rows(response, outputs))
        except KeyError as err:  # a graph exported without an output the server reads
            raise ModelCallError(model, f"no output {err} in Triton's answer") from None


def _numeric(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)
