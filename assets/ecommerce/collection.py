"""Collection: signed Kafka batches in, authenticated and validated tables out.

Two topics arrive as signed batches in the landing zone (or, when the source
registry names a Kafka cluster, the live window as signed batches on Kafka
topics): user activity (view / add_to_cart / purchase) and product reviews.
Each collection asset authenticates every batch against the source registry,
applies per-source rate limits, validates and sanitises every record,
quarantines what fails with a reason, records each batch in the provenance
ledger, and compares the window against the trusted baseline. The checks attached here stop the
lifecycle before processing when any of that fails.
"""

from collections.abc import Callable, Iterable
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Definitions,
    Failure,
    ResourceParam,
    asset,
)

from assets.batches import BatchCallback, batch_recorder, collect_kafka_window, finish_intake, replay_guard
from assets.checks.integrity import stored_digest_check
from assets.checks.schema import expectation_check
from assets.checks.sources import mix_check, source_checks
from assets.ecommerce.shilling_checks import baseline_checks, item_push_check, near_duplicate_check
from domain.accounting import IntakeResult, ReplayGuard
from domain.ecommerce.expectations import ACTIVITY_SUITE, REVIEW_SUITE
from domain.ecommerce.item_push import read_item_reach
from domain.ecommerce.profiles import activity_profile, review_profile, source_rates
from domain.ecommerce.records import ACTIVITY, REVIEWS, RecordSchema
from domain.ecommerce.topics import collect_batches, collect_topic
from resources.integrity import IntegrityLedger
from resources.scratch import ScratchSpace
from resources.sources import LandedBatch, SourceRegistry, landed_batches
from resources.store import ArtifactStore
from resources.tables import TableFile
from resources.trust_store import TrustStore

ACTIVITY_KEY = AssetKey(["ecommerce", "activity_events"])
REVIEWS_KEY = AssetKey(["ecommerce", "product_reviews"])
BASELINE_KEY = AssetKey(["ecommerce", "trusted_baseline"])
REFERENCE_EVENTS_KEY = AssetKey(["ecommerce", "reference_events"])
REFERENCE_REVIEWS_KEY = AssetKey(["ecommerce", "reference_reviews"])
OWNER = "team:data-engineering"
LIVE_WINDOW = "inbox"  # the window that comes from Kafka when the registry names a cluster


def _reference_asset(key: AssetKey, schema: RecordSchema, description: str):
    """An asset holding one topic of the trusted reference window, collected through every control."""

    @asset(
        key=key, group_name="collection", kinds={"pandas", "parquet"}, owners=[OWNER], description=description
    )
    def _asset(sources: SourceRegistry, scratch: ScratchSpace) -> TableFile:
        dest = scratch.path(f"{key.path[-1]}.parquet")
        result = collect_topic(sources, sources.landing_dir() / "reference", schema, dest)
        if not result.received or result.quarantined:
            raise Failure(
                f"The reference window for {schema.topic} is not clean ({result.received} received, "
                f"{result.quarantined} quarantined: {result.reasons()}). A trusted reference must come "
                "from fully authenticated, valid data: regenerate it with `make data`."
            )
        return TableFile(path=dest, rows=result.accepted)

    return _asset


reference_events = _reference_asset(
    REFERENCE_EVENTS_KEY,
    ACTIVITY,
    "Activity of the human-reviewed reference window: the trusted yardstick for anomaly, "
    "training-data and drift checks. Refused unless every batch authenticates and every record is valid.",
)
reference_reviews = _reference_asset(
    REFERENCE_REVIEWS_KEY,
    REVIEWS,
    "Reviews of the human-reviewed reference window (the trusted yardstick for review checks).",
)


@asset(
    key=BASELINE_KEY,
    ins={"events": AssetIn(key=REFERENCE_EVENTS_KEY), "reviews": AssetIn(key=REFERENCE_REVIEWS_KEY)},
    group_name="collection",
    io_manager_key="json_io_manager",
    kinds={"python", "json"},
    owners=[OWNER],
)
def trusted_baseline(context: AssetExecutionContext, events: TableFile, reviews: TableFile) -> dict:
    """Statistics of the reference window that every new window is compared to.

    Anomaly and drift checks measure against this, never against the
    previous window, so a slow walk of many small steps cannot move the yardstick.
    """
    baseline = {
        "activity": {
            "per_source": source_rates(events.path, "event_time"),
            "profile": activity_profile(events.path),
            "item_reach": read_item_reach(events.path).to_dict(),
        },
        "reviews": {
            "per_source": source_rates(reviews.path, "review_time"),
            "profile": review_profile(reviews.path),
        },
    }
    context.add_output_metadata({"activity_rows": events.rows, "review_rows": reviews.rows})
    return baseline


