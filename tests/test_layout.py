"""The working tree's layout is defined once (server/paths.py): no other module finds the root itself."""

from __future__ import annotations

import re
from pathlib import Path

import server.paths

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "training", "export", "loadtest", "clients")
# Path(__file__)...parents[N] is how a module finds the root: only server/paths.py may.
FINDS_ROOT = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[\d\]")


def test_only_server_paths_finds_the_root() -> None:
    finders = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if FINDS_ROOT.search(path.read_text())
    ]
    assert finders == ["server/paths.py"]
    assert server.paths.ROOT == ROOT and (server.paths.ROOT / "Makefile").is_file()
