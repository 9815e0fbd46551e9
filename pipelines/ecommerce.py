"""The e-commerce recommender's code location: collection, storage, processing."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
)

from assets.ecommerce import collection, processing
from assets.storage_audit import integrity_audit
from pipelines.deployment import resources_for

audit, audit_checks = integrity_audit("ecommerce")

baseline_job = define_asset_job(
    "ecommerce_baseline",
    selection=AssetSelection.assets(collection.trusted_baseline),
    description="Compute the trusted baseline from the reviewed reference window.",
)
lifecycle_job = define_asset_job(
    "ecommerce_lifecycle",
    selection=AssetSelection.groups("collection", "processing")
    - AssetSelection.assets(collection.trusted_baseline),
    description="Collect the landed batches and process them, stopping at any failed control.",
)
audit_job = define_asset_job(
    "ecommerce_integrity_audit",
    selection=AssetSelection.assets(audit),
    description="Re-hash every stored artifact and verify the ledger chain.",
)


def build_definitions() -> Definitions:
    """The location's definitions, with resources resolved from the environment now."""
    return Definitions(
        assets=[
            collection.trusted_baseline,
            collection.activity_events,
            collection.product_reviews,
            processing.sessions,
            processing.interactions,
            processing.scored_reviews,
            processing.item_features,
            audit,
        ],
        asset_checks=[*collection.collection_checks, *processing.processing_checks, *audit_checks],
        jobs=[baseline_job, lifecycle_job, audit_job],
        schedules=[ScheduleDefinition(job=audit_job, cron_schedule="0 3 * * *")],
        resources=resources_for("ecommerce"),
        # One process per run: Spark starts once and every step shares its session.
        executor=in_process_executor,
    )


defs = build_definitions()
