"""What can be checked of deploy/ without Docker or Kubernetes: it parses, and its files agree.

(That every metric the dashboard and the alert rules use exists in real output is checked in
test_loadtest_and_metrics.py, against a live Triton and server.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from clients.targets import channel_target
from server.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def load(path: str) -> Any:
    return yaml.safe_load((DEPLOY / path).read_text())


def k8s_objects() -> list[dict[str, Any]]:
    kustomization = load("kustomization.yaml")
    return [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((DEPLOY / resource).read_text())
        if doc
    ]


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name)


def dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    block = re.search(r"^ENV (.+)$", text, re.M)
    assert block is not None
    return dict(pair.split("=", 1) for pair in block.group(1).split())


def container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


def k8s_env(workload: dict[str, Any]) -> dict[str, str]:
    """Literal values; a value from a Secret reads as "secret:<name>/<key>"."""

    def value(e: dict[str, Any]) -> str:
        if "value" in e:
            return e["value"]
        ref = e["valueFrom"]["secretKeyRef"]
        return f"secret:{ref['name']}/{ref['key']}"

    return {e["name"]: value(e) for e in container(workload)["env"]}


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml", ".json"))
)
def test_every_file_parses(path: str) -> None:
    text = (DEPLOY / path).read_text()
    docs = [json.loads(text)] if path.endswith(".json") else [d for d in yaml.safe_load_all(text) if d]
    assert docs


def test_server_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = load("docker-compose.yml")
    for env in (
        dockerfile_env(),
        compose["services"]["recsys"]["environment"],
        k8s_env(by_kind("StatefulSet", "recsys")),
    ):
        ours = {k: v for k, v in env.items() if k.startswith("RECSYS_") and not v.startswith(("${", "secret:"))}
        assert all(k.removeprefix("RECSYS_").lower() in Settings.model_fields for k in ours), ours
        with monkeypatch.context() as m:
            for key, value in ours.items():
                m.setenv(key, value)
            settings = Settings()  # the values parse as the server will read them
        assert settings.grpc_port == 50051 and settings.triton_url == "triton:8001"


def test_ports_agree_everywhere() -> None:
    compose = load("docker-compose.yml")
    recsys, triton = compose["services"]["recsys"], compose["services"]["triton"]
    docker_env = dockerfile_env()
    expose = re.search(r"^EXPOSE (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert expose, "the Dockerfile exposes no port"
    exposed = set(expose.group(1).split())
    grpc_port, metrics_port = recsys["environment"]["RECSYS_GRPC_PORT"], recsys["environment"]["RECSYS_METRICS_PORT"]
    assert {grpc_port, metrics_port} == exposed == {docker_env["RECSYS_GRPC_PORT"], docker_env["RECSYS_METRICS_PORT"]}
    # Only the API is published; metrics are for Prometheus on the compose network.
    assert recsys["ports"] == [f"{grpc_port}:{grpc_port}"] and recsys["expose"] == [metrics_port]
    assert "127.0.0.1:50051" in (DEPLOY / "Dockerfile").read_text().split("HEALTHCHECK")[1]
    triton_metrics = next(a for a in triton["command"] if a.startswith("--metrics-port=")).split("=")[1]
    scrape = {
        job["job_name"]: job["static_configs"][0]["targets"][0]
        for job in load("prometheus/prometheus.yml")["scrape_configs"]
    }
    assert scrape == {"recsys": f"recsys:{metrics_port}", "triton": f"triton:{triton_metrics}"}
    # The server finds Triton's gRPC port by the service name, in compose and in Kubernetes.
    triton_host, triton_port = recsys["environment"]["RECSYS_TRITON_URL"].split(":")
    assert triton_host in compose["services"] and triton_port in triton["expose"] and "ports" not in triton
    assert docker_env["RECSYS_TRITON_URL"] == recsys["environment"]["RECSYS_TRITON_URL"]
    server = by_kind("StatefulSet", "recsys")
    env = k8s_env(server)
    assert env["RECSYS_TRITON_URL"] == f"{by_kind('Service', 'triton')['metadata']['name']}:{triton_port}"
    service_ports = {p["name"]: p["port"] for p in by_kind("Service", "triton")["spec"]["ports"]}
    assert service_ports["grpc"] == int(triton_port) and service_ports["metrics"] == int(triton_metrics)
    server_ports = {p["name"]: p["containerPort"] for p in container(server)["ports"]}
    assert server_ports == {"grpc": int(grpc_port), "metrics": int(metrics_port)}
    assert (env["RECSYS_GRPC_PORT"], env["RECSYS_METRICS_PORT"]) == (grpc_port, metrics_port)
    annotations = server["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == metrics_port
    triton_deploy = by_kind("Deployment", "triton")
    assert triton_deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == triton_metrics
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container(server)[probe]["grpc"]["port"] == int(grpc_port)
    assert container(server)["livenessProbe"]["grpc"]["service"] == "liveness"


def test_volume_paths_agree() -> None:
    compose = load("docker-compose.yml")
    recsys, triton = compose["services"]["recsys"], compose["services"]["triton"]
    repository = next(a for a in triton["command"] if a.startswith("--model-repository=")).split("=")[1]
    assert f"../model_repository:{repository}:ro" in triton["volumes"]
    bundle = recsys["environment"]["RECSYS_BUNDLE"]
    assert f"../serving_bundle:{bundle}:ro" in recsys["volumes"] and dockerfile_env()["RECSYS_BUNDLE"] == bundle
    feedback_dir = str(Path(recsys["environment"]["RECSYS_FEEDBACK_DB"]).parent)
    assert f"feedback:{feedback_dir}" in recsys["volumes"] and "feedback" in compose["volumes"]
    for mount in ("../model_repository", "../serving_bundle"):  # what `make export` writes, from deploy/
        assert (DEPLOY / mount).resolve().name in ("model_repository", "serving_bundle")
    # Kubernetes: the same paths, from the one model-store claim.
    triton_pod = by_kind("Deployment", "triton")
    assert f"--model-repository={repository}" in container(triton_pod)["args"]
    mounts = {m["mountPath"]: m for m in container(triton_pod)["volumeMounts"]}
    assert mounts[repository]["subPath"] == "model_repository"
    server = by_kind("StatefulSet", "recsys")
    mounts = {m["mountPath"]: m for m in container(server)["volumeMounts"]}
    assert mounts[k8s_env(server)["RECSYS_BUNDLE"]]["subPath"] == "serving_bundle"
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for pod in (triton_pod, server)
        for v in pod["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {
        by_kind("PersistentVolumeClaim", name)["metadata"]["name"] for name in ("model-store", "rollout-state")
    }
    # Every replica follows one rollout pointer: the state dir is the shared (ReadWriteMany) claim.
    assert mounts[k8s_env(server)["RECSYS_ROLLOUT_STATE_DIR"]]["name"] in {
        v["name"]
        for v in server["spec"]["template"]["spec"]["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == "rollout-state"
    }
    assert by_kind("PersistentVolumeClaim", "rollout-state")["spec"]["accessModes"] == ["ReadWriteMany"]
    # Feedback lives in the shared Valkey, not on a replica's own volume.
    assert "volumeClaimTemplates" not in server["spec"]


def test_replicas_share_a_durable_store_and_are_reached_round_robin() -> None:
    server = by_kind("StatefulSet", "recsys")
    store = k8s_env(server)["RECSYS_STORE"]
    assert Settings(store=store).store == store
    host, port = store.removeprefix("redis://").split("/")[0].split(":")
    valkey, valkey_service = by_kind("StatefulSet", "valkey"), by_kind("Service", host)
    assert valkey_service["spec"]["selector"] == valkey["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in valkey_service["spec"]["ports"]] == [int(port)]
    args = container(valkey)["args"]
    settings = dict(zip(args[::2], args[1::2], strict=True))
    assert settings["--appendonly"] == "yes" and settings["--appendfsync"] == "always"  # the server demands it
    assert settings["--dir"] in {m["mountPath"] for m in container(valkey)["volumeMounts"]}
    # The headless Service: DNS lists every pod, and the SDK balances per call over them.
    headless = by_kind("Service", server["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == server["spec"]["selector"]["matchLabels"]
    grpc_port = next(p["containerPort"] for p in container(server)["ports"] if p["name"] == "grpc")
    assert [p["port"] for p in headless["spec"]["ports"]] == [grpc_port]
    target = f"dns:///{headless['metadata']['name']}.recsys.svc.cluster.local:{grpc_port}"
    assert channel_target(target) == (target, [("grpc.lb_policy_name", "round_robin")])


def test_retrain_cronjob_reads_the_store_and_writes_what_servers_read() -> None:
    job = by_kind("CronJob", "recsys-retrain")
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    retrain = pod["containers"][0]
    assert retrain["command"][-1] == "training.retrain"
    args = dict(a.removeprefix("--").split("=", 1) for a in retrain["args"])
    assert args["feedback"] == k8s_env(by_kind("StatefulSet", "recsys"))["RECSYS_STORE"]
    mount = retrain["volumeMounts"][0]
    claim = next(v for v in pod["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"]["claimName"]
    assert claim == "model-store"
    root = mount["mountPath"]
    assert (args["out"], args["bundle"]) == (f"{root}/model_repository", f"{root}/serving_bundle")


def test_monitoring_wiring_agrees() -> None:
    compose = load("docker-compose.yml")
    prometheus = load("prometheus/prometheus.yml")
    mounted = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"])
    assert all(rule in mounted for rule in prometheus["rule_files"])
    assert mounted["/etc/prometheus/alerts.yml"] == "./prometheus/alerts.yml"
    datasource = load("grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert datasource["url"].split("//")[1].split(":")[0] in compose["services"]
    provider = load("grafana/provisioning/dashboards/dashboards.yml")["providers"][0]
    grafana_mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"])
    assert grafana_mounts[provider["options"]["path"]] == "./grafana/dashboards"
    dashboard = json.loads((DEPLOY / "grafana/dashboards/recsys.json").read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource["uid"]}
    kustomization = load("kustomization.yaml")
    assert kustomization["configMapGenerator"][0]["files"] == ["prometheus/alerts.yml"]
    assert all((DEPLOY / r).is_file() for r in kustomization["resources"])
    hpa = by_kind("HorizontalPodAutoscaler", "recsys")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "recsys" and hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert by_kind("PodDisruptionBudget", "recsys")["spec"]["selector"]["matchLabels"] == {"app": "recsys"}


UNPINNED = {  # images whose digest could not be resolved where this was written (no registry access)
    "nvcr.io/nvidia/tritonserver:24.10-py3": "resolve with `docker buildx imagetools inspect` and pin",
    "valkey/valkey:8.0": "resolve with `docker buildx imagetools inspect` and pin",
}


def _images() -> list[str]:
    compose = load("docker-compose.yml")
    images = [s["image"] for s in compose["services"].values() if "image" in s and "build" not in s]
    images += [
        c["image"]
        for o in k8s_objects()
        if o["kind"] in ("Deployment", "StatefulSet")
        for c in o["spec"]["template"]["spec"]["containers"]
        if c["image"] != "recsys-server:latest"
    ]
    images += re.findall(r"^FROM (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    return images


def test_supply_chain_pins() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.startswith("# syntax=docker/dockerfile:1\n")  # only honoured as the first line
    for image in _images():
        assert re.search(r"@sha256:[0-9a-f]{64}$", image) or image in UNPINNED, image
    grafana = load("docker-compose.yml")["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")  # no admin/admin
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    makefile = (DEPLOY.parent / "Makefile").read_text()
    assert re.search(r"^PYTRITON_VERSION \?= [0-9]+\.[0-9]+\.[0-9]+$", makefile, re.M)
    assert "nvidia-pytriton==$(PYTRITON_VERSION)" in makefile
    # `make setup` installs exactly the lock, hashes checked; every locked package has a hash.
    assert "--require-hashes --no-deps -r $(LOCK)" in makefile and "LOCK ?= requirements.lock" in makefile
    lock = (DEPLOY.parent / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==\S+ \\\n(?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+", lock, re.M)
    assert len(pins) == len(re.findall(r"^[A-Za-z0-9_.\-]+==", lock, re.M)) > 50
    assert {"pyjwt", "cryptography", "grpcio", "torch"} <= {p.lower() for p in pins}


def _pins(lock: str) -> dict[str, str]:
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", lock, re.M)}


def test_server_image_installs_the_server_lock_with_hashes() -> None:
    """The image installs requirements-server.lock (hashes checked, nothing resolved at build time):
    every serving dependency of pyproject.toml, at the versions `make setup` installs, and no torch."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY requirements-server.lock" in dockerfile
    assert "pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements-server.lock" in dockerfile
    assert re.search(r"pip install [^\n]*--no-deps /wheels/\*\.whl", dockerfile)  # the project: no resolve
    assert "pip wheel --no-cache-dir --no-deps" in dockerfile
    root = DEPLOY.parent
    server, full = (root / "requirements-server.lock").read_text(), (root / "requirements.lock").read_text()
    server_pins, full_pins = _pins(server), _pins(full)
    hashed = re.findall(r"^([A-Za-z0-9_.\-]+)==\S+ \\\n(?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+", server, re.M)
    assert len(hashed) == len(server_pins) > 10
    assert {n: v for n, v in server_pins.items() if full_pins.get(n) != v} == {}  # the same versions
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in project}
    assert wanted <= set(server_pins), wanted - set(server_pins)
    assert "torch" not in server_pins
    makefile = (root / "Makefile").read_text()
    assert "SERVER_LOCK ?= requirements-server.lock" in makefile and "-c $(LOCK)" in makefile


