"""mTLS client certificates as credentials: a verified certificate's identity -> a Principal.

With ``tls_client_ca`` set, gRPC has already checked that a client certificate was signed by that
CA; this maps who the certificate names to a principal, so a service can call without a bearer
token. A certificate's identities, most specific first:

    uri:spiffe://prod/ns/web/sa/frontend   (each SAN URI)
    dns:batch.recsys.svc                   (each SAN DNS name)
    cn:nightly-export                      (the subject common name)

The map file (``auth_client_certs``, JSON) is keyed by identity; the first identity of a
certificate that the file names wins:

    {"uri:spiffe://prod/ns/web/sa/frontend": {"name": "web", "roles": ["service"]},
     "cn:user-42-device": {"name": "device-42", "roles": ["user"], "user_id": "42"}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from server.auth import Principal, principal_from

PREFIXES = ("uri:", "dns:", "cn:")


@lru_cache(maxsize=256)  # a connection presents the same certificate on every call: parse it once
def identities(pem: bytes) -> tuple[str, ...]:
    """The identities a PEM certificate names, SAN URIs first, then SAN DNS names, then the CN."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [f"uri:{u}" for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names += [f"dns:{d}" for d in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (*names, *(f"cn:{a.value}" for a in common_names if isinstance(a.value, str)))


def peer_identities(auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str, ...]:
    """The identities of the certificate a gRPC peer presented (and the server verified), or ()."""
    pems = list(auth_context.get("x509_pem_cert") or ())
    return identities(pems[0]) if pems else ()


def load_cert_principals(path: Path) -> dict[str, Principal]:
    """The identity -> principal map; a malformed file is a ValueError naming the entry."""
    entries = json.loads(Path(path).read_text())
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected a JSON object {{'uri:...'|'dns:...'|'cn:...': {{name, roles, user_id?}}}}")
    principals = {}
    for identity, entry in entries.items():
        if not identity.startswith(PREFIXES) or not isinstance(entry, dict):
            raise ValueError(
                f"{path} [{identity}]: keys are certificate identities starting with one of "
                f"{', '.join(PREFIXES)}, values objects {{name, roles, user_id?}}"
            )
        principals[identity] = principal_from(
            str(entry.get("name", identity)), entry.get("roles"), entry.get("user_id"), f"{path} [{identity}]"
        )
    return principals
