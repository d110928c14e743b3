"""Credentials for a load test against a secured server: a bearer token and/or TLS (roots, client certificate).

The same options are read by ``python -m loadtest`` and by the locustfile (locust's own parser),
and become the SDK's ``clients.credentials.Credentials``. The token travels to the locust process
in an environment variable, not on its command line, where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from clients.credentials import Credentials

TOKEN_ENV = "RECSYS_LOADTEST_TOKEN"
FILE_OPTIONS = ("token_file", "tls_ca", "client_cert", "client_key")


def add_options(parser: Any) -> None:
    """``--token``/``--token-file``, ``--tls-ca``, ``--client-cert``/``--client-key``, ``--tls-server-name``."""
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"bearer token sent on every call (default: ${TOKEN_ENV})",
    )
    parser.add_argument("--token-file", default=None, help="a file holding the bearer token")
    parser.add_argument("--tls-ca", default=None, help="PEM roots the server's certificate must chain to (TLS)")
    parser.add_argument("--client-cert", default=None, help="PEM client certificate, for a server that wants mTLS")
    parser.add_argument("--client-key", default=None, help="the client certificate's PEM key")
    parser.add_argument(
        "--tls-server-name",
        default=None,
        help="the name the server certificate carries, when it differs from the target host",
    )


def credentials_from(options: argparse.Namespace) -> Credentials | None:
    """The SDK credentials the options ask for (None: plaintext, no token); a ValueError names what is wrong."""
    if options.token and options.token_file:
        raise ValueError("give --token or --token-file, not both")
    if bool(options.client_cert) != bool(options.client_key):
        raise ValueError("--client-cert and --client-key go together")
    for name in FILE_OPTIONS:
        path = getattr(options, name)
        if path and not Path(path).is_file():
            raise ValueError(f"--{name.replace('_', '-')} {path}: no such file")
    token = Path(options.token_file).read_text().strip() if options.token_file else options.token
    if not token and not options.tls_ca and not options.client_cert:
        return None
    return Credentials.from_files(
        token=token or None,
        roots=options.tls_ca,
        cert=options.client_cert,
        key=options.client_key,
        server_name=options.tls_server_name,
    )


def forwarded(options: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The locust arguments and environment that carry these options to the locustfile."""
    argv = [
        arg
        for name in (*FILE_OPTIONS, "tls_server_name")
        if (value := getattr(options, name))
        for arg in (f"--{name.replace('_', '-')}", str(value))
    ]
    return argv, ({TOKEN_ENV: options.token} if options.token else {})
