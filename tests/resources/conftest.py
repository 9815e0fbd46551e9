"""A local KMS endpoint (moto) for the key provider tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@pytest.fixture(scope="session")
def kms_endpoint() -> Iterator[str]:
    """moto's KMS on a free loopback port, shared by the test session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, kms_endpoint: str, tmp_path: Path) -> str:
    """The standard AWS variables pointing at the local endpoint, as a deployment sets them."""
    for name in ("AWS_ENDPOINT_URL_KMS", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # No configuration file of the machine's user may change the endpoint or credentials.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", kms_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return kms_endpoint


@pytest.fixture
def kms_key_uri(aws_environment: str) -> str:
    """A fresh KMS key, as the `PIPELINE_KMS_KEY_URI` a deployment would set."""
    arn = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    return f"aws-kms://{arn}"
