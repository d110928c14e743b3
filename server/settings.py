"""The server's one typed configuration: defaults < TOML file < ``RECSYS_*`` environment < CLI flags.

    python -m server --config server.toml --grpc-port 50051 --default-budget-ms 150
    RECSYS_GRPC_PORT=50052 python -m server

Every field is a flag (``--field-name``); lists and maps take JSON (``--variants '["torchscript_fp32"]'``).
"""

from __future__ import annotations

import argparse
import json
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource
from recsys import contract

from server.paths import MODEL_REPOSITORY, ROOT, SERVING_BUNDLE, STATE

_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="forbid")

    # Every field is a flag, an environment variable and a TOML key; its description is the
    # flag's --help text, so this class is the one place a setting is documented.
    # Where the models and the serving bundle are.
    model_repository: Path = Field(MODEL_REPOSITORY, description="the Triton model repository export wrote")
    bundle: Path = Field(SERVING_BUNDLE, description="a bundle folder, or its parent (newest version)")
    # Triton: an address to use, or start the embedded one on free loopback ports.
    triton_url: str | None = Field(
        None, description="host:port of a running Triton's gRPC endpoint; unset: start the embedded one"
    )
    embedded_triton: bool = Field(True, description="start the embedded Triton when no triton_url is given")
    load_models: bool = Field(
        True, description="ask Triton (explicit model control) to load what we need, again after a restart"
    )
    variants: list[str] = Field(
        ["torchscript_fp32", "torchscript_int8"], description="the variants loaded and planned with (JSON list)"
    )
    default_variant: str = Field("torchscript_fp32", description="the variant used when a request asks for auto")
    # Our gRPC server.
    host: str = Field("127.0.0.1", description="address the public gRPC port binds to")
    grpc_port: int = Field(50051, description="public gRPC port; 0 = pick a free port")
    metrics_port: int | None = Field(9095, description="Prometheus /metrics port; 0 = free port, null = off")
    max_concurrent_rpcs: int = Field(
        256, description="calls in flight beyond this get RESOURCE_EXHAUSTED (health and reflection never count)"
    )
    # The largest valid request (5000 ratings + 10000 exclusions) is under 200 KiB.
    max_message_bytes: int = Field(256 * 1024, description="largest request accepted, bytes")
    max_metadata_bytes: int = Field(
        16 * 1024, ge=1024, description="largest request metadata (headers, counted as HTTP/2 does) accepted, bytes"
    )
    # Connections are closed after this long idle / this old (in-flight calls get the grace), so
    # no client holds a connection, or a load balancer's choice of pod, forever.
    max_connection_idle_s: float = Field(300.0, description="close a connection idle this long, seconds")
    max_connection_age_s: float = Field(1800.0, description="close a connection this old, seconds")
    max_connection_age_grace_s: float = Field(
        30.0, description="in-flight calls' grace when a connection ages out, seconds"
    )
    shutdown_grace_s: float = Field(5.0, description="on SIGTERM/Ctrl-C, how long in-flight calls may drain")
    blas_threads: int = Field(
        1, ge=1, description="numpy's BLAS threads in `python -m server`; more only compete with Triton for the cores"
    )
    # Security (docs in server/auth.py). "auto" = dev (no token needed, every role) only when
    # bound to a loopback host, so `make serve` stays one command; anywhere else a token is required.
    auth_mode: Literal["auto", "dev", "token"] = Field(
        "auto", description="auto: no token needed on a loopback host only; dev: never; token: always"
    )
    auth_jwt_public_key: Path | None = Field(
        None, description="PEM public key; JWTs signed with the matching private key are accepted"
    )
    auth_jwt_algorithms: list[str] = Field(["RS256", "ES256", "EdDSA"], description="JWT algorithms accepted")
    auth_jwt_audience: str | None = Field(None, description="required JWT aud claim, if set")
    auth_jwt_issuer: str | None = Field(None, description="required JWT iss claim, if set")
    auth_api_keys: Path | None = Field(
        None,
        description="JSON file {sha256 hex of a key: {name, roles, user_id?}}; `python -m server.apikeys` adds keys",
    )
    rate_limit_rps: float = Field(200.0, ge=0, description="per principal (0 = off); dev mode is not limited")
    rate_limit_burst: int = Field(400, ge=1, description="token-bucket burst per principal")
    tls_cert: Path | None = Field(None, description="PEM certificate chain; with tls_key: TLS on the public port")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(None, description="PEM CA: clients must present a certificate it signed (mTLS)")
    auth_client_certs: Path | None = Field(
        None,
        description='JSON file {"uri:...|dns:...|cn:...": {name, roles, '
        "user_id?}}: verified client certificates as credentials (mTLS)",
    )
    # Triton's model-repository/config APIs answer only calls with this header (--grpc-restricted-protocol).
    triton_control_key: str | None = Field(
        None, description="value of the recsys-triton-key header; the embedded Triton makes one up"
    )
    # Requests.
    max_k: int = Field(100, description="most items one request may ask for")
    max_ratings: int = Field(5000, description="most inline ratings in one request")
    max_exclusions: int = Field(10000, description="most excluded item ids in one request")
    max_feedback_events: int = Field(1000, description="most events in one RecordFeedback call")
    # Latency budgets.
    default_budget_ms: int = Field(250, description="latency budget of a request that sets none, ms")
    max_budget_ms: int = Field(10000, description="largest latency budget a request may ask for, ms")
    reserve_ms: float = Field(4.0, description="kept back from the budget for fusion, filters and the reply, ms")
    latency_window: int = Field(256, description="calls per model in the sliding p95")
    latency_prior_ms: float = Field(10.0, description="a model's latency estimate until it has answered, ms")
    latency_max_age_s: float = Field(
        60.0, description="older calls leave the p95 window, so a model seen slow gets tried again"
    )
    candidates: int = Field(200, description="candidates SAE and RBM score besides their own top-N")
    # SAE and RBM rank the two-tower's candidates (a second round) when the budget allows it;
    # false: every model in one round, ranking popularity/genre-profile candidates.
    two_stage: bool = Field(
        True, description="two rounds (two-tower candidates, then SAE and RBM) when the budget allows; false: one round"
    )
    # The full rung's two stages in one Triton call to the full-rung model (issue #14), tried first
    # when it is exported and ready; the per-model plans stay its degrade path. Measured 1.35-1.6x
    # the requests/s at 32 concurrent requests (docs/throughput.md, "The full rung in one call").
    fused_full_rung: bool = Field(
        True, description="try the full-rung model (the two-stage ensemble in one call) before the per-model calls"
    )
    # Admission (server/admission.py): per-model in-flight limits from the rate Triton serves, so
    # each admitted call fits its share of the budget; requests beyond them leave the model out.
    admission: bool = Field(True, description="per-model in-flight limits derived from the rate Triton serves")
    admission_floor: int = Field(8, ge=1, description="in-flight calls always allowed per model (lets batches form)")
    # Cold-start ladder.
    full_min_ratings: int = Field(
        contract.FULL_MIN_RATINGS, description="fewer ratings than this: the content rung, not the full ensemble"
    )
    content_weights: dict[str, float] = Field(
        {"two_tower": 0.5, "content": 0.25, "popularity": 0.25},
        description="fusion weights of the content rung (JSON map)",
    )
    min_segment_users: int = Field(20, description="smallest demographic segment popularity is conditioned on")
    # State.
    feedback_db: Path = Field(STATE / "feedback.sqlite", description="the SQLite store when store is not set")
    store: str | None = Field(
        None,
        description="feedback store and response cache: sqlite:///PATH (one node) "
        "or redis://HOST:PORT/DB (shared by replicas); default: sqlite at feedback_db",
    )
    dedupe_window_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="how long a shared (Valkey) store remembers feedback event ids: a retry within it is ignored",
    )
    profile_cache_size: int = Field(10_000, ge=1, description="user profiles kept in memory (LRU)")
    cache_ttl_s: float = Field(30.0, ge=0, description="Recommend response cache TTL; 0 = off")
    drift_window: int = Field(10_000, ge=10, description="observations per drift feature's rolling window")
    health_interval_s: float = Field(
        1.0, description="how often Triton's health and the rollout pointer are re-read, seconds"
    )
    log_json: bool = Field(True, description="one JSON object per log line; false: plain text")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    # Tracing (server/tracing.py): OpenTelemetry spans per RPC, stage and Triton call; off unless set.
    tracing_otlp_endpoint: str | None = Field(
        None,
        description="OTLP/gRPC collector spans are exported to (http://HOST:4317 plaintext, https:// TLS); "
        "unset: tracing off",
    )
    tracing_service_name: str = Field("recsys-server", description="service.name of the exported spans")
    tracing_sample_ratio: float = Field(
        1.0, ge=0, le=1, description="share of new traces kept; a call with a traceparent follows its caller's choice"
    )
    # Rollouts (server/rollout.py): the admin service and the guardrails that roll a candidate back.
    admin_host: str = Field(
        "127.0.0.1", description="admin service address; loopback by default, since it changes what every user gets"
    )
    admin_port: int | None = Field(50052, description="recsys.admin.v1 port; 0 = free port, null = off")
    rollout_state_dir: Path = Field(STATE / "rollout", description="the rollout pointer; replicas share it")
    rollout_shadow_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="share of requests answered again by both "
        "bundles side by side in shadow and canary, to compare them",
    )
    rollout_canary_percent: float = Field(10.0, gt=0, le=100, description="percent of users on the candidate in canary")
    rollout_drain_s: float = Field(
        10.0, description="longest wait for a retired bundle's in-flight calls before its versions unload, seconds"
    )
    rollout_min_samples: int = Field(100, description="candidate answers (and comparisons) before a guardrail can fire")
    rollout_max_error_rate_increase: float = Field(0.01, description="guardrail: candidate error rate over live's")
    rollout_max_p99_ratio: float = Field(1.5, description="guardrail: candidate p99 over live's")
    rollout_p99_slack_ms: float = Field(
        5.0, description="p99 may also exceed the ratio by this much (noise on small p99s), ms"
    )
    rollout_max_degraded_increase: float = Field(0.05, description="guardrail: candidate degraded share over live's")
    # Mean top-10 overlap of candidate and live on the same request, where both ran the same models
    # (ml-100k: two trainings of the same recipe 0.8; scrambled weights fail it).
    rollout_min_overlap: float = Field(0.5, description="guardrail: least mean top-10 overlap with live's answer")
    rollout_golden_min_overlap: float = Field(
        0.9, description="least top-10 overlap of a candidate's golden requests with what export recorded"
    )
    rollout_golden_tolerance: float = Field(
        1e-3,
        description="largest score difference from export's "
        "answer on golden requests, relative to 1 + its largest score",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_config_file.get())


