"""The e-commerce recommender's code location: the whole lifecycle, collection to retraining."""

from typing import Any

from dagster import (
    AssetSelection,
    Definitions,
    define_asset_job,
    in_process_executor,
)

from assets.ecommerce import collection, deployment, modeling, monitoring, processing
from pipelines.environment import resources_for
from pipelines.oversight import oversight

OVERSIGHT = oversight(
    "ecommerce", deployment.CHAMPION_KEY, modeling.MODEL_KEY, modeling.TRAINING_SET_KEY, "0 3 * * *"
)

REFERENCE = AssetSelection.assets(
    collection.reference_events,
    collection.reference_reviews,
    collection.trusted_baseline,
    modeling.training_reference,
)
LOOP_GROUPS = AssetSelection.groups("monitoring", "modeling", "deployment")
FEEDBACK_LOOP = LOOP_GROUPS - REFERENCE - OVERSIGHT.selection

baseline_job = define_asset_job(
    "ecommerce_baseline",
    selection=REFERENCE,
    description="Collect the reviewed reference window and compute the trusted baselines from it.",
)
lifecycle_job = define_asset_job(
    "ecommerce_lifecycle",
    selection=AssetSelection.all() - REFERENCE - OVERSIGHT.selection,
    description="Collect, process, train, check and promote, stopping at any failed control.",
)
retraining_job = define_asset_job(
    "ecommerce_retraining",
    selection=FEEDBACK_LOOP,
    description="Validate new feedback, retrain on trusted plus capped feedback, promote if not worse.",
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
            *OVERSIGHT.assets,
        ],
        asset_checks=[
            *collection.collection_checks,
            *processing.processing_checks,
            *monitoring.monitoring_checks,
            *modeling.modeling_checks,
            *deployment.deployment_checks,
            *OVERSIGHT.checks,
        ],
        jobs=[baseline_job, lifecycle_job, retraining_job, *OVERSIGHT.jobs],
        schedules=[OVERSIGHT.schedule],
        resources={
            **resources_for("ecommerce"),
            "recommender_settings": modeling.RecommenderSettings(),
            **overrides,
        },
        # One process per run: Spark starts once and every step shares its session.
        executor=in_process_executor,
    )


defs = build_definitions()
