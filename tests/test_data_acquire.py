"""Where the data comes from on a machine without ../shared: fetched and checked, generated, or one line."""

from __future__ import annotations

import functools
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.triton.launcher import free_port
from training.data import DataError, load_movielens
from training.data.acquire import ML100K_SHA256, SYNTHETIC, resolve_data, unpack_checked

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "movielens" / "ml-100k"


def ml100k_zip(tamper: str | None = None) -> bytes:
    """ml-100k.zip as GroupLens lays it out (files under ml-100k/), from the real files here."""
    if not (ML100K / "u.data").is_file():
        pytest.skip("needs ../shared/data/movielens/ml-100k")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(ML100K.iterdir()):
            data = path.read_bytes()
            archive.writestr(f"ml-100k/{path.name}", data[:-1] + b"#" if path.name == tamper else data)
    return buffer.getvalue()


@pytest.fixture
def served_zip(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server holding the zip: the fetch path, without the internet."""
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "ml-100k.zip").write_bytes(ml100k_zip())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "web"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/ml-100k.zip"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_a_missing_default_folder_is_fetched_checked_and_kept(
    tmp_path: Path, served_zip: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSYS_ML100K_URL", served_zip)
    default = tmp_path / "shared" / "ml-100k"
    folder = resolve_data(default, default, tmp_path / "var")
    said = capsys.readouterr().out
    assert "fetching" in said and "GroupLens" in said and "do not redistribute" in said and "checked" in said
    assert folder == tmp_path / "var" / "data" / "ml-100k" and not default.exists()
    assert len(load_movielens(folder).ratings) == 100_000
    # Fetched once: a second run uses the kept copy (the URL now points nowhere).
    monkeypatch.setenv("RECSYS_ML100K_URL", f"http://127.0.0.1:{free_port()}/ml-100k.zip")
    assert resolve_data(default, default, tmp_path / "var") == folder


@pytest.mark.slow
def test_an_altered_download_keeps_nothing(tmp_path: Path) -> None:
    target = tmp_path / "var" / "data" / "ml-100k"
    with pytest.raises(DataError, match=r"u1\.test does not match its SHA-256"):
        unpack_checked(ml100k_zip(tamper="u1.test"), target)
    assert not (tmp_path / "var").exists()  # checked before anything is written
    with pytest.raises(DataError, match="not a zip"):
        unpack_checked(b"<html>captive portal</html>", target)


def test_every_checked_file_is_in_the_release_list() -> None:
    assert {"u.data", "u.item", "u.user", "u1.base", "u5.test"} <= set(ML100K_SHA256)
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in ML100K_SHA256.values())


def test_an_explicit_folder_is_never_replaced_by_a_download(tmp_path: Path) -> None:
    asked = tmp_path / "typo"
    assert resolve_data(asked, tmp_path / "default", tmp_path / "var") == asked  # load_movielens then says why


def test_synthetic_is_generated_once_with_no_download(tmp_path: Path) -> None:
    folder = resolve_data(SYNTHETIC, tmp_path / "default", tmp_path / "var")
    first = (folder / "u.data").read_bytes()
    assert resolve_data(SYNTHETIC, tmp_path / "default", tmp_path / "var") == folder
    assert (folder / "u.data").read_bytes() == first and (folder / "u1.base").is_file()


@pytest.mark.slow
def test_a_clone_without_shared_data_says_what_to_do_offline_and_trains_on_synthetic(tmp_path: Path) -> None:
    """As a new user's first run on a machine with no ../shared and no internet."""
    clone = tmp_path / "elsewhere" / "recsys"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in {"RECSYS_DATA", "MLFLOW_TRACKING_URI"}}
    env |= {
        "PYTHONPATH": f"{clone}{os.pathsep}{clone / 'protos'}",
        "RECSYS_ML100K_URL": f"http://127.0.0.1:{free_port()}/",
    }
    train = [sys.executable, "-m", "training.train", "--no-track", "--no-progress"]
    offline = subprocess.run(train, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert offline.returncode == 2, offline.stderr
    last = offline.stderr.strip().splitlines()[-1]
    assert "Traceback" not in offline.stderr and "DATA=" in last and f"make serve DATA={SYNTHETIC}" in last
    assert not (clone.parent / "shared").exists()
    quick = ["--data", SYNTHETIC, "--models", "two_tower", "--max-epochs", "1", "--fusion-steps", "1"]
    trained = subprocess.run(train + quick, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (clone / "var" / "data" / SYNTHETIC / "u.data").is_file()