class SettingsError(ValueError):
    """A setting is wrong; the message names it."""


def settings_parser() -> argparse.ArgumentParser:
    """One flag per Settings field, its help the field's description, default and environment variable."""
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="the recommendation gRPC server: the "
        "embedded Triton (unless --triton-url names one) and the gRPC server. "
        "Precedence: defaults < --config TOML < RECSYS_* environment < flags. Lists "
        "and maps take JSON, e.g. --variants '[\"torchscript_fp32\"]'.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="a TOML file with any of the settings below")
    for name, field in Settings.model_fields.items():
        # The flag's own default stays None: only flags given on the command line override the
        # TOML file and the environment.
        text = f"{field.description} (default: {_shown(field.default)}; env RECSYS_{name.upper()})"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            metavar=_metavar(field.annotation, field.default),
            help=text.replace("%", "%%"),
        )
    return parser


def _shown(default: Any) -> str:
    if isinstance(default, Path):
        return str(default.relative_to(ROOT)) if default.is_relative_to(ROOT) else str(default)
    return default if isinstance(default, str) else json.dumps(default)


def _metavar(annotation: Any, default: Any) -> str:
    if "Path" in str(annotation):
        return "PATH"
    if isinstance(default, bool):
        return "BOOL"
    if isinstance(default, list | dict):
        return "JSON"
    return "N" if isinstance(default, int | float) else "VALUE"


def load_settings(argv: list[str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``--config FILE`` (TOML), the environment and flags; ``overrides`` win over all."""
    args = vars(settings_parser().parse_args(argv))
    config = args.pop("config")
    if config is not None and not config.is_file():
        raise SettingsError(f"--config {config}: no such file")
    flags = {k: _parse_flag(v) for k, v in args.items() if v is not None}
    token = _config_file.set(config)
    try:
        return Settings(**{**flags, **overrides})
    except ValidationError as err:
        raise SettingsError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())) from None
    finally:
        _config_file.reset(token)


def _parse_flag(value: str) -> Any:
    # JSON for lists/maps/numbers/null; anything else stays a string for pydantic to coerce.
    if value[:1] in "[{" or value == "null":
        return json.loads(value)
    return value
