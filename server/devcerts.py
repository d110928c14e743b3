"""A private CA, a server certificate and a client certificate, for tests and local TLS trials.

    python -m server.devcerts var/certs   # ca, server (localhost, 127.0.0.1), client: NAME.pem + NAME-key.pem

Then ``--tls-cert var/certs/server.pem --tls-key var/certs/server-key.pem`` (plus ``--tls-client-ca
var/certs/ca.pem`` for mTLS; ``write_client_cert`` issues more client certificates, e.g. one whose
SAN URI ``auth_client_certs`` maps to a principal). Production certificates come from your own CA, not from here.
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
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    hosts: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts or uris:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
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
    files = {"ca": (ca, ca_key)}  # the CA key too: write_client_cert issues more client certificates
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            f"recsys {role}", key, ca.subject, ca_key, usage=usage, hosts=hosts if role == "server" else ()
        )
        files[role] = (cert, key)
    paths: dict[str, Path] = {}
    for role, (cert, key) in files.items():
        paths.update(_write(folder, role, cert, key))
    return paths


def write_client_cert(
    folder: Path, name: str, *, common_name: str, uris: tuple[str, ...] = (), dns: tuple[str, ...] = ()
) -> dict[str, Path]:
    """A client certificate ``<name>.pem``/``-key.pem`` naming ``common_name`` (and SAN ``uris``,
    ``dns``), signed by the CA that ``write_dev_certs`` left in ``folder``."""
    folder = Path(folder)
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey), "write_dev_certs makes EC CA keys"
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        common_name, key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH, hosts=dns, uris=uris
    )
    return _write(folder, name, cert, key)


def _write(folder: Path, role: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> dict[str, Path]:
    paths = {role: folder / f"{role}.pem", f"{role}_key": folder / f"{role}-key.pem"}
    paths[role].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[f"{role}_key"].write_bytes(_pem_key(key))
    paths[f"{role}_key"].chmod(0o600)
    return paths


if __name__ == "__main__":
    for role, path in write_dev_certs(Path(sys.argv[1] if len(sys.argv) > 1 else "var/certs")).items():
        print(f"{role}: {path}")
