"""A private CA, a server certificate and a client certificate, for tests and local TLS trials.

    python -m server.devcerts var/certs      # ca.pem, server.pem/-key.pem (localhost, 127.0.0.1), client.pem/-key.pem

Then ``--tls-cert var/certs/server.pem --tls-key var/certs/server-key.pem`` (plus ``--tls-client-ca
var/certs/ca.pem`` for mTLS). Production certificates come from your own CA, not from here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 usage: ExtendedKeyUsageOID | None = None, hosts: tuple[str, ...] = ()) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_dev_certs(folder: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> dict[str, Path]:
    """Write the CA, server and client PEM files into ``folder``; returns their paths by role."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("recsys dev CA", ca_key, None, ca_key, ca=True)
    files = {"ca": (ca, None)}
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"recsys {role}", key, ca.subject, ca_key, usage=usage,
                            hosts=hosts if role == "server" else ())
        files[role] = (cert, key)
    paths = {}
    for role, (cert, key) in files.items():
        paths[role] = folder / f"{role}.pem"
        paths[role].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            paths[f"{role}_key"] = folder / f"{role}-key.pem"
            paths[f"{role}_key"].write_bytes(_pem_key(key))
            paths[f"{role}_key"].chmod(0o600)
    return paths


if __name__ == "__main__":
    for role, path in write_dev_certs(Path(sys.argv[1] if len(sys.argv) > 1 else "var/certs")).items():
        print(f"{role}: {path}")
