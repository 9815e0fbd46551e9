"""Check factory: a table validated by a Great Expectations suite."""

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


def expectation_check(key: AssetKey, suite: Suite) -> AssetChecksDefinition:
    """Blocking check that runs `suite` on the stored table (loaded and digest-verified).

    Runs on Spark so that it scales with the table; the failing expectations
    and their unexpected counts are in the check's metadata.
    """

    @asset_check(asset=key, name="expectations_met", blocking=True, description=suite.name)
    def expectations_met(
        context: AssetCheckExecutionContext,
        validator: DataValidator,
        spark: SparkResource,
        table: TableFile,
    ) -> AssetCheckResult:
        frame = spark.session().read.parquet(str(table.path))
        outcome = validator.validate(frame, suite, asset_name=key.to_user_string())
        return outcome.to_check_result()

    return expectations_met
