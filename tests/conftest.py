"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

from resources.keys import LocalKeyProvider  # noqa: E402
from resources.spark import SparkResource  # noqa: E402


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """The one hardened Spark session of the test run (starting Spark takes ~10 s)."""
    session = SparkResource(master="local[2]", local_dir=str(tmp_path_factory.mktemp("spark"))).session()
    yield session
    session.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh, empty runtime folder for one test."""
    return tmp_path / "home"


@pytest.fixture
def keys(home: Path) -> LocalKeyProvider:
    """A key provider whose keyset lives in the test's runtime folder."""
    return LocalKeyProvider(folder=str(home / "keys"))
