"""Who may call the model servers: tokens, API keys, scopes, rate limits, audit lines, TLS and mTLS.

Both example servers are built from a published (tiny) release with the worker
call replaced by a recorder, so each test sees whether a request reached the
model at all. The TLS tests run uvicorn on a free loopback port with the
local CA of `make certs` (`resources.certificates`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient

import serving.app
from domain.ecommerce.release import MODEL_NAME as RECOMMENDER
from domain.healthcare.release import MODEL_NAME as DIAGNOSTIC
from resources.certificates import LocalAuthority
from resources.release_folder import ReleaseFolder
from resources.runtime import RuntimeHome
from resources.signing import public_key_pem
from resources.trust_store import TrustStore
from serving import ecommerce, healthcare
from serving.access import (
    AccessDenied,
    AccessPolicy,
    ApiKeyClient,
    ApiKeys,
    Issuer,
    RateLimiter,
    TokenVerifier,
    hash_api_key,
    new_api_key,
)
from serving.settings import InsecureSettings, ServingSettings, demo_api_key
from tests.serving import write_model

ISSUER = "https://login.example.org/"
AUDIENCE = "model-servers"
PRIVATE_USER = "u-secret-4242"
PRIVATE_DICOM = "U0VDUkVURElDT00="
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the servers must refuse without TLS and authentication


@dataclass(frozen=True)
class Server:
    """One example server: its factory, model, scope, and a request to its model endpoint."""

    name: str
    create: Callable[..., FastAPI]
    model: str
    scope: str
    call: Callable[[TestClient, dict[str, str]], httpx.Response]
    secret: str  # a value of the request that must never reach the audit log


SERVERS = [
    Server(
        "ecommerce",
        ecommerce.create_recommender_app,
        RECOMMENDER,
        "recommend",
        lambda client, headers: client.get(
            "/recommend", params={"user_id": PRIVATE_USER, "k": 5}, headers=headers
        ),
        PRIVATE_USER,
    ),
    Server(
        "healthcare",
        healthcare.create_diagnostic_app,
        DIAGNOSTIC,
        "diagnose",
        lambda client, headers: client.post("/diagnose", json={"dicom": PRIVATE_DICOM}, headers=headers),
        PRIVATE_DICOM,
    ),
]


@pytest.fixture(scope="module")
def issuer_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def release_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Keys:
    """API keys of the test clients."""

    recommend: str
    slow: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(new_api_key(), new_api_key())


@pytest.fixture(scope="module")
def policy(issuer_key, keys) -> AccessPolicy:
    clients = [
        ApiKeyClient("shop-frontend", hash_api_key(keys.recommend), frozenset({"recommend", "diagnose"})),
        ApiKeyClient("slow-client", hash_api_key(keys.slow), frozenset({"recommend", "diagnose"}), 2),
    ]
    issuers = [Issuer(ISSUER, (issuer_key.public_key(),))]
    return AccessPolicy(api_keys=ApiKeys(clients), tokens=TokenVerifier(issuers, AUDIENCE))


def token(key: Any, algorithm: str = "EdDSA", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "clinic-portal", "exp": now + 300, "iat": now}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@dataclass
class Served:
    server: Server
    client: TestClient
    worker_calls: list[tuple[str, dict]]

    def call(self, headers: dict[str, str]) -> httpx.Response:
        return self.server.call(self.client, headers)


def publish(
    root: Path, model: str, release_key: ec.EllipticCurvePrivateKey
) -> tuple[RuntimeHome, TrustStore]:
    home, trust = RuntimeHome(root / "home"), TrustStore(root / "trust")
    trust.trust_release_key(public_key_pem(release_key), operator="test")
    ReleaseFolder(home.path("releases")).publish(model, write_model(root / "staged", release_key), 1)
    return home, trust


@pytest.fixture(params=SERVERS, ids=lambda server: server.name)
def served(request, tmp_path, monkeypatch, policy, release_key) -> Iterator[Served]:
    """The example server, its worker replaced by a recorder (no lifespan: no worker is started)."""
    server: Server = request.param
    calls: list[tuple[str, dict]] = []

    def recorded(app, method, params, timeout=None):
        calls.append((method, params))
        return {"answered": method}

    monkeypatch.setattr(serving.app, "call_worker", recorded)
    home, trust = publish(tmp_path, server.model, release_key)
    yield Served(server, TestClient(server.create(home, trust, policy)), calls)


def test_no_credential_gets_401_with_a_bearer_challenge(served):
    answer = served.call({})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="model-server"'
    assert served.worker_calls == []
    assert served.client.post("/predict", json={"inputs": []}).status_code == 401
    assert served.client.get("/metrics").status_code == 401
    assert served.client.get("/no-such-route").status_code == 401  # no route enumeration without a key


def _hmac_token(secret: bytes) -> str:
    """An HS256 token keyed with the issuer's public key: the algorithm-confusion forgery."""
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "x",
        "scope": "recommend diagnose",
        "exp": time.time() + 300,
    }
    signing_input = b".".join(
        jwt.utils.base64url_encode(json.dumps(part).encode())
        for part in ({"alg": "HS256", "typ": "JWT"}, claims)
    )
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


