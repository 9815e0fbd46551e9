"""Who reaches the stack's services, and how: Postgres, the S3/KMS endpoint and MLflow over verified TLS
only, the UI only through its authenticating proxy, and the viewers' UI unable to launch anything."""

from __future__ import annotations

import base64
import os
import socket
import ssl
from pathlib import Path

import boto3
import botocore.exceptions
import httpx
import psycopg
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from deploy.stack import proxy
from deploy.stack.postgres import ADMIN
from deploy.stack.runs import StackRuns
from deploy.stack.services import mlflow
from deploy.stack.settings import HOST, Stack
from resources.certificates import LocalAuthority

pytestmark = pytest.mark.slow

LAUNCH = """mutation {
  launchRun(executionParams: {selector: {repositoryLocationName: "ecommerce",
      repositoryName: "__repository__", jobName: "ecommerce_baseline"}}) {
    __typename
  }
}"""


def _connect(stack: Stack, **tls: str) -> psycopg.Connection:
    return psycopg.connect(
        host=HOST,
        port=stack.port("postgres"),
        user=ADMIN,
        password=stack.credentials()[ADMIN],
        dbname="postgres",
        connect_timeout=5,
        **tls,
    )


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that never issued anything to the stack."""
    authority = LocalAuthority(tmp_path_factory.mktemp("other") / "ca")
    authority.server()
    return authority.certificate


def test_postgres_refuses_a_client_without_tls(stack):
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry.*no encryption"):
        _connect(stack, sslmode="disable")


def test_postgres_refuses_tls_verified_against_another_ca(stack, other_ca):
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(stack, sslmode="verify-full", sslrootcert=str(other_ca))


def test_every_client_of_postgres_asks_for_verified_tls(stack, runs):
    """The instance (daemon, webserver, code servers and runs), the ledger's writers and MLflow connect
    with verify-full against the stack's CA, and the sessions the server holds are all encrypted."""
    clients = {
        "instance": runs.instance.run_storage.postgres_url,
        "ledger": stack.pipeline_environment()["PIPELINE_LEDGER_URL"],
        "mlflow": mlflow(stack).env()["MLFLOW_BACKEND_STORE_URI"],
    }
    assert [name for name, url in clients.items() if "sslmode=verify-full" not in url] == []
    assert os.environ["PGSSLROOTCERT"] == str(stack.ca_certificate)  # where the instance's libpq looks
    with _connect(stack, sslmode="verify-full", sslrootcert=str(stack.ca_certificate)) as conn:
        sessions = conn.execute(
            "SELECT a.usename, s.ssl, s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.backend_type = 'client backend'"
        ).fetchall()
    assert "mlflow" in {user for user, _, _ in sessions}  # MLflow keeps its pool open
    assert {(ssl, version) for _, ssl, version in sessions} == {(True, "TLSv1.3")}


def _trusting(ca_certificate: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_certificate)


def _https_url(stack: Stack, service: str) -> str:
    return {"s3": f"{stack.s3_endpoint()}/moto-api/", "mlflow": f"{stack.mlflow_uri()}/health"}[service]


@pytest.mark.parametrize("service", ["s3", "mlflow"])
def test_s3_and_mlflow_serve_only_tls_with_the_stacks_certificate(stack, other_ca, service):
    url = _https_url(stack, service)
    assert url.startswith("https://")
    assert httpx.get(url, verify=_trusting(stack.ca_certificate), timeout=10).status_code == 200
    # The server takes the connection and breaks a plain request off: no HTTP answer comes back.
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(url.replace("https://", "http://", 1), timeout=10)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url, verify=_trusting(other_ca), timeout=10)


def test_s3_and_mlflow_clients_verify_against_the_ca_the_environment_names(stack, stack_env, other_ca):
    """boto3 (and s3fs, DVC, Dagster's log manager through it) and MLflow's client trust the CA in
    `AWS_CA_BUNDLE` and `MLFLOW_TRACKING_SERVER_CERT_PATH`: the stack's passes, another CA fails."""
    assert stack_env["AWS_CA_BUNDLE"] == stack_env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    assert stack_env["AWS_CA_BUNDLE"] == str(stack.ca_certificate)
    assert "Buckets" in boto3.client("s3").list_buckets()
    assert "Default" in {e.name for e in MlflowClient(stack.mlflow_uri()).search_experiments()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_CA_BUNDLE", str(other_ca))
        patch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(other_ca))
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(botocore.exceptions.SSLError):
            boto3.client("s3").list_buckets()
        with pytest.raises(MlflowException, match="CERTIFICATE_VERIFY_FAILED"):
            MlflowClient(stack.mlflow_uri()).search_experiments()


def _proxy_url(stack: Stack, path: str) -> str:
    return f"https://{HOST}:{stack.port('proxy')}{path}"


@pytest.mark.parametrize("path", ["/graphql", "/server_info", "/viewer/graphql", "/"])
def test_the_ui_proxy_turns_away_anyone_not_signed_in(stack, path):
    answer = httpx.get(_proxy_url(stack, path), verify=_trusting(stack.ca_certificate), timeout=10)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Basic")


def test_the_ui_proxy_refuses_a_wrong_password_and_a_viewer_on_the_full_ui(stack):
    wrong = httpx.get(
        _proxy_url(stack, "/server_info"),
        auth=("operator", "not-the-password"),
        verify=_trusting(stack.ca_certificate),
        timeout=10,
    )
    assert wrong.status_code == 401
    with proxy.client(stack, "viewer") as viewer:
        assert viewer.get("/graphql").status_code == 401
        assert viewer.get("/viewer/server_info").status_code == 200


def test_the_ui_proxy_serves_only_tls_with_the_stacks_certificate(stack, other_ca):
    plain = httpx.get(f"http://{HOST}:{stack.port('proxy')}/server_info", timeout=10)
    assert plain.status_code == 400  # nginx: a plain HTTP request to its TLS port
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(_proxy_url(stack, "/server_info"), verify=_trusting(other_ca), timeout=10)


def test_the_operator_reaches_the_ui_graphql_and_its_websocket(stack):
    with proxy.client(stack) as operator:
        answer = operator.post("/graphql", json={"query": "{ version }"})
    assert answer.status_code == 200
    assert answer.json()["data"]["version"]
    # The UI's live updates: a websocket upgrade must pass the proxy.
    token = base64.b64encode(f"operator:{stack.credentials()['ui_operator']}".encode()).decode()
    request = (
        f"GET /graphql HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Basic {token}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: graphql-ws\r\n\r\n"
    )
    with (
        socket.create_connection((HOST, stack.port("proxy")), timeout=10) as raw,
        _trusting(stack.ca_certificate).wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        tls.sendall(request.encode())
        status = tls.recv(4096).decode(errors="replace").splitlines()[0]
    assert status.startswith("HTTP/1.1 101"), status


def test_the_read_only_ui_refuses_to_launch_a_run(stack, runs: StackRuns):
    known = runs.known()
    with proxy.client(stack, "viewer") as viewer:
        answer = viewer.post("/viewer/graphql", json={"query": LAUNCH})
        listed = viewer.post("/viewer/graphql", json={"query": "{ version }"})
    assert answer.status_code == 200
    assert answer.json()["data"]["launchRun"]["__typename"] == "UnauthorizedError"
    assert listed.json()["data"]["version"]  # it answers queries: only mutations are refused
    assert runs.launched(known) == []
