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

ROOT = Path(__file__).resolve().parents[1]
_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="forbid")

    # Where the models and the serving bundle are.
    model_repository: Path = ROOT / "model_repository"
    bundle: Path = Field(ROOT / "serving_bundle", description="a bundle folder, or its parent (newest version)")
    # Triton: an address to use, or start the embedded one on free loopback ports.
    triton_url: str | None = None
    embedded_triton: bool = True
    load_models: bool = True  # ask Triton (explicit model control) to load what we need, again after a restart
    variants: list[str] = ["torchscript_fp32", "torchscript_int8"]  # the variants loaded and planned with
    default_variant: str = "torchscript_fp32"
    # Our gRPC server.
    host: str = "127.0.0.1"
    grpc_port: int = 50051  # 0 = pick a free port
    metrics_port: int | None = 9095  # Prometheus /metrics; 0 = free port, None = off
    max_concurrent_rpcs: int = 256  # beyond this, RESOURCE_EXHAUSTED (health and reflection never count)
    # The largest valid request (5000 ratings + 10000 exclusions) is under 200 KiB.
    max_message_bytes: int = 256 * 1024
    # Connections are closed after this long idle / this old (in-flight calls get the grace), so
    # no client holds a connection, or a load balancer's choice of pod, forever.
    max_connection_idle_s: float = 300.0
    max_connection_age_s: float = 1800.0
    max_connection_age_grace_s: float = 30.0
    shutdown_grace_s: float = 5.0
    blas_threads: int = Field(1, ge=1, description="numpy's BLAS threads in `python -m server`; more only "
                              "compete with Triton for the cores")
    # Security (docs in server/auth.py). "auto" = dev (no token needed, every role) only when
    # bound to a loopback host, so `make serve` stays one command; anywhere else a token is required.
    auth_mode: Literal["auto", "dev", "token"] = "auto"
    auth_jwt_public_key: Path | None = None  # PEM; JWTs signed with the matching private key
    auth_jwt_algorithms: list[str] = ["RS256", "ES256", "EdDSA"]
    auth_jwt_audience: str | None = None
    auth_jwt_issuer: str | None = None
    auth_api_keys: Path | None = None  # JSON: {sha256 hex of a key: {"name", "roles", "user_id"?}}
    rate_limit_rps: float = Field(200.0, ge=0, description="per principal (0 = off); dev mode is not limited")
    rate_limit_burst: int = Field(400, ge=1)
    tls_cert: Path | None = None  # PEM chain; with tls_key: TLS on the public port
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM: clients must present a certificate it signed (mTLS)
    # Triton's model-repository/config APIs answer only calls with this header (--grpc-restricted-protocol).
    triton_control_key: str | None = Field(None, description="value of the recsys-triton-key header; the "
                                           "embedded Triton makes one up")
    # Requests.
    max_k: int = 100
    max_ratings: int = 5000
    max_exclusions: int = 10000
    max_feedback_events: int = 1000
    # Latency budgets.
    default_budget_ms: int = 250
    max_budget_ms: int = 10000
    reserve_ms: float = 4.0  # kept back from the budget for fusion, filters and the reply
    latency_window: int = 256  # calls per model in the sliding p95
    latency_prior_ms: float = 10.0  # a model's estimate until it has answered
    latency_max_age_s: float = 60.0  # older calls leave the window, so a model seen slow gets tried again
    candidates: int = 200  # candidates SAE and RBM score besides their own top-N
    # SAE and RBM rank the two-tower's candidates (a second round) when the budget allows it;
    # false: every model in one round, ranking popularity/genre-profile candidates.
    two_stage: bool = True
    # Admission (server/admission.py): per-model in-flight limits from the rate Triton serves, so
    # each admitted call fits its share of the budget; requests beyond them leave the model out.
    admission: bool = True
    admission_floor: int = Field(8, ge=1, description="in-flight calls always allowed per model (lets batches form)")
    # Cold-start ladder.
    full_min_ratings: int = 10  # fewer ratings than this: the content rung
    content_weights: dict[str, float] = {"two_tower": 0.5, "content": 0.25, "popularity": 0.25}
    min_segment_users: int = 20  # smallest demographic segment popularity is conditioned on
    # State.
    feedback_db: Path = ROOT / "var" / "feedback.sqlite"  # the store when `store` is not set
    store: str | None = Field(None, description="feedback store and response cache: sqlite:///PATH (one node) "
                              "or redis://HOST:PORT/DB (shared by replicas); default: sqlite at feedback_db")
    dedupe_window_s: float = Field(7 * 24 * 3600.0, gt=0, description="how long a shared (Valkey) store "
                                   "remembers feedback event ids: a retry within it is ignored")
    profile_cache_size: int = Field(10_000, ge=1, description="user profiles kept in memory (LRU)")
    cache_ttl_s: float = Field(30.0, ge=0, description="Recommend response cache TTL; 0 = off")
    drift_window: int = Field(10_000, ge=10, description="observations per drift feature's rolling window")
    health_interval_s: float = 1.0
    log_json: bool = True
    log_level: str = "INFO"
    # Rollouts (server/rollout.py): the admin service and the guardrails that roll a candidate back.
    admin_host: str = "127.0.0.1"  # loopback by default: the admin service changes what every user gets
    admin_port: int | None = 50052  # recsys.admin.v1; 0 = free port, None = off
    rollout_state_dir: Path = Field(ROOT / "var" / "rollout", description="the rollout pointer; replicas share it")
    rollout_shadow_share: float = Field(0.1, ge=0, le=1, description="share of requests answered again by both "
                                        "bundles side by side in shadow and canary, to compare them")
    rollout_canary_percent: float = Field(10.0, gt=0, le=100)
    rollout_drain_s: float = 10.0  # longest wait for a retired bundle's in-flight calls before its versions unload
    rollout_min_samples: int = 100  # candidate answers (and comparisons) before a guardrail can fire
    rollout_max_error_rate_increase: float = 0.01
    rollout_max_p99_ratio: float = 1.5
    rollout_p99_slack_ms: float = 5.0  # p99 may also exceed the ratio by this much (noise on small p99s)
    rollout_max_degraded_increase: float = 0.05
    # Mean top-10 overlap of candidate and live on the same request, where both ran the same models
    # (ml-100k: two trainings of the same recipe 0.8; scrambled weights fail it).
    rollout_min_overlap: float = 0.5
    rollout_golden_min_overlap: float = 0.9
    rollout_golden_tolerance: float = 1e-3

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_config_file.get())


class SettingsError(ValueError):
    """A setting is wrong; the message names it."""


def load_settings(argv: list[str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``--config FILE`` (TOML), the environment and flags; ``overrides`` win over all."""
    parser = argparse.ArgumentParser(prog="python -m server", description="the recommendation gRPC server")
    parser.add_argument("--config", type=Path, help="a TOML file with any of the settings below")
    for name, field in Settings.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=field.description)
    args = vars(parser.parse_args(argv))
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
