"""The server's metrics endpoint also serves the process, platform and build-info metrics."""

from __future__ import annotations

import platform
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from server import buildinfo, paths
from server.metrics import Metrics


@pytest.fixture()
def scrape(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    served: list[Metrics] = []

    def scrape_with(git_sha: str | None) -> dict[str, Sample]:
        if git_sha is None:
            monkeypatch.delenv("BUILD_GIT_SHA", raising=False)
        else:
            monkeypatch.setenv("BUILD_GIT_SHA", git_sha)
        buildinfo.build_info.cache_clear()
        metrics = Metrics()
        served.append(metrics)
        port = metrics.serve("127.0.0.1", 0)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}

    yield scrape_with
    for metrics in served:
        metrics.stop()
    buildinfo.build_info.cache_clear()


def test_process_and_platform_metrics_are_served(scrape) -> None:
    samples = scrape("abc123")
    assert samples["process_resident_memory_bytes"].value > 0
    assert samples["process_open_fds"].value > 0
    assert samples["process_cpu_seconds_total"].value > 0
    assert samples["python_info"].labels["version"] == platform.python_version()
    assert "python_gc_collections_total" in samples


def test_build_info_names_version_commit_and_python(scrape) -> None:
    info = scrape("abc123")["recsys_build_info"]
    assert info.value == 1
    assert info.labels == {
        "version": buildinfo.package_version(),
        "git_sha": "abc123",
        "python": platform.python_version(),
    }
    assert info.labels["version"] != buildinfo.UNKNOWN  # the project is installed in the venv


def test_build_info_reads_the_commit_from_the_checkout_without_the_variable(scrape) -> None:
    head = subprocess.run(["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not run from a git checkout")
    assert scrape(None)["recsys_build_info"].labels["git_sha"] == head.stdout.strip()
