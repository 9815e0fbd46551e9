"""Check factory: a table validated by a Great Expectations suite."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetKey,
    asset_check,
)

from resources.spark import SparkResource
from resources.tables import TableFile
from resources.validation import DataValidator, Suite


def expectation_check(key: AssetKey, suite: Suite, *, engine: str = "spark") -> AssetChecksDefinition:
    """Blocking check that runs `suite` on the stored table (loaded and digest-verified).

    `engine="spark"` scales with the table; `engine="pandas"` suits tables of
    images or documents, whose binary columns it leaves unread. The failing
    expectations and their unexpected counts are in the check's metadata.
    """
    if engine not in ("spark", "pandas"):
        raise ValueError(f"engine must be 'spark' or 'pandas', got {engine!r}")

    @asset_check(asset=key, name="expectations_met", blocking=True, description=suite.name)
    def expectations_met(
        context: AssetCheckExecutionContext,
        validator: DataValidator,
        spark: SparkResource,
        table: TableFile,
    ) -> AssetCheckResult:
        if engine == "spark":
            frame = spark.session().read.parquet(str(table.path))
        else:
            schema = pq.read_schema(table.path)
            columns = [f.name for f in schema if not pa.types.is_binary(f.type)]
            frame = pd.read_parquet(table.path, columns=columns)
        outcome = validator.validate(frame, suite, asset_name=key.to_user_string())
        return outcome.to_check_result()

    return expectations_met
