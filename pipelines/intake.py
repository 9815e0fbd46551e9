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

POLL_SECONDS = 15


def _fingerprint(folder: Path) -> str | None:
    """What has landed: each manifest's name and modification time (a re-signed batch counts)."""
    manifests = sorted(folder.rglob(f"*{MANIFEST_SUFFIX}"))
    if not manifests:
        return None
    listing = "\n".join(
        f"{p.relative_to(folder)} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in manifests
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def landing_sensor(example: str, window: str, job: JobDefinition) -> SensorDefinition:
    """Run `job` once for each new set of batches in the `window` folder of the landing zone.

    A window is taken only once it has stopped changing for one poll interval, so a source still
    landing (or re-sending) batches is not collected half-written.
    """

    @sensor(
        name=f"{example}_{window}_landed",
        job=job,
        minimum_interval_seconds=POLL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Starts {job.name} when new signed batches have landed in the {window} window.",
    )
    def _landed(context: SensorEvaluationContext, sources: SourceRegistry) -> RunRequest | SkipReason:
        folder = sources.landing_dir() / window
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = _fingerprint(folder)
        if now is None or now == cursor.get("taken"):
            return SkipReason(f"No new batches in {folder}.")
        if now != cursor.get("seen"):
            context.update_cursor(json.dumps({**cursor, "seen": now}))
            return SkipReason(f"Batches are landing in {folder}; taking them once it stops changing.")
        context.update_cursor(json.dumps({"seen": now, "taken": now}))
        return RunRequest(run_key=now)

    return _landed


def automation_sensor(example: str) -> AutomationConditionSensorDefinition:
    """The daemon's evaluation of every asset's automation condition in this location, on by default."""
    return AutomationConditionSensorDefinition(
        name=f"{example}_automation",
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=POLL_SECONDS,
        description="Retrains and promotes when validated new data arrives and every blocking check passed.",
    )
