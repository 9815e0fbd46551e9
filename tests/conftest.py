"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

from resources.spark import SparkResource  # noqa: E402


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """The one hardened Spark session of the test run (starting Spark takes ~10 s)."""
    session = SparkResource(master="local[2]").session()
    yield session
    session.stop()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty runtime folder for one test."""
    path = tmp_path / "home"
    monkeypatch.setenv("PIPELINE_HOME", str(path))
    return path
