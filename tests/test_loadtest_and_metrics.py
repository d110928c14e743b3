"""A short locust run through the SDK (zero failures), then both metrics endpoints scraped for real."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import loadtest.__main__ as loadtest
from server.bundle import load_bundle
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for

SCENARIOS = {
    "Recommend/known",
    "Recommend/repeat",
    "Recommend/inline",
    "Recommend/cold",
    "Recommend/tight",
    "SimilarItems",
    "RecordFeedback",
}


def scrape(url: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value}."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of ``name`` over every series whose labels include ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for key, v in samples.items() if key.split("{")[0] == name and all(w in key for w in wanted))


@pytest.fixture(scope="module")
def stack(
    serving_artifacts: Artifacts,
    serving_triton: EmbeddedTriton,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerThread]:
    # The response cache on, as deployed: the scenario mix asks for some users twice in a row.
    settings = settings_for(
        serving_artifacts, serving_triton.grpc_url, tmp_path_factory.mktemp("state"), cache_ttl_s=30
    )
    with ServerThread(settings) as s:
        yield s


@pytest.fixture(scope="module")
def before(stack: ServerThread, serving_triton: EmbeddedTriton) -> dict[str, dict[str, float]]:
    assert stack.server is not None
    return {
        "ours": scrape(f"http://127.0.0.1:{stack.server.metrics_port}/metrics"),
        "triton": scrape(serving_triton.metrics_url),
    }


@pytest.fixture(scope="module")
def summary(
    stack: ServerThread,
    serving_artifacts: Artifacts,
    before: dict,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict:
    ids = sorted(int(u) for u in load_bundle(serving_artifacts.bundle).user_index)
    out = tmp_path_factory.mktemp("loadtest")
    return loadtest.main(
        [
            "--target",
            stack.target,
            "--known-users",
            f"{ids[0]}-{ids[-1]}",
            "--users",
            "6",
            "--spawn-rate",
            "6",
            "--duration",
            "5s",
            "--out",
            str(out),
        ]
    )


def test_short_locust_run_has_no_failures(summary: dict) -> None:
    assert summary["failures"] == 0 and summary["requests"] > 50 and summary["rps"] > 0
    assert set(summary["per_type"]) == SCENARIOS
    for row in summary["per_type"].values():
        assert row["requests"] > 0 and row["failures"] == 0 and 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert summary["per_type"]["Recommend/known"]["degraded_share"] < 0.5
    assert 0 <= summary["degraded_share"] <= 1 and summary["meta"]["locust_exit_code"] == 0
    assert loadtest.failed(summary) == []  # so `python -m loadtest` exits 0
    cache = summary["cache"]  # asked twice in a row (and Zipf-popular users): some answers come from the cache
    assert cache["hits"] > 0 and cache["misses"] > 0 and 0 < cache["hit_rate"] < 1


def test_reports_written(summary: dict) -> None:
    out = Path(summary["meta"]["out"])
    for name in ("summary.json", "locust_stats.csv", "report.html", "degraded.json"):
        assert (out / name).is_file(), name


def test_triton_metrics_move_for_the_models_used(summary: dict, before: dict, serving_triton: EmbeddedTriton) -> None:
    after = scrape(serving_triton.metrics_url)
    for model in (
        "sae_torchscript_fp32",
        "rbm_torchscript_fp32",
        "ease_torchscript_fp32",
        "two_tower_user_torchscript_fp32",
        "two_tower_items_torchscript_fp32",
    ):
        for metric in (
            "nv_inference_request_success",
            "nv_inference_queue_duration_us",
            "nv_inference_compute_infer_duration_us",
        ):
            assert total(after, metric, model=model) > total(before["triton"], metric, model=model), (metric, model)
    # Calls the server cut off at a request's budget count as CANCELED; no call may fail in the model
    # (BACKEND), be refused (REJECTED) or fail for any other reason.
    for reason in ("BACKEND", "OTHER", "REJECTED"):
        assert total(after, "nv_inference_request_failure", reason=reason) == total(
            before["triton"], "nv_inference_request_failure", reason=reason
        ), reason


def test_our_metrics_move_as_expected(summary: dict, before: dict, stack: ServerThread) -> None:
    assert stack.server is not None
    after = scrape(f"http://127.0.0.1:{stack.server.metrics_port}/metrics")

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before["ours"], name, **labels)

    served = sum(row["requests"] for row in summary["per_type"].values())
    assert moved("recsys_requests_total") >= served
    assert moved("recsys_requests_total", rpc="SimilarItems", outcome="ok") >= 1
    assert moved("recsys_requests_total", rpc="RecordFeedback", outcome="ok") >= 1
    assert moved("recsys_request_latency_seconds_count", rpc="Recommend") == moved(
        "recsys_requests_total", rpc="Recommend"
    )
    assert moved("recsys_fallback_total", rung="popularity") >= 1 and moved("recsys_fallback_total", rung="full") >= 1
    assert moved("recsys_feedback_events_total", kind="rating") >= 1
    assert moved("recsys_model_latency_seconds_count", model="sae_torchscript_fp32") >= 1
    # Degraded answers are counted once per degraded RPC, in both places.
    assert moved("recsys_degraded_total") == moved("recsys_requests_total", outcome="degraded")
    assert total(after, "recsys_model_ready", model="sae_torchscript_fp32") == 1
    assert after["recsys_inflight_requests"] == 0


DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# Triton reports GPU metrics only where it has a GPU (none here or in CI); names as in Triton's
# metrics documentation. Everything else the dashboard and alerts use must exist below.
GPU_ONLY = {"nv_gpu_utilization"}


def queried_metrics() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/recsys.json").read_text())
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {name for e in expressions for name in re.findall(r"\b((?:recsys|nv)_[a-z0-9_]+)", e)}


def test_dashboard_and_alert_metrics_exist_in_real_output(
    summary: dict, stack: ServerThread, serving_triton: EmbeddedTriton
) -> None:
    assert stack.server is not None
    names = {key.split("{")[0] for key in scrape(f"http://127.0.0.1:{stack.server.metrics_port}/metrics")}
    names |= {key.split("{")[0] for key in scrape(serving_triton.metrics_url)}
    used = queried_metrics()
    assert len(used) >= 10
    missing = used - names
    assert missing == GPU_ONLY, f"queried but never exported: {sorted(missing - GPU_ONLY)}"


def test_load_test_credentials_reach_the_sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from loadtest.credentials import TOKEN_ENV, add_options, credentials_from
    from server.devcerts import write_dev_certs

    certs = write_dev_certs(tmp_path)
    (tmp_path / "token").write_text("tok-123\n")
    monkeypatch.delenv(TOKEN_ENV, raising=False)

    def parse(argv: list[str]) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        add_options(parser)
        return parser.parse_args(argv)

    files = [
        "--tls-ca",
        str(certs["ca"]),
        "--client-cert",
        str(certs["client"]),
        "--client-key",
        str(certs["client_key"]),
    ]
    creds = credentials_from(parse(["--token-file", str(tmp_path / "token"), *files]))
    assert creds is not None and creds.token == "tok-123" and creds.secure
    assert creds.root_certificates == certs["ca"].read_bytes()
    assert creds.client_certificate == certs["client"].read_bytes()
    assert creds.client_key == certs["client_key"].read_bytes()
    assert credentials_from(parse([])) is None  # plaintext, no token: as before
    # python -m loadtest hands them to locust: files on its command line, a token in its environment.
    options = parse(["--token", "secret-tok", *files])
    command, env = loadtest.locust_command("h:1", "1-2", 1, 1, "1s", tmp_path, options)
    assert "secret-tok" not in command and env[TOKEN_ENV] == "secret-tok"
    monkeypatch.setenv(TOKEN_ENV, env[TOKEN_ENV])
    locust_side = credentials_from(parse(command[command.index("--tls-ca") :]))  # what the locustfile parses
    assert locust_side == credentials_from(options)
    for bad, message in (
        (["--client-cert", str(certs["client"])], "go together"),
        (["--tls-ca", str(tmp_path / "nope.pem")], "no such file"),
        (["--token", "a", "--token-file", str(tmp_path / "token")], "not both"),
    ):
        with pytest.raises(ValueError, match=message):
            credentials_from(parse(bad))