def _restricted(args: list[str]) -> dict[str, str]:
    flags = {}
    for arg in args:
        for flag in ("--grpc-restricted-protocol=", "--http-restricted-api="):
            if arg.startswith(flag):
                protocols, _, header = arg[len(flag) :].partition(":")
                assert set(protocols.split(",")) >= {"model-repository", "model-config"}, arg
                flags[flag] = header
    return flags


def test_triton_control_plane_is_locked() -> None:
    from server.triton.launcher import CONTROL_HEADER, CONTROL_KEY_NAME
    from server.triton_models import CONTROL_HEADER as SERVER_HEADER

    assert SERVER_HEADER == CONTROL_HEADER == f"triton-grpc-protocol-{CONTROL_KEY_NAME}"
    compose = load("docker-compose.yml")
    triton, recsys = compose["services"]["triton"], compose["services"]["recsys"]
    for flags, server_key in (
        (_restricted(triton["command"]), recsys["environment"]["RECSYS_TRITON_CONTROL_KEY"]),
        (_restricted(container(by_kind("Deployment", "triton"))["args"]), "$(TRITON_CONTROL_KEY)"),
    ):
        assert len(flags) == 2 and set(flags.values()) == {f"{CONTROL_KEY_NAME}={server_key}"}
    # Kubernetes: Triton and the server read the key from the same Secret.
    triton_env, server_env = k8s_env(by_kind("Deployment", "triton")), k8s_env(by_kind("StatefulSet", "recsys"))
    assert triton_env["TRITON_CONTROL_KEY"] == server_env["RECSYS_TRITON_CONTROL_KEY"] == "secret:triton-control/key"
    # Compose publishes no Triton port and no metrics port; Prometheus and Grafana only on loopback.
    assert "ports" not in triton and all(
        p.startswith("127.0.0.1:") for name in ("prometheus", "grafana") for p in compose["services"][name]["ports"]
    )
    assert recsys["environment"]["RECSYS_AUTH_MODE"] == "token" and "RECSYS_AUTH_API_KEYS" in recsys["environment"]


