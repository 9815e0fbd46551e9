"""New data landing starts its own intake; retraining follows only through the automation conditions.

`landing_sensor` watches one window of the landing zone (e.g. feedback) and
asks for one run of the intake job per new set of signed batch manifests.
The intake runs every collection control; the model's automation condition
then retrains only when the intake materialised new validated data and every
blocking check upstream passed. Nothing here trusts a batch: the sensor only
notices that something arrived.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from resources.sources import MANIFEST_SUFFIX, SourceRegistry

DEFAULT_POLL_SECONDS = 15


def poll_seconds() -> int:
    """How often the sensors look for new data and approvals (`PIPELINE_SENSOR_INTERVAL_SECONDS`)."""
    value = os.environ.get("PIPELINE_SENSOR_INTERVAL_SECONDS") or str(DEFAULT_POLL_SECONDS)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"PIPELINE_SENSOR_INTERVAL_SECONDS={value!r} must be a whole number of seconds, 1 or more."
        )
    return int(value)


def _landed(folder: Path) -> set[str]:
    """What has landed: each manifest's path and modification time (a batch re-sent in place is new)."""
    return {f"{p.relative_to(folder)} {p.stat().st_mtime_ns}" for p in folder.rglob(f"*{MANIFEST_SUFFIX}")}


def landing_sensor(example: str, window: str, job: JobDefinition) -> SensorDefinition:
    """Run `job` once for each set of batches that landed in the `window` folder since the last intake.

    New batches are taken only once they have stopped changing for one poll interval, so a source
    still landing (or re-sending) batches is not collected half-written; batches the intake takes
    out of the landing zone are simply forgotten, never a reason for another run.
    """

    @sensor(
        name=f"{example}_{window}_landed",
        job=job,
        minimum_interval_seconds=poll_seconds(),
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Starts {job.name} when new signed batches have landed in the {window} window.",
    )
    def _sensor(context: SensorEvaluationContext, sources: SourceRegistry) -> RunRequest | SkipReason:
        folder = sources.landing_dir() / window
        cursor = json.loads(context.cursor) if context.cursor else {}
        landed = _landed(folder)
        taken = set(cursor.get("taken", [])) & landed
        new = sorted(landed - taken)
        digest = hashlib.sha256("\n".join(new).encode()).hexdigest()
        if not new:
            context.update_cursor(json.dumps({"taken": sorted(taken)}))
            return SkipReason(f"No new batches in {folder}.")
        if digest != cursor.get("seen"):
            context.update_cursor(json.dumps({"taken": sorted(taken), "seen": digest}))
            return SkipReason(f"{len(new)} new batches are landing in {folder}; taken once they settle.")
        context.update_cursor(json.dumps({"taken": sorted(taken | set(new))}))
        return RunRequest(run_key=digest, tags={"pipeline/new_batches": str(len(new))})

    return _sensor


def automation_sensor(example: str) -> AutomationConditionSensorDefinition:
    """The daemon's evaluation of every asset's automation condition in this location, on by default."""
    return AutomationConditionSensorDefinition(
        name=f"{example}_automation",
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=poll_seconds(),
        description="Retrains and promotes when validated new data arrives and every blocking check passed.",
    )
