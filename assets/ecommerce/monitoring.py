"""Monitoring: feedback validated before it may feed retraining, drift, and the retraining audit.

Feedback (clicks and new reviews from the deployed recommender's users) is
untrusted. It passes the same intake controls as collection, the per-item
push test included, and is stored apart from trusted data (the
monitoring area of the store). Drift is always measured against the trusted
reference window, never against the previous feedback batch, so a skew
introduced a little per cycle still adds up to a failed check.
"""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Definitions,
    ResourceParam,
    asset,
)

from assets.checks.sources import mix_check, source_checks
from assets.checks.window_drift import drift_error_check, window_drift
from assets.ecommerce.collection import BASELINE_KEY, REFERENCE_EVENTS_KEY, collect_window
from assets.ecommerce.shilling_checks import baseline_checks, item_push_check, near_duplicate_check
from domain.ecommerce import transforms
from domain.ecommerce.profiles import activity_profile, review_profile
from domain.ecommerce.records import ACTIVITY, REVIEWS
from resources.code_approval import CodeApprovals, code_digest
from resources.integrity import IntegrityLedger
from resources.scratch import ScratchSpace
from resources.sources import SourceRegistry
from resources.spark import SparkResource
from resources.store import ArtifactStore
from resources.tables import TableFile, spark_to_table_file
from resources.trust_store import TrustStore

FEEDBACK_EVENTS_KEY = AssetKey(["ecommerce", "feedback_events"])
FEEDBACK_REVIEWS_KEY = AssetKey(["ecommerce", "feedback_reviews"])
FEEDBACK_DRIFT_KEY = AssetKey(["ecommerce", "feedback_drift"])
FEEDBACK_INTERACTIONS_KEY = AssetKey(["ecommerce", "feedback_interactions"])
OWNER = "team:ml-engineering"
NUMERIC_FEATURES = ["price", "hour_of_day"]
CATEGORICAL_FEATURES = ["event_type", "source"]


@asset(key=FEEDBACK_EVENTS_KEY, group_name="monitoring", kinds={"pandas", "parquet"}, owners=[OWNER])
def feedback_events(
    context: AssetExecutionContext,
    sources: SourceRegistry,
    ledger: IntegrityLedger,
    trust_store: ResourceParam[TrustStore],
    store: ArtifactStore,
    scratch: ScratchSpace,
) -> TableFile:
    """Clicks and purchases on recommendations, collected through every intake control.

    Untrusted tier: stored in the monitoring area, apart from trusted data,
    and only enters training validated and capped.
    """
    return collect_window(
        context, "feedback", ACTIVITY, activity_profile, sources, ledger, trust_store, store, scratch
    )


@asset(key=FEEDBACK_REVIEWS_KEY, group_name="monitoring", kinds={"pandas", "parquet"}, owners=[OWNER])
def feedback_reviews(
    context: AssetExecutionContext,
    sources: SourceRegistry,
    ledger: IntegrityLedger,
    trust_store: ResourceParam[TrustStore],
    store: ArtifactStore,
    scratch: ScratchSpace,
) -> TableFile:
    """New reviews written after deployment (untrusted tier), sanitised and checked for bursts."""
    return collect_window(
        context, "feedback", REVIEWS, review_profile, sources, ledger, trust_store, store, scratch
    )


def _drift_features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(hour_of_day=frame["event_time"].dt.hour)[NUMERIC_FEATURES + CATEGORICAL_FEATURES]


@asset(
    key=FEEDBACK_DRIFT_KEY,
    ins={"feedback": AssetIn(key=FEEDBACK_EVENTS_KEY), "reference": AssetIn(key=REFERENCE_EVENTS_KEY)},
    group_name="monitoring",
    io_manager_key="json_io_manager",
    kinds={"scipy", "json"},
    owners=[OWNER],
)
def feedback_drift(context: AssetExecutionContext, feedback: TableFile, reference: TableFile) -> dict:
    """PSI and KS of every feedback feature against the trusted reference window, with a plot.

    WARN-level drift is expected as the shop changes and may trigger
    retraining; ERROR-level drift stops feedback from reaching training.
    """
    columns = ["price", "event_time", "event_type", "source"]
    baseline = _drift_features(pd.read_parquet(reference.path, columns=columns))
    current = _drift_features(pd.read_parquet(feedback.path, columns=columns))
    return window_drift(context, baseline, current, NUMERIC_FEATURES, CATEGORICAL_FEATURES)


@asset(
    key=FEEDBACK_INTERACTIONS_KEY,
    ins={"feedback": AssetIn(key=FEEDBACK_EVENTS_KEY)},
    deps=[FEEDBACK_DRIFT_KEY],
    group_name="monitoring",
    code_version=code_digest(transforms.build_interactions),
    kinds={"spark", "parquet", "dvc"},
    owners=[OWNER],
)
def feedback_interactions(
    context: AssetExecutionContext,
    spark: SparkResource,
    approvals: CodeApprovals,
    scratch: ScratchSpace,
    feedback: TableFile,
) -> TableFile:
    """Validated feedback turned into interactions by the approved transforms (untrusted tier)."""
    for name in ("sessionise", "build_interactions"):
        approvals.require(name, getattr(transforms, name))
    frame = transforms.build_interactions(
        transforms.sessionise(spark.session().read.parquet(str(feedback.path)))
    )
    return spark_to_table_file(frame, scratch.path("feedback_interactions.parquet"))


defs = Definitions(
    assets=[feedback_events, feedback_reviews, feedback_drift, feedback_interactions],
    asset_checks=[
        *source_checks(FEEDBACK_EVENTS_KEY, allow_empty=True),
        *baseline_checks(FEEDBACK_EVENTS_KEY, BASELINE_KEY, "activity"),
        mix_check(FEEDBACK_EVENTS_KEY, BASELINE_KEY, "activity", "event_type_shares", blocking=True),
        item_push_check(FEEDBACK_EVENTS_KEY, BASELINE_KEY),
        *source_checks(FEEDBACK_REVIEWS_KEY, allow_empty=True),
        near_duplicate_check(FEEDBACK_REVIEWS_KEY, BASELINE_KEY),
        drift_error_check(FEEDBACK_DRIFT_KEY),
    ],
)
