"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from resources.spark import SparkResource


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """The one hardened Spark session of the test run (starting Spark takes ~10 s)."""
    session = SparkResource(master="local[2]").session()
    yield session
    session.stop()
