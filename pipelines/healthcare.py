"""The healthcare diagnostic's code location.

Its lifecycle assets arrive with the healthcare example; until then it holds
the storage integrity audit over the healthcare area of the shared store.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
)

from assets.storage_audit import integrity_audit
from pipelines.deployment import resources_for

audit, audit_checks = integrity_audit("healthcare")
audit_job = define_asset_job("healthcare_integrity_audit", selection=AssetSelection.assets(audit))

defs = Definitions(
    assets=[audit],
    asset_checks=audit_checks,
    jobs=[audit_job],
    schedules=[ScheduleDefinition(job=audit_job, cron_schedule="30 3 * * *")],
    resources=resources_for("healthcare"),
    executor=in_process_executor,
)
