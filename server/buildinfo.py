"""What build is running, for the ``recsys_build_info`` metric: package version, git commit, Python.

The commit comes from ``BUILD_GIT_SHA`` (the image sets it at build time: an image has no ``.git``;
not ``RECSYS_``, the settings' prefix), else from the checkout the server runs from, else "unknown".
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata

from server.paths import ROOT

UNKNOWN = "unknown"


def package_version() -> str:
    try:
        return metadata.version("recsys-serving")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return UNKNOWN


def git_sha() -> str:
    if sha := os.environ.get("BUILD_GIT_SHA", "").strip():
        return sha
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=True
        )
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout, or git hung
        return UNKNOWN
    return done.stdout.strip() or UNKNOWN


@cache
def build_info() -> dict[str, str]:
    """Read once per process: the build does not change while it runs."""
    return {"version": package_version(), "git_sha": git_sha(), "python": platform.python_version()}
