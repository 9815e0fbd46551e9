"""A wrong Spark master or MLflow URL is refused at once, naming the setting to fix."""

import socket
import subprocess
import sys
import time

import pytest

from resources.endpoints import EndpointUnavailableError, require_reachable
from resources.tracking import ExperimentTracking


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_listening_endpoint_passes():
    with socket.create_server(("127.0.0.1", 0)) as server:
        require_reachable(f"http://127.0.0.1:{server.getsockname()[1]}", "PIPELINE_MLFLOW_URI")


def test_an_unreachable_mlflow_server_names_the_setting(closed_port):
    tracking = ExperimentTracking(tracking_uri=f"http://127.0.0.1:{closed_port}")
    started = time.monotonic()
    with pytest.raises(EndpointUnavailableError, match="PIPELINE_MLFLOW_URI") as refused:
        tracking.experiment_id()
    assert time.monotonic() - started < 10, "refused before MLflow's retries begin"
    assert "make stack" in str(refused.value)


def test_a_url_without_a_port_says_what_to_give():
    with pytest.raises(EndpointUnavailableError, match="host:7077"):
        require_reachable("spark://", "PIPELINE_SPARK_MASTER")


@pytest.mark.slow
def test_an_unreachable_spark_master_names_the_setting(closed_port, tmp_path):
    # A fresh process: this one may already hold the suite's local Spark session.
    script = tmp_path / "start.py"
    script.write_text(
        "from resources.spark import SparkResource\n"
        f"SparkResource(master='spark://127.0.0.1:{closed_port}', local_dir={str(tmp_path)!r}).session()\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"SPARK_AUTH_SECRET": "s3cret", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "EndpointUnavailableError" in result.stderr and "PIPELINE_SPARK_MASTER" in result.stderr
    assert time.monotonic() - started < 60, "refused before Spark's minute of retries"