def _bad_tokens(issuer_key: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    attacker = ed25519.Ed25519PrivateKey.generate()
    valid = token(issuer_key, scope="recommend")
    head, payload, signature = valid.split(".")
    forged_payload = jwt.utils.base64url_encode(
        json.dumps(
            {**jwt.decode(valid, options={"verify_signature": False}), "scope": "recommend diagnose admin"}
        ).encode()
    ).decode()
    return {
        "expired": token(issuer_key, scope="recommend diagnose", exp=int(time.time()) - 120),
        "wrong audience": token(issuer_key, scope="recommend diagnose", aud="another-service"),
        "wrong issuer": token(issuer_key, scope="recommend diagnose", iss="https://evil.example/"),
        "unknown signer": token(attacker, scope="recommend diagnose"),
        "tampered": f"{head}.{forged_payload}.{signature}",
        "no exp": token(issuer_key, scope="recommend diagnose", exp=None),
        "no sub": token(issuer_key, scope="recommend diagnose", sub=None),
        "alg none": jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": "x",
                "scope": "recommend diagnose",
                "exp": int(time.time()) + 300,
            },
            None,
            algorithm="none",
        ),  # fmt: skip
        "HS256 with a public key": _hmac_token(public_key_pem(issuer_key.public_key())),
        "wrong API key": new_api_key(),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "expired",
        "wrong audience",
        "wrong issuer",
        "unknown signer",
        "tampered",
        "no exp",
        "no sub",
        "alg none",
        "HS256 with a public key",
        "wrong API key",
    ],
)
def test_invalid_credentials_get_401(served, issuer_key, kind):
    answer = served.call(bearer(_bad_tokens(issuer_key)[kind]))
    assert answer.status_code == 401, (kind, answer.text)
    assert answer.headers["www-authenticate"].startswith('Bearer realm="model-server", error="invalid_token"')
    assert served.worker_calls == []


def test_a_valid_token_without_the_scope_gets_403(served, issuer_key):
    other = "diagnose" if served.server.scope == "recommend" else "recommend"
    answer = served.call(bearer(token(issuer_key, scope=f"{other} admin")))
    assert answer.status_code == 403
    assert f'error="insufficient_scope", scope="{served.server.scope}"' in answer.headers["www-authenticate"]
    assert served.worker_calls == []
    predict = served.client.post(
        "/predict", json={"inputs": []}, headers=bearer(token(issuer_key, scope=other))
    )
    assert predict.status_code == 403  # /predict needs the model's scope too


def test_the_right_scope_gets_200_by_token_and_by_api_key(served, issuer_key, keys):
    by_token = served.call(bearer(token(issuer_key, scope=served.server.scope)))
    assert by_token.status_code == 200, by_token.text
    assert by_token.json() == {"answered": served.server.scope}
    by_key = served.call(bearer(keys.recommend))
    assert by_key.status_code == 200, by_key.text
    assert [method for method, _ in served.worker_calls] == [served.server.scope] * 2


def test_metrics_need_the_admin_scope(served, issuer_key, keys):
    assert served.client.get("/metrics", headers=bearer(keys.recommend)).status_code == 403
    admin = served.client.get("/metrics", headers=bearer(token(issuer_key, scope="admin")))
    assert admin.status_code == 200 and "serving_requests_total" in admin.text


def test_healthz_needs_no_credential(served):
    health = served.client.get("/healthz")
    assert health.status_code != 401 and "www-authenticate" not in health.headers


def test_over_the_rate_gets_429_with_retry_after(served, keys):
    answers = [served.call(bearer(keys.slow)) for _ in range(3)]  # slow-client: 2 a minute
    assert [a.status_code for a in answers] == [200, 200, 429]
    # 2 a minute: one request every 30 s; the calls take milliseconds, so the wait rounds up to 30.
    assert answers[2].headers["retry-after"] == "30"
    assert served.call(bearer(keys.recommend)).status_code == 200  # another client is not limited


