"""Check factory: a table validated by a Great Expectations suite."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetKey,
    MetadataValue,
    asset_check,
)

from resources.spark import SparkResource
from resources.tables import TableFile
from resources.validation import DataValidator, Suite

ENGINES = ("auto", "spark", "pandas")
# Up to this many rows, the suite's columns fit in pandas in tens of MB and validate in under a second,
# where Spark starts a job per expectation (about 2 s per suite at any size). Above it, Spark keeps the
# orchestrating process's memory flat as the table grows.
PANDAS_MAX_ROWS = 250_000


def validation_frame(
    table: TableFile,
    suite: Suite,
    *,
    engine: str,
    spark: SparkResource,
    pandas_max_rows: int = PANDAS_MAX_ROWS,
):
    """The stored table as the frame `suite` is validated on, and the engine that reads it.

    `auto` reads small tables into pandas and large ones with Spark. pandas
    reads only the columns the suite names (never binary columns, such as
    images, unless it names them); a column the suite names that the table
    lacks is left for the suite to report as missing.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        engine = "pandas" if table.rows <= pandas_max_rows else "spark"
    if engine == "spark":
        return spark.session().read.parquet(str(table.path)), engine
    schema = pq.read_schema(table.path)
    wanted = suite.columns  # none named (row counts only): pandas would read no rows at all
    columns = [f.name for f in schema if (f.name in wanted if wanted else not pa.types.is_binary(f.type))]
    return pd.read_parquet(table.path, columns=columns), engine


def expectation_check(key: AssetKey, suite: Suite, *, engine: str = "auto") -> AssetChecksDefinition:
    """Blocking check that runs `suite` on the stored table (loaded and digest-verified).

    `engine="auto"` validates a small table in pandas and a large one on Spark
    (`validation_frame`); `"spark"` or `"pandas"` forces one. The failing
    expectations and their unexpected counts are in the check's metadata,
    with the engine that evaluated them.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")

    @asset_check(asset=key, name="expectations_met", blocking=True, description=suite.name)
    def expectations_met(
        context: AssetCheckExecutionContext,
        validator: DataValidator,
        spark: SparkResource,
        table: TableFile,
    ) -> AssetCheckResult:
        frame, used = validation_frame(table, suite, engine=engine, spark=spark)
        outcome = validator.validate(frame, suite, asset_name=key.to_user_string())
        return outcome.to_check_result(
            extra_metadata={"engine": MetadataValue.text(used), "rows": MetadataValue.int(table.rows)}
        )

    return expectations_met
