"""MLflow, Spark and Dagster processes of the stack, in the order they start."""

from __future__ import annotations

import shlex
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pyspark

from deploy.stack import objectstore, postgres, proxy
from deploy.stack.processes import Service
from deploy.stack.settings import BUCKETS, HOST, LOCATIONS, Stack
from resources.atomic import atomic_file, atomic_write_bytes
from resources.runtime import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
BIN = Path(sys.executable).parent
SPARK_HOME = Path(pyspark.__file__).parent


def _ok(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    return httpx.get(url, verify=verify, timeout=2).status_code == 200


def mlflow(stack: Stack) -> Service:
    """The tracking server, HTTPS only (uvicorn, with the certificate the S3/KMS endpoint's `prepare`
    issued), its runs in Postgres and its artifacts proxied to the bucket."""
    port = stack.port("mlflow")
    tls = stack.https_identity
    return Service(
        name="mlflow",
        argv=[
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--serve-artifacts",
            "--uvicorn-opts",
            shlex.join(["--ssl-keyfile", str(tls.key), "--ssl-certfile", str(tls.certificate)]),
        ],  # fmt: skip
        env=lambda: {
            **stack.environment(stack.aws_environment()),
            "MLFLOW_BACKEND_STORE_URI": stack.postgres_url("mlflow", "mlflow", driver="psycopg2"),
            "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKETS['mlflow']}/artifacts",
            "MLFLOW_S3_ENDPOINT_URL": stack.s3_endpoint(),
        },
        healthy=lambda: _ok(
            f"{stack.mlflow_uri()}/health", ssl.create_default_context(cafile=stack.ca_certificate)
        ),
        port=port,
        timeout_s=180,
        hint="MLflow migrates its database on first start; its log says what failed.",
    )


def _spark_properties_file(stack: Stack) -> Path:
    return stack.folder("spark") / "spark-stack.conf"


def _write_spark_properties(stack: Stack) -> None:
    """Master and worker settings, secret included, in an owner-only file (not on a command line)."""
    path = _spark_properties_file(stack)
    settings = {
        "spark.authenticate": "true",
        "spark.authenticate.secret": stack.credentials()["spark"],
        "spark.network.crypto.enabled": "true",
        "spark.network.crypto.cipher": "AES/GCM/NoPadding",
        "spark.network.crypto.saslFallback": "false",
        "spark.io.encryption.enabled": "true",
        "spark.ui.killEnabled": "false",
        "spark.master.rest.enabled": "false",
        "spark.worker.cleanup.enabled": "true",
    }
    with atomic_file(path) as handle:
        handle.write("".join(f"{key} {value}\n" for key, value in settings.items()).encode())


def _spark_env(stack: Stack) -> dict[str, str]:
    return {
        **stack.environment({"SPARK_LOCAL_IP": HOST}),
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOG_DIR": str(stack.folder("logs")),
        "PYSPARK_PYTHON": sys.executable,
    }


def _alive_workers(stack: Stack) -> int:
    state = httpx.get(f"http://{HOST}:{stack.port('spark_ui')}/json/", timeout=2).json()
    return sum(worker["state"] == "ALIVE" for worker in state.get("workers", []))


def spark_master(stack: Stack) -> Service:
    ui = stack.port("spark_ui")
    return Service(
        name="spark-master",
        argv=[
            str(SPARK_HOME / "bin" / "spark-class"),
            "org.apache.spark.deploy.master.Master",
            "--host",
            HOST,
            "--port",
            str(stack.port("spark")),
            "--webui-port",
            str(ui),
            "--properties-file",
            str(_spark_properties_file(stack)),
        ],  # fmt: skip
        env=lambda: _spark_env(stack),
        prepare=lambda: _write_spark_properties(stack),
        healthy=lambda: httpx.get(f"http://{HOST}:{ui}/json/", timeout=2).json()["status"] == "ALIVE",
        port=stack.port("spark"),
        hint="Spark needs Java 17+ on PATH.",
    )


def spark_worker(stack: Stack) -> Service:
    return Service(
        name="spark-worker",
        argv=[
            str(SPARK_HOME / "bin" / "spark-class"),
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            HOST,
            "--webui-port",
            str(stack.port("spark_worker_ui")),
            "--work-dir",
            str(stack.folder("spark", "work")),
            "--cores",
            "2",
            "--memory",
            "2g",
            "--properties-file",
            str(_spark_properties_file(stack)),
            f"spark://{HOST}:{stack.port('spark')}",
        ],  # fmt: skip
        env=lambda: _spark_env(stack),
        healthy=lambda: _alive_workers(stack) >= 1,
        port=stack.port("spark_worker_ui"),
        hint="The worker must share the master's secret (spark-stack.conf).",
    )


def _install_instance(stack: Stack) -> None:
    atomic_write_bytes(stack.dagster_home / "dagster.yaml", (DEPLOY / "dagster.yaml").read_bytes())


def _succeeds(argv: list, env: dict[str, str]) -> bool:
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0


def code_server(stack: Stack, location: str) -> Service:
    port = stack.port(location)
    return Service(
        name=f"code-server-{location}",
        argv=[
            str(BIN / "dagster"),
            "code-server",
            "start",
            "-h",
            HOST,
            "-p",
            str(port),
            "-m",
            LOCATIONS[location],
            "--location-name",
            location,
        ],  # fmt: skip
        # Only the code servers (and the runs they launch) hold the pipeline's settings and secrets.
        env=lambda: stack.environment(stack.pipeline_environment()),
        cwd=REPO_ROOT,
        prepare=lambda: _install_instance(stack),
        healthy=lambda: _succeeds(
            [BIN / "dagster", "api", "grpc-health-check", "-h", HOST, "-p", str(port)], stack.environment()
        ),
        port=port,
        timeout_s=300,
        hint="The location failed to load; its log has the traceback.",
    )


def daemon(stack: Stack) -> Service:
    return Service(
        name="dagster-daemon",
        argv=[str(BIN / "dagster-daemon"), "run", "-w", str(DEPLOY / "workspace.yaml")],
        env=lambda: stack.environment(stack.instance_environment()),
        cwd=REPO_ROOT,
        healthy=lambda: _succeeds(
            [BIN / "dagster-daemon", "liveness-check"], stack.environment(stack.instance_environment())
        ),
        port=0,
        timeout_s=180,
    )


def webserver(stack: Stack, read_only: bool = False) -> Service:
    """The UI on a loopback port, reached by people only through the proxy (`deploy/stack/proxy.py`).

    The read-only one serves viewers under the proxy's `/viewer/` and refuses every mutation.
    """
    port = stack.port("webserver_read_only" if read_only else "webserver")
    viewer = ["--read-only", "--path-prefix", proxy.VIEWER_PREFIX] if read_only else []
    return Service(
        name="dagster-webserver-read-only" if read_only else "dagster-webserver",
        argv=[
            str(BIN / "dagster-webserver"),
            "-h",
            HOST,
            "-p",
            str(port),
            "-w",
            str(DEPLOY / "workspace.yaml"),
            *viewer,
        ],
        env=lambda: stack.environment(stack.instance_environment()),
        cwd=REPO_ROOT,
        healthy=lambda: _ok(f"http://{HOST}:{port}{proxy.VIEWER_PREFIX if read_only else ''}/server_info"),
        port=port,
        timeout_s=180,
    )


def all_services(stack: Stack) -> list[Service]:
    """Every service, in start order (stop in reverse)."""
    return [
        postgres.service(stack),
        objectstore.service(stack),
        mlflow(stack),
        spark_master(stack),
        spark_worker(stack),
        *(code_server(stack, location) for location in LOCATIONS),
        daemon(stack),
        webserver(stack),
        webserver(stack, read_only=True),
        proxy.service(stack),
    ]
