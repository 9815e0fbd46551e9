"""Processing on Spark: sessions, the implicit-feedback table, review sentiment.

Every asset here reads its inputs through the IO manager, which verifies
their digests against the ledger and decrypts them into the run's private
scratch folder; runs approved transformation code only (the signed code
manifest); and publishes a table that is GX-checked, ledgered and
DVC-versioned. Each asset's `code_version` is the digest of the
transformation it runs, so Dagster shows outputs made by other code as stale.
"""

from dagster import AssetExecutionContext, AssetIn, AssetKey, Definitions, MetadataValue, asset

from assets.checks.integrity import provenance_check, stored_digest_check
from assets.checks.schema import expectation_check
from assets.ecommerce.collection import ACTIVITY_KEY, REVIEWS_KEY
from domain.ecommerce import transforms
from domain.ecommerce.expectations import (
    INTERACTIONS_SUITE,
    ITEM_FEATURES_SUITE,
    SCORED_REVIEWS_SUITE,
    SESSIONS_SUITE,
)
from resources.code_approval import CodeApprovals, code_digest
from resources.scratch import ScratchSpace
from resources.spark import SparkResource
from resources.tables import TableFile, spark_to_table_file

SESSIONS_KEY = AssetKey(["ecommerce", "sessions"])
INTERACTIONS_KEY = AssetKey(["ecommerce", "interactions"])
SCORED_REVIEWS_KEY = AssetKey(["ecommerce", "scored_reviews"])
ITEM_FEATURES_KEY = AssetKey(["ecommerce", "item_features"])
OWNER = "team:data-engineering"
KINDS = {"spark", "parquet", "dvc"}


def _transform_asset(key: AssetKey, upstream: AssetKey, transform: str, description: str):
    """An asset that runs one approved transformation from `transforms` on Spark."""

    @asset(
        key=key,
        ins={"upstream": AssetIn(key=upstream)},
        group_name="processing",
        code_version=code_digest(getattr(transforms, transform)),
        kinds=KINDS,
        owners=[OWNER],
        description=description,
    )
    def _asset(
        context: AssetExecutionContext,
        spark: SparkResource,
        approvals: CodeApprovals,
        scratch: ScratchSpace,
        upstream: TableFile,
    ) -> TableFile:
        # Looked up at run time: the function checked is the function that runs.
        function = getattr(transforms, transform)
        approvals.require(transform, function)
        result = function(spark.session().read.parquet(str(upstream.path)))
        frame, metrics = result if isinstance(result, tuple) else (result, None)
        if metrics:
            context.add_output_metadata({"transform_metrics": MetadataValue.json(metrics)})
        return spark_to_table_file(frame, scratch.path(f"{key.path[-1]}.parquet"))

    return _asset


sessions = _transform_asset(
    SESSIONS_KEY,
    ACTIVITY_KEY,
    "sessionise",
    "Activity events split into server-side sessions (30-minute inactivity gap). Replayed "
    "duplicates of an event are removed; the client's own session ids are kept, not trusted.",
)
interactions = _transform_asset(
    INTERACTIONS_KEY,
    SESSIONS_KEY,
    "build_interactions",
    "The implicit-feedback table the recommender trains on: one row per user and item, "
    "with view/cart/purchase counts and a confidence weight.",
)
scored_reviews = _transform_asset(
    SCORED_REVIEWS_KEY,
    REVIEWS_KEY,
    "review_sentiment",
    "Reviews with a sentiment score from a Spark ML model trained on their ratings. These "
    "labels are what label-flipping attacks target; modeling checks them for label issues.",
)
item_features = _transform_asset(
    ITEM_FEATURES_KEY,
    SCORED_REVIEWS_KEY,
    "item_review_features",
    "Per-item review features: volume, mean rating and sentiment, positive share.",
)


defs = Definitions(
    assets=[sessions, interactions, scored_reviews, item_features],
    asset_checks=[
        check
        for key, suite, inputs in (
            (SESSIONS_KEY, SESSIONS_SUITE, [ACTIVITY_KEY]),
            (INTERACTIONS_KEY, INTERACTIONS_SUITE, [SESSIONS_KEY]),
            (SCORED_REVIEWS_KEY, SCORED_REVIEWS_SUITE, [REVIEWS_KEY]),
            (ITEM_FEATURES_KEY, ITEM_FEATURES_SUITE, [SCORED_REVIEWS_KEY]),
        )
        for check in (
            expectation_check(key, suite),
            stored_digest_check(key),
            provenance_check(key, inputs),
        )
    ],
)
