"""The README stays a short entry point, and every link from it and docs/ leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in re.findall(r"(?m)^#+ (.*)$", markdown)
    }


def test_readme_is_short_and_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    # CI (.ci/run) runs `make test`, the README's second command; both must be real targets.
    assert "make serve " in readme and "make test " in readme
    targets = set(re.findall(r"(?m)^([\w-]+):", (ROOT / "Makefile").read_text()))
    assert {"serve", "test", "test-fast"} <= targets
    assert "files.grouplens.org/datasets/movielens/ml-100k.zip" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path) if path else page
        assert target.exists(), f"{page.name}: {link} does not exist"
        if anchor:
            assert anchor in _anchors(target.read_text()), f"{page.name}: no heading for #{anchor} in {target.name}"


def test_every_alert_has_a_runbook_entry() -> None:
    alerts = re.findall(r"(?m)^\s*- alert: (\w+)", (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    runbook = (ROOT / "docs" / "operations.md").read_text().split("## Runbook", 1)[1]
    assert alerts and set(alerts) == set(re.findall(r"(?m)^### (\w+)$", runbook))
