"""What every code location has next to its lifecycle: the nightly audits and the attack lab."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import AssetKey, AssetSelection, JobDefinition, ScheduleDefinition, define_asset_job

from assets.retraining_audit import retraining_audit
from assets.security_scorecard import security_scorecard
from assets.storage_audit import integrity_audit


@dataclass(frozen=True)
class Oversight:
    assets: list
    checks: list
    jobs: list
    schedule: ScheduleDefinition
    selection: AssetSelection  # its assets, which no lifecycle job runs


def oversight(
    example: str, champion: AssetKey, model: AssetKey, training_set: AssetKey, audit_cron: str
) -> Oversight:
    """`example`'s integrity and retraining audits (daily at `audit_cron`) and its security scorecard."""
    audit, audit_checks = integrity_audit(example)
    lineage, lineage_check = retraining_audit(example, champion, model, training_set)
    scorecard = security_scorecard(example)
    audit_job: JobDefinition = define_asset_job(
        f"{example}_audit",
        # The serving release is re-verified too: it can be swapped or rolled back after promotion.
        selection=AssetSelection.assets(audit, lineage) | AssetSelection.checks_for_assets(champion),
        description="Re-hash every stored artifact, verify the ledger chain and the serving release, "
        "trace every released model.",
    )
    lab_job = define_asset_job(
        f"{example}_attack_lab",
        selection=AssetSelection.assets(scorecard),
        description="Mount every attack of the catalogue on fresh pipelines, run clean ones, score them.",
    )
    return Oversight(
        assets=[audit, lineage, scorecard],
        checks=[*audit_checks, lineage_check],
        jobs=[audit_job, lab_job],
        schedule=ScheduleDefinition(job=audit_job, cron_schedule=audit_cron),
        selection=AssetSelection.assets(audit, lineage, scorecard),
    )
