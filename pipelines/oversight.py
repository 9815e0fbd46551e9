"""What every code location has next to its lifecycle: the nightly audits and the controls view."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import AssetKey, AssetSelection, Definitions, ScheduleDefinition, define_asset_job

from assets.controls import controls_key
from assets.retraining_audit import retraining_audit
from assets.storage_audit import integrity_audit


@dataclass(frozen=True)
class Oversight:
    defs: Definitions
    selection: AssetSelection  # its assets and the controls view, which no lifecycle job runs


def oversight(
    example: str, champion: AssetKey, model: AssetKey, training_set: AssetKey, audit_cron: str
) -> Oversight:
    """`example`'s integrity and retraining audits, run daily at `audit_cron` by the `<example>_audit` job,
    which then refreshes the controls view (`assets.controls`, added by the location)."""
    audit, audit_checks = integrity_audit(example)
    lineage, lineage_check = retraining_audit(example, champion, model, training_set)
    selection = AssetSelection.assets(audit, lineage, controls_key(example))
    audit_job = define_asset_job(
        f"{example}_audit",
        # The serving release is re-verified too: it can be swapped or rolled back after promotion.
        selection=selection | AssetSelection.checks_for_assets(champion),
        description="Re-hash every stored artifact, verify the ledger chain and the serving release, "
        "trace every released model, then show every control's last result.",
    )
    return Oversight(
        defs=Definitions(
            assets=[audit, lineage],
            asset_checks=[*audit_checks, lineage_check],
            jobs=[audit_job],
            schedules=[ScheduleDefinition(job=audit_job, cron_schedule=audit_cron)],
        ),
        selection=selection,
    )