def test_each_request_gets_one_audit_line_without_its_values(served, issuer_key, keys, caplog):
    caplog.set_level(logging.INFO, logger="serving.audit")
    served.call(bearer(keys.recommend))
    served.call(bearer(token(issuer_key, scope="admin")))
    served.call({})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "serving.audit"]
    endpoint = "/recommend" if served.server.scope == "recommend" else "/diagnose"
    assert [(line["client"], line["auth"], line["status"]) for line in lines] == [
        ("shop-frontend", "api-key", 200),
        ("clinic-portal", "jwt", 403),
        (None, None, 401),
    ]
    assert {line["endpoint"] for line in lines} == {endpoint}
    assert all(line["latency_ms"] >= 0 and "model_version" in line and line["time"] for line in lines)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert served.server.secret not in logged and keys.recommend not in logged


def test_token_keys_must_be_asymmetric_and_strong():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the key to refuse
    with pytest.raises(ValueError, match="RSA of 2048 bits or more"):
        Issuer(ISSUER, (weak.public_key(),))


def test_ec_and_rsa_issuer_keys_verify_their_own_algorithms_during_a_rotation():
    old_key, new_key = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    verifier = TokenVerifier([Issuer(ISSUER, (old_key.public_key(), new_key.public_key()))], AUDIENCE)
    for key, algorithm in ((old_key, "ES256"), (new_key, "PS256"), (new_key, "RS256")):
        principal = verifier.authenticate(token(key, algorithm, scope="recommend admin"))
        assert (principal.client_id, principal.scopes) == ("clinic-portal", frozenset({"recommend", "admin"}))
    with pytest.raises(AccessDenied, match="'ES384' is not accepted"):
        verifier.authenticate(token(ec.generate_private_key(ec.SECP384R1()), "ES384"))


def test_a_clients_file_others_can_write_is_refused(tmp_path, keys):
    path = tmp_path / "clients.json"
    ApiKeys([ApiKeyClient("a", hash_api_key(keys.recommend), frozenset({"recommend"}))]).save(path)
    assert ApiKeys.load(path).authenticate(keys.recommend).client_id == "a"
    assert keys.recommend not in path.read_text()  # only the hash is stored
    path.chmod(0o666)
    with pytest.raises(PermissionError, match="chmod go-w"):
        ApiKeys.load(path)


def test_the_demo_key_is_created_once_owner_only_and_authenticates(tmp_path):
    home = RuntimeHome(tmp_path / "home")
    key_file = demo_api_key(home)
    key = key_file.read_text()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert demo_api_key(home).read_text() == key  # a second run keeps the key
    principal = ServingSettings().access_policy(home).authenticate(f"Bearer {key}")
    assert principal.client_id == "demo" and {"recommend", "diagnose", "admin"} <= principal.scopes
    assert key not in (home.root / "serving" / "clients.json").read_text()


def test_no_configured_client_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="set SERVING_CLIENTS_FILE"):
        ServingSettings().access_policy(RuntimeHome(tmp_path / "home"))


@pytest.mark.parametrize(
    ("settings", "named", "not_named"),
    [
        ({"host": ALL_INTERFACES}, ["SERVING_TLS_CERT", "SERVING_CLIENTS_FILE"], []),
        (
            {"host": ALL_INTERFACES, "tls_cert": Path("c"), "tls_key": Path("k")},
            ["SERVING_CLIENTS_FILE"],
            ["TLS"],
        ),
        ({"host": "10.0.0.5", "clients_file": Path("c")}, ["SERVING_TLS_CERT"], ["SERVING_CLIENTS_FILE"]),
        ({"tls_cert": Path("c")}, ["SERVING_TLS_KEY"], []),
        ({"tls_client_ca": Path("ca")}, ["SERVING_TLS_CLIENT_CA (mutual TLS) needs SERVING_TLS_CERT"], []),
        ({"jwt_issuers": Path("i")}, ["SERVING_JWT_AUDIENCE"], []),
    ],
)
def test_insecure_settings_are_refused_naming_what_is_missing(settings, named, not_named):
    with pytest.raises(InsecureSettings) as refused:
        ServingSettings(**settings).check()
    assert all(name in str(refused.value) for name in named), str(refused.value)
    assert not any(name in str(refused.value) for name in not_named), str(refused.value)


def test_secure_or_loopback_settings_pass():
    ServingSettings().check()
    ServingSettings(ALL_INTERFACES, tls_cert=Path("c"), tls_key=Path("k"), clients_file=Path("f")).check()


