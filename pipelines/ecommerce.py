"""The e-commerce recommender's code location: the whole lifecycle, collection to retraining."""

from typing import Any

from dagster import AssetSelection, Definitions, define_asset_job, definitions

from assets.ecommerce import collection, deployment, modeling, monitoring, processing
from pipelines.intake import automation_sensor, landing_sensor
from pipelines.location import build_location
from pipelines.oversight import oversight
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore

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
feedback_intake_job = define_asset_job(
    "ecommerce_feedback_intake",
    selection=AssetSelection.assets(
        monitoring.feedback_events,
        monitoring.feedback_reviews,
        monitoring.feedback_drift,
        monitoring.feedback_interactions,
    ),
    description="Collect a landed feedback window through every intake control (retraining follows "
    "through the automation condition only if every blocking check passes).",
)
retraining_job = define_asset_job(
    "ecommerce_retraining",
    selection=FEEDBACK_LOOP,
    description="Validate new feedback, retrain on trusted plus capped feedback, promote if not worse.",
)


STAGES = (collection, processing, modeling, monitoring, deployment)


def build_definitions(home: RuntimeHome, trust: TrustStore, **overrides: Any) -> Definitions:
    """The location over `home` and the operator's `trust` store; `overrides` replaces resources by key."""
    return build_location(
        "ecommerce",
        stages=STAGES,
        oversight=OVERSIGHT,
        jobs=[baseline_job, lifecycle_job, feedback_intake_job, retraining_job],
        sensors=[
            landing_sensor("ecommerce", "feedback", feedback_intake_job),
            automation_sensor("ecommerce"),
        ],
        home=home,
        trust=trust,
        resources={"recommender_settings": modeling.RecommenderSettings(), **overrides},
    )


@definitions
def defs() -> Definitions:
    """What `dagster dev` / the code server loads: the location over `$PIPELINE_HOME`."""
    return build_definitions(RuntimeHome.from_environment(), TrustStore.from_environment())