def test_network_policies_admit_only_the_server_to_triton_and_prometheus_to_metrics() -> None:
    policies = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    triton_ports = {p["name"]: p["containerPort"] for p in container(by_kind("Deployment", "triton"))["ports"]}
    server_ports = {p["name"]: p["containerPort"] for p in container(by_kind("StatefulSet", "recsys"))["ports"]}

    def admitted(policy: str) -> dict[int, list[Any]]:
        rules = policies[policy]["spec"]["ingress"]
        return {p["port"]: rule.get("from") for rule in rules for p in rule["ports"]}

    prometheus = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    assert policies["triton-ingress"]["spec"]["podSelector"]["matchLabels"] == {"app": "triton"}
    assert admitted("triton-ingress") == {
        triton_ports["grpc"]: [{"podSelector": {"matchLabels": {"app": "recsys"}}}],
        triton_ports["metrics"]: prometheus,
    }  # HTTP (repository API): nobody
    assert admitted("recsys-ingress") == {server_ports["grpc"]: None, server_ports["metrics"]: prometheus}
    # The readiness probe asks the server's "can answer" service, never Triton's.
    assert container(by_kind("StatefulSet", "recsys"))["readinessProbe"]["grpc"].get("service", "") in (
        "",
        "recsys.v1.Recommender",
    )


