"""Security: bounded cost per request, the auth matrix over real TLS, the policy table, rate limits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
import scipy.sparse as sp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from clients.credentials import Credentials
from clients.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from loadtest.benches.abuse import abuse_corpus
from loadtest.benches.authmatrix import AuthMaterial, auth_matrix
from loadtest.benches.security import run_corpus
from server.apikeys import add_key
from server.app import create_server
from server.auth import DEV, Authenticator, Principal, load_api_keys
from server.bundle import Bundle, Fusion, load_bundle
from server.certidentity import identities, load_cert_principals
from server.devcerts import write_client_cert, write_dev_certs
from server.errors import PermissionDenied as DeniedError
from server.errors import Unauthenticated as UnauthenticatedError
from server.policy import ADMIN, POLICY, RECOMMENDER, authorize, rule_for
from server.ratelimit import RateLimiter
from server.settings import Settings, SettingsError
from server.triton import EmbeddedTriton
from server.validation import recommend_query
from tests.stack import Artifacts, ServerThread, settings_for


def test_policy_table_is_default_deny_with_an_admin_prefix() -> None:
    assert rule_for("/recsys.admin.v1.Rollouts/StartRollout").roles == ADMIN  # type: ignore[union-attr]
    assert rule_for("/grpc.health.v1.Health/Check").public  # type: ignore[union-attr]
    assert rule_for("/other.v1.Service/Method") is None
    for method in pb.DESCRIPTOR.services_by_name["Recommender"].methods:  # every method has its row
        assert RECOMMENDER + method.name in POLICY
    user = Principal("app", frozenset({"user"}), user_id="42")
    service = Principal("svc", frozenset({"service"}))
    recommend = rule_for(RECOMMENDER + "Recommend")
    authorize(RECOMMENDER + "Recommend", recommend, user, pb.RecommendRequest(user_id="42"))
    authorize(RECOMMENDER + "Recommend", recommend, service, pb.RecommendRequest(user_id="7"))
    with pytest.raises(DeniedError, match="acts for user '42' only"):
        authorize(RECOMMENDER + "Recommend", recommend, user, pb.RecommendRequest(user_id="7"))
    for denied in (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/recsys.admin.v1.X/Y",
        "/other.v1.Service/Method",
    ):
        with pytest.raises(DeniedError):
            authorize(denied, rule_for(denied), service, None)
    authorize("/recsys.admin.v1.X/Y", rule_for("/recsys.admin.v1.X/Y"), DEV, None)


def test_authenticator_checks_signature_expiry_and_roles() -> None:
    signer, stranger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    public = signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    auth = Authenticator(jwt_public_key=public, algorithms=["ES256"])

    def bearer(claims: dict[str, Any], key: Any = signer, alg: str = "ES256") -> list[tuple[str, str]]:
        return [("authorization", "Bearer " + jwt.encode(claims, key, algorithm=alg))]

    exp = int(time.time()) + 60
    assert auth.authenticate(bearer({"sub": "a", "roles": ["user"], "user_id": 5, "exp": exp})).user_id == "5"
    for metadata, message in [
        ([], "no credentials"),
        ([("authorization", "Basic abc")], "must be 'Bearer"),
        (bearer({"sub": "a", "roles": ["service"], "exp": exp}, stranger), "invalid token"),
        (bearer({"sub": "a", "roles": ["service"], "exp": exp - 120}), "expired"),
        (bearer({"sub": "a", "roles": ["service"]}), "exp"),
        (bearer({"sub": "a", "roles": ["root"], "exp": exp}), "roles must be"),
        (bearer({"sub": "a", "roles": ["user"], "exp": exp}), "needs a user_id"),
        (bearer({"sub": "a", "roles": ["service"], "exp": exp}, b"secret", "HS256"), "invalid token"),
    ]:
        with pytest.raises(UnauthenticatedError, match=message):
            auth.authenticate(metadata)
    assert Authenticator(dev=True).authenticate([]) is DEV
    with pytest.raises(ValueError, match="tokens are required"):
        Authenticator()


def test_token_bucket() -> None:
    limiter = RateLimiter(rps=10, burst=3)
    assert [limiter.take("a", now=0.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a", now=0.0) == pytest.approx(0.1)
    assert limiter.take("b", now=0.0) == 0  # per principal
    assert limiter.take("a", now=0.2) == 0


def _catalogue(items: int, genres: int = 19) -> Bundle:
    rng = np.random.default_rng(0)
    return Bundle(
        folder=Path("."),
        manifest={},
        item_ids=np.arange(1, items + 1),
        titles=[f"t{i}" for i in range(items)],
        years=rng.integers(1950, 2020, items),
        genre_names=[f"g{j}" for j in range(genres)],
        genres=rng.random((items, genres)) < 0.15,
        user_index={"1": 0},
        popularity=rng.random(items),
        counts=np.ones(items),
        histories=sp.csr_matrix((1, items), dtype=np.float32),
        scale=(1.0, 5.0),
        fusion=Fusion("rrf", {}),
        item_embeddings=None,
        demographics=None,
    )


def test_bad_requests_cost_milliseconds_at_a_60k_catalogue() -> None:
    bundle, settings = _catalogue(60_000), Settings(grpc_port=0)
    for case in abuse_corpus(bundle, settings):
        if not case.method.endswith("Recommend"):
            continue
        started = time.perf_counter()
        try:
            query = recommend_query(pb.RecommendRequest.FromString(case.payload), bundle, settings)
            query.filters.mask(bundle)
        except Exception:
            pass
        # The target is 500 ms end to end; the server-side work alone stays far under it (1-20 ms measured).
        assert (time.perf_counter() - started) * 1000 < 250, case.name


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> AuthMaterial:
    return AuthMaterial(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def secure_stack(
    serving_artifacts: Artifacts,
    serving_triton: EmbeddedTriton,
    material: AuthMaterial,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerThread]:
    settings = settings_for(
        serving_artifacts,
        serving_triton.grpc_url,
        tmp_path_factory.mktemp("secure"),
        **material.settings(),
        rate_limit_rps=5,
        rate_limit_burst=40,
    )
    with ServerThread(settings) as server:
        yield server


@pytest.mark.slow
def test_abuse_corpus_gets_the_right_codes_in_milliseconds(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, tmp_path: Path
) -> None:
    settings = settings_for(serving_artifacts, serving_triton.grpc_url, tmp_path)
    with ServerThread(settings) as server:
        rows = run_corpus(server.target, abuse_corpus(load_bundle(serving_artifacts.bundle), settings))
    assert [r for r in rows if r["code"] != r["expected"]] == []
    # 500 ms for all but the metadata over 4 MiB that gRPC refuses itself (loadtest/benches/amplification.py).
    assert [r for r in rows if r["ms"] >= r["within_ms"]] == [], rows


@pytest.mark.slow
def test_auth_matrix_over_tls(secure_stack: ServerThread, material: AuthMaterial, serving_artifacts: Artifacts) -> None:
    users = sorted(load_bundle(serving_artifacts.bundle).user_index)
    rows = auth_matrix(material, secure_stack.target, users[0], users[1])
    assert {r["case"] for r in rows} >= {
        "no_token",
        "bad_signature",
        "expired_token",
        "user_token_other_user_recommend",
        "service_token_any_user",
        "service_token_admin_only_reflection",
    }
    assert [r for r in rows if r["got"] != r["expected"]] == []


@pytest.mark.slow
def test_sdk_credentials_health_and_rate_limit(secure_stack: ServerThread, material: AuthMaterial) -> None:
    certs = material.certs
    tls: dict[str, Any] = {"roots": certs["ca"], "cert": certs["client"], "key": certs["client_key"]}
    with RecommenderClient(secure_stack.target, retry=NO_RETRY, credentials=Credentials.from_files(**tls)) as anon:
        assert anon.health() == "SERVING"  # probes need no token
        with pytest.raises(Unauthenticated):
            anon.onboarding_items(k=2)
    user = Credentials.from_files(token=material.token("u", ["user"], user_id="1"), **tls)
    with RecommenderClient(secure_stack.target, retry=NO_RETRY, credentials=user) as client:
        with pytest.raises(PermissionDenied, match="acts for user '1' only"):
            client.recommend("2", k=2)
        refused = None
        for _ in range(80):  # burst 40 at 5/s: the bucket runs dry well before 80
            try:
                client.onboarding_items(k=2)
            except ResourceExhausted as err:
                refused = err
                break
    assert refused is not None and "rate limit" in refused.message and 0 < (refused.retry_after_s or 0) <= 1


@pytest.mark.slow
def test_health_is_not_counted_against_the_concurrency_limit(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, tmp_path: Path
) -> None:
    settings = settings_for(serving_artifacts, serving_triton.grpc_url, tmp_path, max_concurrent_rpcs=0)
    with ServerThread(settings) as server, grpc.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.RecommenderStub(channel).GetOnboardingItems(pb.OnboardingRequest(k=2), timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "busy" in (caught.value.details() or "")
        with RecommenderClient(server.target, retry=NO_RETRY) as client:
            assert client.health() == "SERVING"


def test_api_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    service, user = add_key(path, "web", ["service"]), add_key(path, "app", ["user"], "42")
    assert service not in path.read_text()  # only hashes are stored
    auth = Authenticator(api_keys=load_api_keys(path))
    assert auth.authenticate([("authorization", f"Bearer {service}")]).roles == {"service"}
    assert auth.authenticate([("authorization", f"Bearer {user}")]).user_id == "42"
    with pytest.raises(UnauthenticatedError, match="unknown API key"):
        auth.authenticate([("authorization", "Bearer nope")])
    with pytest.raises(ValueError, match="needs a user_id"):
        add_key(path, "bad", ["user"])


def test_client_certificates_map_to_principals(tmp_path: Path) -> None:
    certs = write_dev_certs(tmp_path)
    cert = write_client_cert(tmp_path, "svc", common_name="svc cn", uris=("spiffe://t/svc",), dns=("svc.local",))
    named = identities(cert["svc"].read_bytes())
    assert named == ("uri:spiffe://t/svc", "dns:svc.local", "cn:svc cn")  # most specific first
    mapping = tmp_path / "certs.json"
    mapping.write_text(
        '{"dns:svc.local": {"name": "svc", "roles": ["service"]}, '
        '"cn:svc cn": {"name": "by-cn", "roles": ["user"], "user_id": 7}}'
    )
    auth = Authenticator(cert_principals=load_cert_principals(mapping))
    assert auth.authenticate([], named).name == "svc"  # the first identity the file names wins
    token = Authenticator(api_keys={"x": DEV}, cert_principals=load_cert_principals(mapping))
    with pytest.raises(UnauthenticatedError, match="unknown API key"):  # a token sent decides, even a bad one
        token.authenticate([("authorization", "Bearer nope")], named)
    client = identities(certs["client"].read_bytes())
    with pytest.raises(UnauthenticatedError, match=r"\(cn:recsys client\) maps to no principal: add one"):
        auth.authenticate([], client)
    with pytest.raises(UnauthenticatedError, match="no credentials"):
        auth.authenticate([])  # no certificate (TLS without mTLS) and no token
    mapping.write_text('{"svc cn": {"name": "x", "roles": ["service"]}}')
    with pytest.raises(ValueError, match="starting with one of uri:, dns:, cn:"):
        load_cert_principals(mapping)
    settings = Settings(triton_url="127.0.0.1:1", grpc_port=0, bundle=tmp_path / "none", auth_client_certs=mapping)
    with pytest.raises(SettingsError, match="without tls_client_ca"):
        create_server(settings)


def test_a_public_host_without_keys_refuses_to_start(tmp_path: Path) -> None:
    # Checked before the bundle is even read: the bundle path here does not exist.
    settings = Settings(triton_url="127.0.0.1:1", host="0.0.0.0", grpc_port=0, bundle=tmp_path / "none")
    with pytest.raises(SettingsError, match="tokens are required"):
        create_server(settings)
    with pytest.raises(SettingsError, match="needs both tls_cert and tls_key"):
        create_server(settings.model_copy(update={"auth_mode": "dev", "tls_cert": tmp_path / "c.pem"}))


@pytest.mark.slow
def test_embedded_triton_control_plane_needs_the_key(
    serving_triton: EmbeddedTriton,
    serving_artifacts: Artifacts,
) -> None:
    import tritonclient.grpc as tritongrpc
    from tritonclient.utils import InferenceServerException

    model = serving_artifacts.models[0]
    with tritongrpc.InferenceServerClient(serving_triton.grpc_url) as triton:
        assert triton.is_server_live()  # health stays open (probes)
        for control in (
            lambda: triton.load_model(model),
            lambda: triton.unload_model(model),
            lambda: triton.get_model_repository_index(),
            lambda: triton.get_model_config(model),
        ):
            with pytest.raises(InferenceServerException, match="restricted"):
                control()
        assert triton.get_model_repository_index(headers=serving_triton.control_headers) is not None
