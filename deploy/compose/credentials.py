"""`python -m deploy.compose.credentials [folder]`: fresh credentials for `deploy/compose.yaml`.

They are made as `make stack` makes its own (`Stack.credentials`: one random secret per role of
`settings.ROLES`), and the Spark properties file is the one the stack's Spark master is started with,
secret included. Then they are split by holder, so each compose service is handed only its own:

| file | holds | given to |
|---|---|---|
| `postgres-superuser` | the superuser's password (a compose secret) | postgres, postgres-provision |
| `roles.env` | each login role's password | postgres-provision |
| `instance.env` | `DAGSTER_PG_PASSWORD` | code servers, daemon, webserver |
| `aws.env` | the S3/KMS access key pair | code servers, daemon, webserver, mlflow, s3-provision |
| `pipeline.env` | `PIPELINE_LEDGER_URL` (as `ledger_writer`), `SPARK_AUTH_SECRET` | code servers |
| `mlflow.env` | `MLFLOW_BACKEND_STORE_URI` | mlflow |
| `spark-stack.conf` | Spark's settings and shared secret (a compose secret) | spark-master, spark-worker |
| `ca.pem` | the CA clients verify Postgres, S3/KMS and MLflow against (a compose secret) | their clients |
| `postgres-server.{pem,key}`, `pg_hba.conf` | Postgres's certificate, key, TLS-only rules | postgres |
| `https-server.{pem,key}` | the HTTPS certificate and key of S3/KMS and MLflow (secrets) | s3, mlflow |
| `proxy-server.{pem,key}`, `operators`, `viewers`, `nginx.conf` | the UI proxy's TLS and passwords | proxy |
| `ui-passwords` | the UI's `operator` and `viewer` passwords | the people who sign in |

The folder is made owner-only. Compose bind-mounts a secret file into its container as it is, so the
secret files a container account must read are readable by all (the container accounts differ from
yours) and the folder is what keeps other local accounts out; the `.env` files are read by compose
itself and stay owner-only. Postgres refuses a key it does not own: before the first `up`, give
`postgres-server.key` to the image's `postgres` account (`sudo chown 999:999 ...`); nginx's master
reads its key as root. Existing files are never replaced: Postgres keeps the passwords it was set up
with in its volume.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from deploy.compose.provision import LOGIN_ROLES, role_password_variable
from deploy.stack import proxy
from deploy.stack.postgres import ADMIN
from deploy.stack.services import spark_master
from deploy.stack.settings import Stack
from resources.atomic import atomic_file
from resources.runtime import REPO_ROOT, RuntimeHome

FOLDER = REPO_ROOT / "deploy" / "compose" / "secrets"
POSTGRES = "postgres:5432"  # the postgres service and port of deploy/compose.yaml
# Where deploy/compose.yaml mounts the CA (the `pipeline_ca` secret) and the proxy's files.
CA_IN_CONTAINERS = "/run/secrets/pipeline_ca"
PROXY_FILES = Path("/etc/nginx/pipeline")
# TLS from the containers' network only; the socket is for the image's entrypoint, which creates the
# database inside the container.
COMPOSE_HBA = "local all all scram-sha-256\nhostssl all all all scram-sha-256\n"
# Bind-mounted into containers whose accounts are not the caller's (see above).
CONTAINER_READABLE = (
    "postgres-superuser", "spark-stack.conf", "ca.pem", "postgres-server.pem", "pg_hba.conf",
    "https-server.pem", "https-server.key", "proxy-server.pem", "operators", "viewers", "nginx.conf",
)  # fmt: skip


def _env(values: dict[str, str]) -> bytes:
    return "".join(f"{name}={value}\n" for name, value in values.items()).encode()


def files(stack: Stack) -> dict[str, bytes]:
    """Every file's content, from `stack`'s credentials, CA and its Spark master's properties file."""
    password = stack.credentials()
    aws = stack.aws_environment()
    master = spark_master(stack)
    master.prepare()  # writes the properties file that the master's argv names
    properties = Path(master.argv[list(master.argv).index("--properties-file") + 1])
    tls = f"sslmode=verify-full&sslrootcert={CA_IN_CONTAINERS}"
    ledger = f"postgresql+psycopg://ledger_writer:{password['ledger_writer']}@{POSTGRES}/ledger?{tls}"
    mlflow = f"postgresql+psycopg2://mlflow:{password['mlflow']}@{POSTGRES}/mlflow?{tls}"
    database = stack.authority.server(("postgres",), name="postgres")
    # MLflow's port is published on the host's loopback too.
    https = stack.authority.server(("s3", "mlflow", "localhost", "127.0.0.1"), name="https")
    front = stack.authority.server(("localhost", "127.0.0.1"), name="proxy")
    upstreams = {"/": "dagster-webserver:3000", f"{proxy.VIEWER_PREFIX}/": "dagster-webserver-read-only:3001"}
    nginx = proxy.config("0.0.0.0:8443", upstreams, PROXY_FILES, Path("/tmp/nginx"), "/dev/stdout")  # noqa: S104, S108
    return {
        "postgres-superuser": password[ADMIN].encode(),
        "roles.env": _env({role_password_variable(role): password[role] for role in LOGIN_ROLES}),
        "instance.env": _env({"DAGSTER_PG_PASSWORD": password["dagster"]}),
        "aws.env": _env({name: aws[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}),
        "pipeline.env": _env({"PIPELINE_LEDGER_URL": ledger, "SPARK_AUTH_SECRET": password["spark"]}),
        "mlflow.env": _env({"MLFLOW_BACKEND_STORE_URI": mlflow}),
        "spark-stack.conf": properties.read_bytes(),
        "ca.pem": stack.ca_certificate.read_bytes(),
        "postgres-server.pem": database.certificate.read_bytes(),
        "postgres-server.key": database.key.read_bytes(),
        "pg_hba.conf": COMPOSE_HBA.encode(),
        "https-server.pem": https.certificate.read_bytes(),
        "https-server.key": https.key.read_bytes(),
        "proxy-server.pem": front.certificate.read_bytes(),
        "proxy-server.key": front.key.read_bytes(),
        **proxy.password_files(password),
        "nginx.conf": nginx.encode(),
        "ui-passwords": _env({user: password[secret] for user, secret in proxy.USERS.items()}),
    }


def write(folder: Path) -> list[Path]:
    """Write every file into `folder`; refuse if any of them is already there."""
    with tempfile.TemporaryDirectory() as scratch:
        content = files(Stack(RuntimeHome(Path(scratch))))
    present = [name for name in content if (folder / name).exists()]
    if present:
        raise FileExistsError(
            f"{folder} already holds {', '.join(present)}. Postgres keeps the passwords it was set up "
            "with: to start over, remove the compose stack's volumes (`docker compose down --volumes`) "
            "and these files first."
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for name, data in content.items():
        with atomic_file(folder / name, mode=0o644 if name in CONTAINER_READABLE else 0o600) as handle:
            handle.write(data)
    return [folder / name for name in content]


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else FOLDER
    try:
        written = write(folder)
    except FileExistsError as error:
        print(f"credentials: {error}", file=sys.stderr)
        return 1
    print("\n".join(f"  wrote {path}" for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