# Imported by the server at run time; anything else in the image is dead weight (or a torch import).
SERVER_IMAGE_DIRS = {"server", "clients", "protos"}


def test_the_server_image_holds_only_what_the_server_imports() -> None:
    copied = set(re.findall(r"^COPY (?!--from)(\S+) \S+$", (DEPLOY / "Dockerfile").read_text(), re.M))
    assert copied - {"pyproject.toml", "README.md", "./", "requirements-server.lock"} == SERVER_IMAGE_DIRS
    # Every server module, imported in a fresh interpreter, pulls in nothing from the tool folders
    # (the stand-in backends run inside Triton's stub, not in the server, so they are left out).
    probe = (
        "import importlib, pkgutil, sys, server\n"
        "for m in pkgutil.walk_packages(server.__path__, 'server.'):\n"
        "    if '.backends' not in m.name: importlib.import_module(m.name)\n"
        "tools = {'training', 'export', 'loadtest', 'torch', 'pandas', 'mlflow'}\n"
        "bad = sorted({n.split('.')[0] for n in sys.modules} & tools)\n"
        "print(','.join(bad))\n"
    )
    root = DEPLOY.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'protos'}"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=root, check=True)
    assert out.stdout.strip() == "", f"the server imports {out.stdout.strip()}, which its image does not hold"
