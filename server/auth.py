"""Who is calling: a bearer token (a JWT checked with a public key, or an API key from a file) -> a Principal.

Roles: ``service`` acts for any user id; ``user`` is bound to one user id (its own
recommendations, feedback and explanations only); ``admin`` runs the rollout/admin API and may
do everything else. What each method needs is the table in ``server.policy``.

JWT claims: ``sub`` (the principal's name), ``exp`` (required), ``roles`` (a list) and, for the
user role, ``user_id``; ``aud``/``iss`` are checked when configured. API-key file (JSON), keyed by
the SHA-256 of the key so the file holds no usable secret:

    {"9f86d0...": {"name": "web-frontend", "roles": ["service"]},
     "60303a...": {"name": "user-42-app", "roles": ["user"], "user_id": "42"}}

With mTLS, a call without a token may authenticate by its client certificate (``server.certidentity``).
Dev mode (the default only on a loopback host): a call without credentials is a dev principal with every role.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt

from server.errors import Unauthenticated

ROLES = frozenset({"service", "user", "admin"})


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    user_id: str | None = None  # the one user a `user`-only principal may act for
    dev: bool = False  # the token-less caller of dev mode (not rate limited)

    @property
    def any_user(self) -> bool:
        return bool(self.roles & {"service", "admin"})


DEV = Principal("dev", ROLES, dev=True)


def principal_from(name: str, roles: object, user_id: object, where: str) -> Principal:
    if not isinstance(roles, list) or not roles or not set(roles) <= ROLES:
        raise ValueError(f"{where}: roles must be a non-empty list of {sorted(ROLES)}; got {roles!r}")
    if "user" in roles and not isinstance(user_id, str | int):
        raise ValueError(f"{where}: the user role needs a user_id")
    return Principal(name, frozenset(roles), None if user_id is None else str(user_id))


def load_api_keys(path: Path) -> dict[str, Principal]:
    entries = json.loads(Path(path).read_text())
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected a JSON object {{sha256 hex of a key: {{name, roles, user_id?}}}}")
    return {
        digest.lower(): principal_from(
            str(e.get("name", digest[:8])), e.get("roles"), e.get("user_id"), f"{path} [{digest[:8]}...]"
        )
        for digest, e in entries.items()
    }


class Authenticator:
    def __init__(
        self,
        *,
        jwt_public_key: bytes | None = None,
        algorithms: Sequence[str] = ("RS256",),
        audience: str | None = None,
        issuer: str | None = None,
        api_keys: dict[str, Principal] | None = None,
        dev: bool = False,
        cert_principals: dict[str, Principal] | None = None,
    ) -> None:
        if not dev and jwt_public_key is None and not api_keys and not cert_principals:
            raise ValueError(
                "tokens are required here (not a loopback host, or auth_mode=token) but no "
                "auth_jwt_public_key, auth_api_keys or auth_client_certs is configured; set one, "
                "or auth_mode=dev to run without authentication"
            )
        self.key, self.algorithms, self.audience, self.issuer = jwt_public_key, list(algorithms), audience, issuer
        self.api_keys, self.dev = api_keys or {}, dev
        self.cert_principals = cert_principals or {}  # certificate identity -> principal (server.certidentity)

    def authenticate(
        self, metadata: Iterable[tuple[str, str | bytes]], cert_identities: Sequence[str] = ()
    ) -> Principal:
        """A bearer token, when sent, decides; without one, the verified client certificate's
        identities (mTLS, ``server.certidentity``), then dev mode."""
        header = next((v for k, v in metadata if k == "authorization"), None)
        if header is None:
            if self.cert_principals and cert_identities:
                return self._from_certificate(cert_identities)
            if self.dev:
                return DEV
            raise Unauthenticated("no credentials: send the header 'authorization: Bearer <token>'")
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > 8192:
            raise Unauthenticated("the authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest in self.api_keys:
            return self.api_keys[digest]
        if self.key is None or token.count(".") != 2:
            raise Unauthenticated("unknown API key")
        return self._verify_jwt(token, self.key)

    def _from_certificate(self, identities: Sequence[str]) -> Principal:
        principal = next((self.cert_principals[i] for i in identities if i in self.cert_principals), None)
        if principal is None:
            raise Unauthenticated(
                f"the client certificate ({', '.join(identities[:4])}) maps to no principal: "
                "add one of these identities to auth_client_certs, or send "
                "'authorization: Bearer <token>'"
            )
        return principal

    def _verify_jwt(self, token: str, key: bytes) -> Principal:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired; get a new one") from None
        except jwt.InvalidTokenError as err:
            raise Unauthenticated(f"invalid token: {err}") from None
        try:
            return principal_from(str(claims["sub"]), claims.get("roles"), claims.get("user_id"), "token")
        except ValueError as err:
            raise Unauthenticated(str(err)) from None
