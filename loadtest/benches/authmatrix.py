"""The authentication/authorization matrix, run over a real TLS connection: each row {case, expected, got}.

``AuthMaterial`` makes everything a token-mode server with mTLS needs (CA, certificates, a JWT
key pair, an API-key file) in a folder, and the settings that point at it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from server.devcerts import write_client_cert, write_dev_certs

API_KEY = "svc-key-for-the-matrix"
SERVICE_URI = "spiffe://recsys.test/ns/batch/sa/exporter"
ADMIN_CN = "recsys operator"


def _private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class AuthMaterial:
    folder: Path

    def __post_init__(self) -> None:
        self.certs = write_dev_certs(self.folder / "certs")
        self.signer, self.stranger = _private_key(), _private_key()  # the stranger's tokens must fail
        self.public_key = self.folder / "jwt-public.pem"
        self.public_key.write_bytes(
            self.signer.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.api_keys = self.folder / "api-keys.json"
        self.api_keys.write_text(
            json.dumps({hashlib.sha256(API_KEY.encode()).hexdigest(): {"name": "matrix-service", "roles": ["service"]}})
        )
        # Certificates as credentials: a service named by a SAN URI, an operator by its CN; the
        # plain "recsys client" certificate is signed by the same CA but maps to nobody.
        folder = self.folder / "certs"
        self.certs.update(write_client_cert(folder, "service_cert", common_name="batch job", uris=(SERVICE_URI,)))
        self.certs.update(write_client_cert(folder, "admin_cert", common_name=ADMIN_CN))
        self.client_certs = self.folder / "client-certs.json"
        self.client_certs.write_text(
            json.dumps(
                {
                    f"uri:{SERVICE_URI}": {"name": "batch", "roles": ["service"]},
                    f"cn:{ADMIN_CN}": {"name": "ops", "roles": ["admin"]},
                }
            )
        )

    def settings(self) -> dict[str, Any]:
        return {
            "auth_mode": "token",
            "auth_jwt_public_key": self.public_key,
            "auth_jwt_algorithms": ["ES256"],
            "auth_api_keys": self.api_keys,
            "tls_cert": self.certs["server"],
            "tls_key": self.certs["server_key"],
            "tls_client_ca": self.certs["ca"],
            "auth_client_certs": self.client_certs,
        }

    def token(
        self,
        name: str,
        roles: list[str],
        user_id: str | None = None,
        ttl_s: float = 300,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> str:
        claims = {"sub": name, "roles": roles, "exp": int(time.time() + ttl_s)}
        if user_id is not None:
            claims["user_id"] = user_id
        return jwt.encode(claims, key or self.signer, algorithm="ES256")

    def channel(self, target: str, client_cert: str | None = "client") -> grpc.Channel:
        """A TLS channel presenting the client certificate named (``None``: none)."""
        roots = self.certs["ca"].read_bytes()
        key, cert = (
            (self.certs[f"{client_cert}_key"].read_bytes(), self.certs[client_cert].read_bytes())
            if client_cert
            else (None, None)
        )
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(roots, key, cert))


def _code(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as err:
        return err.code().name
    return "OK"


def auth_matrix(material: AuthMaterial, target: str, user: str, other_user: str) -> list[dict[str, str]]:
    m = material
    bearer = {
        "none": None,
        "garbage": "not.a.token",
        "bad_signature": m.token("mallory", ["service"], key=m.stranger),
        "expired": m.token("svc", ["service"], ttl_s=-60),
        "user": m.token("u", ["user"], user_id=user),
        "service": m.token("svc", ["service"]),
        "admin": m.token("ops", ["admin"]),
        "api_key": API_KEY,
    }
    rows: list[dict[str, str]] = []
    with m.channel(target) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)

        def meta(who: str) -> tuple[tuple[str, str], ...]:
            token = bearer[who]
            return () if token is None else (("authorization", f"Bearer {token}"),)

        def recommend(who: str, uid: str) -> Callable[[], object]:
            return lambda: stub.Recommend(
                pb.RecommendRequest(user_id=uid, k=3, explain=True), metadata=meta(who), timeout=10
            )

        def feedback(who: str, uid: str) -> Callable[[], object]:
            event = pb.FeedbackEvent(item_id=material_item[0], kind=pb.FEEDBACK_KIND_CLICK)
            return lambda: stub.RecordFeedback(
                pb.RecordFeedbackRequest(user_id=uid, events=[event]), metadata=meta(who), timeout=10
            )

        def reflection(who: str) -> Callable[[], object]:
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            return lambda: list(reflect.ServerReflectionInfo(iter([request]), metadata=meta(who), timeout=10))

        material_item = [
            int(
                stub.GetOnboardingItems(pb.OnboardingRequest(k=1), metadata=meta("service"), timeout=10)
                .items[0]
                .item_id
            )
        ]
        cases = [
            ("no_token", recommend("none", user), "UNAUTHENTICATED"),
            ("garbage_token", recommend("garbage", user), "UNAUTHENTICATED"),
            ("bad_signature", recommend("bad_signature", user), "UNAUTHENTICATED"),
            ("expired_token", recommend("expired", user), "UNAUTHENTICATED"),
            ("user_token_own_user_explain", recommend("user", user), "OK"),
            ("user_token_other_user_recommend", recommend("user", other_user), "PERMISSION_DENIED"),
            ("user_token_other_user_feedback", feedback("user", other_user), "PERMISSION_DENIED"),
            ("user_token_own_user_feedback", feedback("user", user), "OK"),
            (
                "user_token_list_models",
                lambda: stub.ListModels(pb.ListModelsRequest(), metadata=meta("user"), timeout=10),
                "PERMISSION_DENIED",
            ),
            ("service_token_any_user", recommend("service", other_user), "OK"),
            ("service_token_feedback_any_user", feedback("service", other_user), "OK"),
            ("api_key_service", recommend("api_key", user), "OK"),
            ("service_token_admin_only_reflection", reflection("service"), "PERMISSION_DENIED"),
            ("admin_token_reflection", reflection("admin"), "OK"),
        ]
        rows += [{"case": name, "expected": expected, "got": _code(call)} for name, call, expected in cases]
    rows += _certificate_rows(m, target, other_user)
    with m.channel(target, client_cert=None) as channel:  # mTLS: no client certificate, no connection
        no_cert = pb_grpc.RecommenderStub(channel)
        rows.append(
            {
                "case": "mtls_without_client_certificate",
                "expected": "UNAVAILABLE",
                "got": _code(
                    lambda: no_cert.GetOnboardingItems(pb.OnboardingRequest(k=1), metadata=meta("service"), timeout=5)
                ),
            }
        )
    with grpc.insecure_channel(target) as channel:  # plaintext to the TLS port
        plain = pb_grpc.RecommenderStub(channel)
        rows.append(
            {
                "case": "plaintext_to_tls_port",
                "expected": "UNAVAILABLE",
                "got": _code(
                    lambda: plain.GetOnboardingItems(pb.OnboardingRequest(k=1), metadata=meta("service"), timeout=5)
                ),
            }
        )
    return rows


def _certificate_rows(m: AuthMaterial, target: str, other_user: str) -> list[dict[str, str]]:
    """mTLS without a token: the client certificate is the credential (``auth_client_certs``)."""

    def recommend(channel: grpc.Channel, token: str | None = None) -> Callable[[], object]:
        meta: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        return lambda: pb_grpc.RecommenderStub(channel).Recommend(
            pb.RecommendRequest(user_id=other_user, k=3), metadata=meta, timeout=10
        )

    def reflection(channel: grpc.Channel) -> Callable[[], object]:
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        return lambda: list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=10)
        )

    with (
        m.channel(target, "service_cert") as service,
        m.channel(target, "admin_cert") as admin,
        m.channel(target, "client") as unmapped,
    ):
        cases = [
            ("cert_san_uri_service_any_user", recommend(service), "OK"),
            ("cert_service_admin_only_reflection", reflection(service), "PERMISSION_DENIED"),
            ("cert_cn_admin_reflection", reflection(admin), "OK"),
            ("cert_unmapped_without_token", recommend(unmapped), "UNAUTHENTICATED"),
            # A token, when sent, decides: a user token over the service certificate acts for its user only.
            (
                "cert_service_with_user_token_other_user",
                recommend(service, m.token("u", ["user"], user_id=f"not-{other_user}")),
                "PERMISSION_DENIED",
            ),
        ]
        return [{"case": name, "expected": expected, "got": _code(call)} for name, call, expected in cases]
