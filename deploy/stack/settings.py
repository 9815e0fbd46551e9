"""Where each stack service listens, where it keeps its files, and the credentials it was given.

Ports are consecutive from `PIPELINE_STACK_PORT` (default 25400), so a second
stack (a test session's) can run beside a developer's. They stay below the
kernel's ephemeral range (32768+ on Linux), where any outgoing connection can
take a port from under a server that has not started yet. Credentials are
generated on the first `up`, kept owner-only in `stack/credentials.json`, and
handed to each process through its environment, never on a command line.

Postgres, the S3/KMS endpoint, MLflow and the UI's proxy speak TLS only, with
certificates from the stack's own CA (`stack/ca/`), and their clients verify
them against that CA alone. Spark encrypts its RPC under its shared secret;
the webservers and code servers listen on loopback only.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from resources.atomic import atomic_file, atomic_write_bytes
from resources.certificates import Identity, LocalAuthority
from resources.runtime import REPO_ROOT, RuntimeHome

HOST = "127.0.0.1"
REGION = "us-east-1"
LOCATIONS = {"ecommerce": "pipelines.ecommerce", "healthcare": "pipelines.healthcare"}
BUCKETS = {
    "store": "pipeline-store",
    "dvc": "pipeline-dvc",
    "mlflow": "pipeline-mlflow",
    "logs": "pipeline-logs",
}
# One role per holder. The ledger's owner creates its table; the pipeline writes as `ledger_writer`,
# which may insert and read but never update or delete (enforced by Postgres, not by our code).
# `ui_operator` and `ui_viewer` sign in to the UI's proxy: the full UI, and the read-only one.
ROLES = (
    "superuser", "dagster", "mlflow", "ledger_owner", "ledger_writer", "aws", "spark",
    "ui_operator", "ui_viewer",
)  # fmt: skip
_PORTS = (
    "postgres", "s3", "mlflow", "spark", "spark_ui", "spark_worker_ui", "webserver", *LOCATIONS,
    "webserver_read_only", "proxy",
)  # fmt: skip
PORTS = len(_PORTS)  # how many consecutive ports a stack takes from its base port


@dataclass(frozen=True)
class Stack:
    """One stack: its folder under the runtime home and its first port."""

    home: RuntimeHome
    base_port: int = 25400
    sensor_interval_s: int | None = None  # how often its sensors look; None: the pipeline's default

    @classmethod
    def from_environment(cls) -> Stack:
        return cls(RuntimeHome.from_environment(), int(os.environ.get("PIPELINE_STACK_PORT") or 25400))

    def port(self, service: str) -> int:
        return self.base_port + _PORTS.index(service)

    def folder(self, *parts: str) -> Path:
        return self.home.path("stack", *parts)

    @property
    def dagster_home(self) -> Path:
        return self.folder("dagster")

    @property
    def pipeline_home(self) -> Path:
        """The runtime home of the pipeline the stack serves, apart from the embedded demo's."""
        return self.folder("home")

    @property
    def kms_key_file(self) -> Path:
        return self.folder() / "kms-key-uri"

    @property
    def authority(self) -> LocalAuthority:
        """The stack's CA: it issues the servers' certificates, and every client trusts it alone."""
        return LocalAuthority(self.folder("ca"))

    @property
    def ca_certificate(self) -> Path:
        return self.authority.certificate

    @property
    def https_identity(self) -> Identity:
        """The certificate and key of the stack's HTTPS endpoints, S3/KMS and MLflow: both run as this
        account, so they share one (`issue_https_identity` writes it)."""
        folder = self.folder("tls")
        return Identity(folder / "server.pem", folder / "server.key")

    def issue_https_identity(self) -> None:
        """A certificate for 127.0.0.1 and localhost from the stack's CA, and its key, owner-only."""
        issued = self.authority.server((HOST, "localhost"), name="https")
        target = self.https_identity
        atomic_write_bytes(target.certificate, issued.certificate.read_bytes(), mode=0o600)
        atomic_write_bytes(target.key, issued.key.read_bytes(), mode=0o600)
        issued.key.unlink()  # the servers' copy is the only one

    def credentials(self) -> dict[str, str]:
        """Each role's password (or secret), generated once and kept owner-only."""
        path = self.folder() / "credentials.json"
        if path.exists():
            return json.loads(path.read_text())
        made = {role: secrets.token_urlsafe(24) for role in ROLES}
        with atomic_file(path) as handle:
            handle.write(json.dumps(made, indent=2).encode())
        return made

    def postgres_url(self, role: str, database: str, driver: str = "psycopg") -> str:
        """A URL that connects only over TLS to a server whose certificate the stack's CA signed."""
        password = self.credentials()[role]
        tls = f"sslmode=verify-full&sslrootcert={self.ca_certificate}"
        return f"postgresql+{driver}://{role}:{password}@{HOST}:{self.port('postgres')}/{database}?{tls}"

    def s3_endpoint(self) -> str:
        return f"https://{HOST}:{self.port('s3')}"

    def mlflow_uri(self) -> str:
        return f"https://{HOST}:{self.port('mlflow')}"

    def aws_environment(self) -> dict[str, str]:
        """What boto3, s3fs and DVC read to reach the S3/KMS endpoint, and to verify it against the CA."""
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint(),
            "AWS_CA_BUNDLE": str(self.ca_certificate),
            "AWS_ACCESS_KEY_ID": "pipeline",
            "AWS_SECRET_ACCESS_KEY": self.credentials()["aws"],
            "AWS_DEFAULT_REGION": REGION,
        }

    def instance_environment(self) -> dict[str, str]:
        """What `deploy/dagster.yaml` and `deploy/workspace.yaml` read."""
        return {
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_HOST": HOST,
            "DAGSTER_PG_PORT": str(self.port("postgres")),
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": self.credentials()["dagster"],
            "DAGSTER_PG_DB": "dagster",
            # deploy/dagster.yaml asks for `sslmode=verify-full`; libpq reads the CA to verify against here.
            "PGSSLROOTCERT": str(self.ca_certificate),
            "DAGSTER_COMPUTE_LOG_BUCKET": BUCKETS["logs"],
            **{f"PIPELINE_{name.upper()}_GRPC_HOST": HOST for name in LOCATIONS},
            **{f"PIPELINE_{name.upper()}_GRPC_PORT": str(self.port(name)) for name in LOCATIONS},
            **self.aws_environment(),
        }

    def pipeline_environment(self) -> dict[str, str]:
        """The pipeline's settings (`pipelines/environment.py`) pointed at the stack's services."""
        kms_key_uri = self.kms_key_file.read_text().strip() if self.kms_key_file.exists() else ""
        settings = {
            "PIPELINE_HOME": str(self.pipeline_home),
            # The operator's trust store stays outside the pipeline's home, beside it (the pipeline
            # reads it; the operator's key, which writes it, is given to no service).
            "PIPELINE_TRUST_STORE": str(self.folder("home-trust")),
            "PIPELINE_KMS_KEY_URI": kms_key_uri,
            "PIPELINE_STORE_URL": f"s3://{BUCKETS['store']}/pipeline",
            "PIPELINE_LEDGER_URL": self.postgres_url("ledger_writer", "ledger"),
            "PIPELINE_DVC_REMOTE": f"s3://{BUCKETS['dvc']}/remote",
            "PIPELINE_SPARK_MASTER": f"spark://{HOST}:{self.port('spark')}",
            "SPARK_AUTH_SECRET": self.credentials()["spark"],
            "SPARK_LOCAL_IP": HOST,
            "PIPELINE_MLFLOW_URI": self.mlflow_uri(),
            # MLflow's client verifies the tracking server against this CA (and no other).
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.ca_certificate),
            **self.instance_environment(),
        }
        if self.sensor_interval_s is not None:
            settings["PIPELINE_SENSOR_INTERVAL_SECONDS"] = str(self.sensor_interval_s)
        return settings

    def environment(self, settings: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a process the stack starts: this process's, the repository on the
        Python path, and the stack's `settings` that process needs (none of the others' secrets)."""
        return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(settings or {})}
