"""A reviewer's signed approval starts retraining: the daemon's half of a human-gated feedback loop.

New studies landing start the feedback intake (`pipelines.intake.landing_sensor`),
which validates them and builds the next training set. A person reviews that
set and signs an approval for its exact digest (`make approve-retraining`).
This sensor notices a trusted approval for the newest training set and asks
for one retraining run per approved digest. The training asset verifies the
approval again when it runs: the sensor only decides when to ask.
"""

from __future__ import annotations

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from pipelines.intake import poll_seconds
from resources.integrity import IntegrityLedger
from resources.retraining_approval import RetrainingApprovals, RetrainingNotApproved


def failed_blocking_checks(context: SensorEvaluationContext, asset: AssetKey) -> list[str]:
    """The blocking checks on `asset` and everything upstream of it whose latest evaluation failed."""
    graph = context.repository_def.asset_graph
    keys = graph.get_ancestor_asset_keys(asset, include_self=True)
    blocking = [key for key in graph.get_check_keys_for_assets(keys) if graph.get_check_spec(key).blocking]
    latest = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(blocking)
    return sorted(
        key.to_user_string()
        for key, record in latest.items()
        if record.status == AssetCheckExecutionRecordStatus.FAILED
    )


def approved_retraining_sensor(
    example: str, job: JobDefinition, model: str, training_set: AssetKey
) -> SensorDefinition:
    """Run `job` once per training set of `model` a trusted reviewer approved, never past a failed check."""

    @sensor(
        name=f"{example}_approved_retraining",
        job=job,
        minimum_interval_seconds=poll_seconds(),
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Starts {job.name} when a trusted reviewer has approved the newest training set.",
    )
    def _sensor(
        context: SensorEvaluationContext, ledger: IntegrityLedger, retraining_approvals: RetrainingApprovals
    ) -> RunRequest | SkipReason:
        dataset = ledger.latest(training_set.to_user_string())
        if dataset is None:
            return SkipReason("No training set has been built yet.")
        if dataset.digest == context.cursor:
            return SkipReason(f"Retraining on {dataset.digest} was already requested.")
        failed = failed_blocking_checks(context, training_set)
        if failed:
            return SkipReason(f"Not retraining while blocking checks fail: {', '.join(failed)}.")
        try:
            approval = retraining_approvals.require(model, dataset.digest)
        except RetrainingNotApproved as refusal:
            return SkipReason(refusal.description or str(refusal))
        context.update_cursor(dataset.digest)
        return RunRequest(
            run_key=dataset.digest,
            tags={"pipeline/dataset_digest": dataset.digest, "pipeline/approved_by": approval["reviewer"]},
        )

    return _sensor
