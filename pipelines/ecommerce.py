"""The e-commerce recommender's code location: the whole lifecycle, collection to retraining."""

from typing import Any

from dagster import (
    AssetSelection,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
)

from assets.ecommerce import collection, deployment, modeling, monitoring, processing
from assets.retraining_audit import retraining_audit
from assets.security_scorecard import security_scorecard
from assets.storage_audit import integrity_audit
from pipelines.deployment import resources_for

audit, audit_checks = integrity_audit("ecommerce")
lineage_audit, lineage_audit_check = retraining_audit(
    "ecommerce", deployment.CHAMPION_KEY, modeling.MODEL_KEY, modeling.TRAINING_SET_KEY
)

REFERENCE = AssetSelection.assets(
    collection.reference_events,
    collection.reference_reviews,
    collection.trusted_baseline,
    modeling.training_reference,
)
AUDITS = AssetSelection.assets(audit, lineage_audit)
scorecard = security_scorecard("ecommerce")
LAB = AssetSelection.assets(scorecard)
FEEDBACK_LOOP = AssetSelection.groups("monitoring", "modeling", "deployment") - REFERENCE - AUDITS

baseline_job = define_asset_job(
    "ecommerce_baseline",
    selection=REFERENCE,
    description="Collect the reviewed reference window and compute the trusted baselines from it.",
)
lifecycle_job = define_asset_job(
    "ecommerce_lifecycle",
    selection=AssetSelection.all() - REFERENCE - AUDITS - LAB,
    description="Collect, process, train, check and promote, stopping at any failed control.",
)
retraining_job = define_asset_job(
    "ecommerce_retraining",
    selection=FEEDBACK_LOOP,
    description="Validate new feedback, retrain on trusted plus capped feedback, promote if not worse.",
)
attack_lab_job = define_asset_job(
    "ecommerce_attack_lab",
    selection=LAB,
    description="Mount every attack of the catalogue on fresh pipelines, run clean ones, score them.",
)
audit_job = define_asset_job(
    "ecommerce_audit",
    # The serving release is re-verified too: it can be swapped or rolled back after promotion.
    selection=AUDITS | AssetSelection.checks_for_assets(deployment.CHAMPION_KEY),
    description="Re-hash every stored artifact, verify the ledger chain and the serving release, "
    "trace every released model.",
)


def build_definitions(**overrides: Any) -> Definitions:
    """The location's definitions, with resources resolved from the environment now.

    `overrides` replaces resources by key (tests train for fewer epochs).
    """
    return Definitions(
        assets=[
            collection.reference_events,
            collection.reference_reviews,
            collection.trusted_baseline,
            collection.activity_events,
            collection.product_reviews,
            processing.sessions,
            processing.interactions,
            processing.scored_reviews,
            processing.item_features,
            monitoring.feedback_events,
            monitoring.feedback_reviews,
            monitoring.feedback_drift,
            monitoring.feedback_interactions,
            modeling.training_reference,
            modeling.training_interactions,
            modeling.recommender_model,
            deployment.champion_model,
            lineage_audit,
            audit,
            scorecard,
        ],
        asset_checks=[
            *collection.collection_checks,
            *processing.processing_checks,
            *monitoring.monitoring_checks,
            *modeling.modeling_checks,
            *deployment.deployment_checks,
            lineage_audit_check,
            *audit_checks,
        ],
        jobs=[baseline_job, lifecycle_job, retraining_job, audit_job, attack_lab_job],
        schedules=[ScheduleDefinition(job=audit_job, cron_schedule="0 3 * * *")],
        resources={
            **resources_for("ecommerce"),
            "recommender_settings": modeling.RecommenderSettings(),
            **overrides,
        },
        # One process per run: Spark starts once and every step shares its session.
        executor=in_process_executor,
    )


defs = build_definitions()
