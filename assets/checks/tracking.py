"""Check factory: the model's MLflow run names the exact training data the ledger recorded."""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from assets.checks.evidence import materialization_metadata
from resources.integrity import IntegrityLedger
from resources.tracking import ExperimentTracking


def tracking_check(model: AssetKey, dataset: AssetKey) -> AssetChecksDefinition:
    """Blocking check that the model's MLflow run logged `dataset` with the ledger's digest."""

    @asset_check(asset=model, name="training_run_tracked", blocking=True)
    def training_run_tracked(
        context: AssetCheckExecutionContext, tracking: ExperimentTracking, ledger: IntegrityLedger
    ) -> AssetCheckResult:
        """The MLflow run names the exact training-set digest the ledger recorded."""
        run_id = materialization_metadata(context, model).get("mlflow_run_id", "")
        logged = {d["name"]: d["digest"] for d in tracking.run_inputs(run_id)} if run_id else {}
        expected = ledger.latest(dataset.to_user_string())
        passed = expected is not None and logged.get(dataset.to_user_string()) == expected.digest
        return AssetCheckResult(
            passed=passed,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "mlflow_run_id": run_id,
                "logged": MetadataValue.json(logged),
                "ledger_digest": expected.digest if expected else "",
            },
        )

    return training_run_tracked