def collect_window(
    context: AssetExecutionContext,
    window: str,
    schema: RecordSchema,
    profile: Callable[[Path], dict],
    sources: SourceRegistry,
    ledger: IntegrityLedger,
    trust_store: ResourceParam[TrustStore],
    store: ArtifactStore,
    scratch: ScratchSpace,
) -> TableFile:
    """Collect one window (`inbox`, `feedback`) of a topic through every intake control.

    The live window is consumed from Kafka when the registry names a cluster
    (`SourceRegistry.kafka`), and read from the landing zone otherwise.
    """
    dest = scratch.path(f"{context.asset_key.path[-1]}.parquet")

    def collect(
        batches: Iterable[LandedBatch], replays: ReplayGuard, on_batch: BatchCallback
    ) -> IntakeResult:
        result = collect_batches(sources, batches, schema, dest, replays=replays, on_batch=on_batch)
        result.profile = profile(dest)
        return result

    if window == LIVE_WINDOW and sources.kafka is not None:
        result = collect_kafka_window(
            context, sources.kafka, schema.topic, collect, dest, sources, ledger, trust_store, store, scratch
        )
    else:
        inbox = sources.landing_dir() / window
        recorder = batch_recorder(context, ledger, sources, f"ecommerce/batches/{schema.topic}")
        result = collect(landed_batches(inbox, schema.topic), replay_guard(ledger, trust_store), recorder)
        finish_intake(context, result, inbox, schema.topic, sources.retention, store, ledger, trust_store)
    return TableFile(path=dest, rows=result.accepted)


@asset(key=ACTIVITY_KEY, group_name="collection", kinds={"pandas", "parquet"}, owners=[OWNER])
def activity_events(
    context: AssetExecutionContext,
    sources: SourceRegistry,
    ledger: IntegrityLedger,
    trust_store: ResourceParam[TrustStore],
    store: ArtifactStore,
    scratch: ScratchSpace,
) -> TableFile:
    """Authenticated, validated user-activity events from the clickstream sources.

    Protects against forged or replayed batches, flooding sources, malformed
    and oversized records (quarantined with reasons) and coordinated click
    campaigns (checked against the trusted baseline).
    """
    return collect_window(
        context, "inbox", ACTIVITY, activity_profile, sources, ledger, trust_store, store, scratch
    )


@asset(key=REVIEWS_KEY, group_name="collection", kinds={"pandas", "parquet"}, owners=[OWNER])
def product_reviews(
    context: AssetExecutionContext,
    sources: SourceRegistry,
    ledger: IntegrityLedger,
    trust_store: ResourceParam[TrustStore],
    store: ArtifactStore,
    scratch: ScratchSpace,
) -> TableFile:
    """Authenticated, sanitised product reviews (rating and free text).

    Review text is stripped of control characters and inert markup; active
    markup (scripts, event handlers) is quarantined. Bursts of near-duplicate
    reviews and waves of brand-new accounts are flagged against the baseline.
    """
    return collect_window(
        context, "inbox", REVIEWS, review_profile, sources, ledger, trust_store, store, scratch
    )


defs = Definitions(
    assets=[reference_events, reference_reviews, trusted_baseline, activity_events, product_reviews],
    asset_checks=[
        *source_checks(ACTIVITY_KEY),
        *baseline_checks(ACTIVITY_KEY, BASELINE_KEY, "activity"),
        mix_check(ACTIVITY_KEY, BASELINE_KEY, "activity", "event_type_shares", blocking=True),
        item_push_check(ACTIVITY_KEY, BASELINE_KEY),
        expectation_check(ACTIVITY_KEY, ACTIVITY_SUITE),
        stored_digest_check(ACTIVITY_KEY),
        *source_checks(REVIEWS_KEY),
        *baseline_checks(REVIEWS_KEY, BASELINE_KEY, "reviews"),
        mix_check(REVIEWS_KEY, BASELINE_KEY, "reviews", "rating_shares"),
        expectation_check(REVIEWS_KEY, REVIEW_SUITE),
        stored_digest_check(REVIEWS_KEY),
        near_duplicate_check(REVIEWS_KEY, BASELINE_KEY),
    ],
)
