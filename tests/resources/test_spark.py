"""The hardened Spark resource."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resources.spark import SparkResource


def test_local_defaults_are_hardened(home):
    conf = SparkResource(local_dir=str(home / "spark")).effective_conf()

    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.ui.killEnabled"] == "false"
    assert conf["spark.eventLog.enabled"] == "false"
    assert conf["spark.io.encryption.enabled"] == "true"
    assert conf["spark.sql.ansi.enabled"] == "true"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.local.dir"].startswith(str(home / "spark"))
    # Even on one machine: Spark makes the secret itself, and RPC encryption keeps I/O encryption's keys
    # off the (loopback) wire.
    assert conf["spark.authenticate"] == "true"
    assert conf["spark.network.crypto.enabled"] == "true"
    assert not [k for k in conf if k.startswith("spark.authenticate.secret")]


def test_configured_settings_override_the_defaults(home):
    conf = SparkResource(local_dir=str(home), conf={"spark.sql.shuffle.partitions": "64"}).effective_conf()

    assert conf["spark.sql.shuffle.partitions"] == "64"
    assert conf["spark.io.encryption.enabled"] == "true"


def test_the_session_runs_with_the_hardened_settings(spark):
    applied = dict(spark.sparkContext.getConf().getAll())

    assert applied["spark.ui.enabled"] == "false"
    assert applied["spark.io.encryption.enabled"] == "true"
    assert spark.sparkContext.uiWebUrl is None
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert applied["spark.network.crypto.enabled"] == "true"
    # The JVM logs to a file in the resource's folder, and not the warning that I/O encryption's keys
    # would cross the wire unencrypted.
    log = Path(re.search(r"-Dpipeline\.spark\.log=([^\"]+)", applied["spark.driver.extraJavaOptions"])[1])
    assert log.is_file()
    assert "without RPC encryption" not in log.read_text()


def test_session_is_shared_within_the_process(spark, home):
    again = SparkResource(master="local[2]", local_dir=str(home)).session()

    assert again.sparkContext is spark.sparkContext


def test_cluster_master_without_auth_secret_fails_clearly(monkeypatch, home):
    monkeypatch.delenv("SPARK_AUTH_SECRET", raising=False)
    resource = SparkResource(master="spark://spark-master:7077", local_dir=str(home))

    with pytest.raises(RuntimeError, match="set the environment variable SPARK_AUTH_SECRET"):
        resource.effective_conf()


def test_cluster_master_authenticates_and_encrypts_without_exposing_the_secret(monkeypatch, home):
    monkeypatch.setenv("PIPELINE_SPARK_SECRET", "s3cr3t-value")
    resource = SparkResource(
        master="spark://spark-master:7077",
        local_dir=str(home),
        auth_secret_env="PIPELINE_SPARK_SECRET",  # noqa: S106 -- a variable name
    )
    conf = resource.effective_conf()

    assert conf["spark.authenticate"] == "true"
    assert conf["spark.network.crypto.enabled"] == "true"
    assert conf["spark.network.crypto.cipher"] == "AES/GCM/NoPadding"
    assert "spark.driver.bindAddress" not in conf
    assert "s3cr3t-value" not in conf.values()