def test_the_example_server_refuses_to_start_on_all_interfaces_without_tls(tmp_path, monkeypatch):
    # With no release under this home, only the settings check can stop the start before the factory does.
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SERVING_HOST", ALL_INTERFACES)
    monkeypatch.delenv("SERVING_CLIENTS_FILE", raising=False)
    monkeypatch.delenv("SERVING_JWT_ISSUERS", raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started"))
    with pytest.raises(
        InsecureSettings, match=r"refusing to listen on 0\.0\.0\.0 without TLS \(SERVING_TLS_CERT"
    ):
        ecommerce.main()
    assert not (tmp_path / "home" / "serving").exists()  # not even a demo key was made


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TlsServer:
    base: str
    authority: LocalAuthority
    stranger: LocalAuthority


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, policy, release_key) -> Iterator[TlsServer]:
    """The recommender over HTTPS with mutual TLS, as `serve` configures uvicorn (lifespan off: no worker)."""
    root = tmp_path_factory.mktemp("tls")
    authority, stranger = LocalAuthority(root / "ca"), LocalAuthority(root / "other-ca")
    identity = authority.server(("127.0.0.1", "localhost"))
    home, trust = publish(root, RECOMMENDER, release_key)
    patch = pytest.MonkeyPatch()
    patch.setattr(serving.app, "call_worker", lambda app, method, params, timeout=None: {"answered": method})
    settings = ServingSettings(
        port=_free_port(),
        tls_cert=identity.certificate,
        tls_key=identity.key,
        tls_client_ca=authority.certificate,
    )
    settings.check()
    app = ecommerce.create_recommender_app(home, trust, policy)
    server = uvicorn.Server(
        uvicorn.Config(app, **settings.uvicorn_options(), lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield TlsServer(settings.base_url, authority, stranger)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        patch.undo()


def _tls_client(authority: LocalAuthority, client: LocalAuthority | None, name: str = "shop") -> httpx.Client:
    context = ssl.create_default_context(cafile=authority.certificate)
    if client is not None:
        identity = client.client(name)
        context.load_cert_chain(identity.certificate, identity.key)
    return httpx.Client(verify=context, timeout=10)


def test_mtls_accepts_a_client_certificate_of_the_local_ca(tls_server, keys):
    assert tls_server.base.startswith("https://127.0.0.1:")
    with _tls_client(tls_server.authority, tls_server.authority) as http:
        answer = http.get(
            f"{tls_server.base}/recommend", params={"user_id": "u1"}, headers=bearer(keys.recommend)
        )
        assert answer.status_code == 200 and answer.json() == {"answered": "recommend"}
        assert http.get(f"{tls_server.base}/recommend", params={"user_id": "u1"}).status_code == 401


@pytest.mark.parametrize("certificate", ["another CA", "none"])
def test_mtls_refuses_a_client_without_a_certificate_of_the_local_ca(tls_server, keys, certificate):
    client = tls_server.stranger if certificate == "another CA" else None
    with _tls_client(tls_server.authority, client) as http, pytest.raises(httpx.TransportError):
        http.get(f"{tls_server.base}/recommend", params={"user_id": "u1"}, headers=bearer(keys.recommend))


def test_plain_http_to_the_tls_port_fails(tls_server, keys):
    plain = tls_server.base.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/recommend", params={"user_id": "u1"}, headers=bearer(keys.recommend), timeout=10)


def test_settings_come_from_the_environment():
    environ = {
        "SERVING_HOST": ALL_INTERFACES,
        "SERVING_PORT": "9443",
        "SERVING_CLIENTS_FILE": "/etc/serving/clients.json",
        "SERVING_TLS_CERT": "/etc/serving/server.pem",
        "SERVING_TLS_KEY": "/etc/serving/server.key",
        "SERVING_TLS_CLIENT_CA": "/etc/serving/ca.pem",
    }
    settings = ServingSettings.from_environment(8000, environ)
    settings.check()
    options = settings.uvicorn_options()
    assert options["access_log"] is False  # uvicorn's access log would hold query strings
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED and options["ssl_ca_certs"] == "/etc/serving/ca.pem"
    assert (options["host"], options["port"]) == (ALL_INTERFACES, 9443)
    assert os.fspath(settings.clients_file) == "/etc/serving/clients.json"


def test_the_bucket_refills_evenly_and_says_exactly_how_long_to_wait():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("c", 2) for _ in range(2)] == [0.0, 0.0]  # a burst up to the rate
    assert limiter.take("c", 2) == 30.0
    now[0] = 10.0
    assert limiter.take("c", 2) == pytest.approx(20.0)  # a refused request costs nothing
    now[0] = 30.0
    assert limiter.take("c", 2) == 0.0
    assert limiter.take("other", 2) == 0.0  # buckets are per client
