"""Where the training data comes from when the folder asked for is not there yet.

- ``synthetic`` (``make serve DATA=synthetic``): a generated catalogue in ml-100k's layout under
  ``var/data/synthetic``; no download, the same every time (fixed seed).
- The default ml-100k folder missing: fetch ``ml-100k.zip`` from GroupLens once, check every file
  against the SHA-256 sums below, unpack into ``var/data/ml-100k`` (never into the repository), and
  say so, with the licence's terms. A checksum mismatch keeps nothing.
- Offline (as on machines without internet): one line saying how to point ``DATA=`` at a MovieLens
  folder or run on the synthetic catalogue.

A folder the caller named explicitly is never replaced by a download: a typo should fail, not fetch.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from training.data.readers import DataError
from training.data.synthetic import SyntheticSpec, write

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
LICENCE = (
    "MovieLens 100K (GroupLens, University of Minnesota): research use only, cite F. M. Harper and "
    "J. A. Konstan, ACM TiiS 5(4) 2015, do not redistribute"
)
# The release's files as GroupLens publishes them (ml-100k.zip, 1998); the ratings and the official
# folds must match byte for byte, or the figures in docs/ are not comparable.
ML100K_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
    "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
    **{
        f"{fold}.{part}": digest
        for fold, part, digest in [
            ("u1", "base", "ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a"),
            ("u1", "test", "18c6014a4b2c7324f250a63f8904a7b16b2b19f911129e346141507b0cbac950"),
            ("u2", "base", "6c06f0b5df4b256da1a994f3ac66edc8da4d3f09bc9282df6b14d893366d703e"),
            ("u2", "test", "4de658d1e04ed9104629509a2e2528fce833ac8e048280183f1df167632038c3"),
            ("u3", "base", "afdc155c291c6edc41c0407e39d7462eb98d341e064f0b0a12175b80b3c4af5d"),
            ("u3", "test", "0f548b51c78327de4c156461d3e430b7e5579fe2b5681586a59416e48fd35f6d"),
            ("u4", "base", "219f0f4d40dfe9c5141d425f53fa91ee23ed275f14e280bbf1b50117afb064ca"),
            ("u4", "test", "7c02ad0a1e7ab1083c8b9d4b627203a051dd7b5eab46d99fa44de33470de8db9"),
            ("u5", "base", "a9574e59ce961eec2121627760b6e9b0974ce1637b3fe69ac32cb14a4bfab485"),
            ("u5", "test", "351cc52e0d15b6c721466276fc24671d40936899e3d01fadeaf312915b8c5634"),
        ]
    },
}
# About ml-100k's density, small enough to train in a couple of minutes on 2 cores.
SYNTHETIC_SPEC = SyntheticSpec(users=600, items=1000, mean_ratings=50, seed=7)


def resolve_data(asked: Path | str, default: Path, state_dir: Path) -> Path:
    """The folder to train on: ``asked`` itself, the synthetic catalogue, or a fetched ml-100k."""
    if str(asked) == SYNTHETIC:
        folder = state_dir / "data" / SYNTHETIC
        if not (folder / "u.data").is_file():
            log.info("data: generating the synthetic catalogue in %s (no download)", folder)
            write(folder, SYNTHETIC_SPEC)
        return folder
    asked = Path(asked)
    if asked.is_dir() or asked.resolve() != default.resolve():
        return asked
    fetched = state_dir / "data" / "ml-100k"
    if not (fetched / "u.data").is_file():
        fetch_ml100k(fetched, os.environ.get("RECSYS_ML100K_URL", ML100K_URL))
    return fetched


def fetch_ml100k(target: Path, url: str) -> Path:
    print(f"data: no MovieLens at the default folder; fetching {url} into {target} ({LICENCE})", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = response.read()
    except OSError as err:
        raise DataError(
            f"no MovieLens data and {url} cannot be reached ({err}); point DATA= (make), --data or $RECSYS_DATA "
            f"at a MovieLens folder, or run offline on a generated catalogue: make serve DATA={SYNTHETIC}"
        ) from None
    unpack_checked(payload, target)
    print(f"data: ml-100k checked ({len(ML100K_SHA256)} files match their SHA-256) and unpacked to {target}")
    return target


def unpack_checked(payload: bytes, target: Path) -> None:
    """Unpack the zip's ``ml-100k/`` files into ``target`` only if every checked file matches."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile:
        raise DataError("the download is not a zip archive; nothing was kept") from None
    members = {Path(n).name: n for n in archive.namelist() if n.startswith("ml-100k/") and not n.endswith("/")}
    for name, digest in ML100K_SHA256.items():
        if name not in members:
            raise DataError(f"the download has no ml-100k/{name}; nothing was kept")
        if hashlib.sha256(archive.read(members[name])).hexdigest() != digest:
            raise DataError(
                f"ml-100k/{name} does not match its SHA-256: a corrupt or altered download; nothing was kept"
            )
    # Unpacked beside the target and renamed into place, so an interrupted run leaves no half folder.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".ml-100k-"))
    try:
        for name, member in members.items():
            (staging / name).write_bytes(archive.read(member))
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
