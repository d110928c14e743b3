"""What the SDK presents: a bearer token, and/or TLS (the server's CA roots, plus a client certificate for mTLS).

creds = Credentials.from_files(token=os.environ["RECSYS_TOKEN"], roots="ca.pem")
with RecommenderClient("recs.example.com:443", credentials=creds) as client: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from clients.targets import channel_target


@dataclass(frozen=True)
class Credentials:
    token: str | None = None  # sent as "authorization: Bearer <token>" on every call
    root_certificates: bytes | None = None  # PEM; set (or tls=True) -> a TLS channel
    client_certificate: bytes | None = None  # PEM chain, for servers that require mTLS
    client_key: bytes | None = None
    tls: bool = False  # TLS with the system's roots
    server_name: str | None = None  # the name the certificate must carry, when it differs from the target

    @classmethod
    def from_files(
        cls,
        *,
        token: str | None = None,
        roots: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        server_name: str | None = None,
    ) -> Credentials:
        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(token, read(roots), read(cert), read(key), server_name=server_name)

    @property
    def secure(self) -> bool:
        return self.tls or self.root_certificates is not None or self.client_certificate is not None

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _channel_args(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def _ssl(self) -> grpc.ChannelCredentials:
        if (self.client_certificate is None) != (self.client_key is None):
            raise ValueError("a client certificate needs its key (and the key its certificate)")
        return grpc.ssl_channel_credentials(self.root_certificates, self.client_key, self.client_certificate)

    def channel(self, target: str | Sequence[str]) -> grpc.Channel:
        """A channel to ``target`` (one address, several, or dns:///NAME:PORT; round-robin, see clients.targets)."""
        address, options = channel_target(target)
        if not self.secure:
            return grpc.insecure_channel(address, options=options)
        return grpc.secure_channel(address, self._ssl(), options=[*options, *self._channel_args()])

    def aio_channel(self, target: str | Sequence[str]) -> grpc.aio.Channel:
        address, options = channel_target(target)
        if not self.secure:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, self._ssl(), options=[*options, *self._channel_args()])
