"""Add an API key to a key file (server/auth.py reads it): the file keeps only the key's SHA-256.

    python -m server.apikeys deploy/secrets/api-keys.json --name web --roles service
    python -m server.apikeys keys.json --name app-user-42 --roles user --user-id 42

The key is printed once; it cannot be recovered from the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
from pathlib import Path

from server.auth import principal_from


def add_key(path: Path, name: str, roles: list[str], user_id: str | None = None) -> str:
    principal_from(name, roles, user_id, "new key")  # the same checks the server applies
    entries = json.loads(path.read_text()) if path.is_file() else {}
    key = secrets.token_urlsafe(32)
    entry: dict[str, object] = {"name": name, "roles": roles}
    if user_id is not None:
        entry["user_id"] = user_id
    entries[hashlib.sha256(key.encode()).hexdigest()] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2) + "\n")
    path.chmod(0o600)
    return key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server.apikeys", description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--roles", nargs="+", required=True, choices=["service", "user", "admin"])
    parser.add_argument("--user-id", help="the one user a `user` key acts for")
    args = parser.parse_args(argv)
    try:
        print(add_key(args.file, args.name, args.roles, args.user_id))
    except ValueError as err:
        raise SystemExit(f"apikeys: {err}") from None


if __name__ == "__main__":
    main()
