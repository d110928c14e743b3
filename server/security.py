"""Settings -> the authenticator, the rate limiter and the TLS credentials of the public port."""

from __future__ import annotations

import ipaddress

import grpc

from server.auth import Authenticator, load_api_keys
from server.certidentity import load_cert_principals
from server.ratelimit import RateLimiter
from server.settings import Settings, SettingsError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dev_mode(settings: Settings) -> bool:
    """No token needed: asked for, or "auto" on a loopback host (only local processes can call)."""
    return settings.auth_mode == "dev" or (settings.auth_mode == "auto" and is_loopback(settings.host))


def authenticator_for(settings: Settings) -> Authenticator:
    """Raises SettingsError (a clean exit from ``python -m server``) when the configuration cannot work."""
    try:
        key = settings.auth_jwt_public_key.read_bytes() if settings.auth_jwt_public_key else None
        keys = load_api_keys(settings.auth_api_keys) if settings.auth_api_keys else None
        if settings.auth_client_certs and settings.tls_client_ca is None:
            raise ValueError(
                "auth_client_certs maps client certificates to principals, but without "
                "tls_client_ca (mTLS) no client certificate is asked for or verified; set both"
            )
        certs = load_cert_principals(settings.auth_client_certs) if settings.auth_client_certs else None
        return Authenticator(
            jwt_public_key=key,
            algorithms=settings.auth_jwt_algorithms,
            audience=settings.auth_jwt_audience,
            issuer=settings.auth_jwt_issuer,
            api_keys=keys,
            dev=dev_mode(settings),
            cert_principals=certs,
        )
    except (OSError, ValueError) as err:
        raise SettingsError(f"authentication: {err}") from None


def rate_limiter_for(settings: Settings) -> RateLimiter | None:
    return RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst) if settings.rate_limit_rps > 0 else None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS when tls_cert and tls_key are set; with tls_client_ca, clients must present a certificate it signed."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("TLS needs both tls_cert and tls_key")
    if settings.tls_cert is None or settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise SettingsError("tls_client_ca (mTLS) needs tls_cert and tls_key too")
        return None
    roots = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=roots,
        require_client_auth=roots is not None,
    )
