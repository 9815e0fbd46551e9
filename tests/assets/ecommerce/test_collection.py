"""Collection controls, each shown passing on clean data and failing on a real attack.

Every attack lands in the inbox the way the attacker's data would arrive,
and the real Dagster job runs over it. A failed blocking check must keep
the table's consumers (sessions, scored reviews) from materialising.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from examples.ecommerce.shop import Shop
from examples.runs import checks, materialized, metadata

pytestmark = pytest.mark.slow

CONSUMERS = ["ecommerce/sessions", "ecommerce/scored_reviews"]


def collect(shop: Shop):
    """Baseline, then collection plus the first consumers of each collected table."""
    return shop.run_selection(["ecommerce/activity_events", "ecommerce/product_reviews", *CONSUMERS])


@pytest.fixture
def shop(home) -> Shop:
    return Shop(home)


def test_clean_window_passes_every_collection_check_and_reaches_processing(shop):
    result = collect(shop)
    evaluated = checks(result)
    assert evaluated and all(evaluated.values()), {k: v for k, v in evaluated.items() if not v}
    assert {"sessions", "scored_reviews"} <= materialized(result)
    events = metadata(result, "activity_events")
    assert events["received"] == events["accepted"] + events["quarantined"] > 0
    assert events["quarantine_path"].startswith("collection/")


def test_forged_and_unsigned_batches_are_refused_and_stop_processing(shop):
    payloads = shop.payloads("user-activity", limit=50)
    forged = [{**p, "event_id": f"f{i:012x}"} for i, p in enumerate(payloads)]
    shop.land(
        "web-clickstream",
        forged,
        batch_id="web-clickstream-forged-000001",
        signer=Ed25519PrivateKey.generate(),
    )
    shop.land("mobile-app", forged, batch_id="mobile-app-unsigned-000001", signer=None)

    result = collect(shop)

    assert checks(result)["activity_events:batches_authenticated"] is False
    assert "sessions" not in materialized(result)
    report = metadata(result, "activity_events")["intake_report"]
    reasons = {b["batch_id"]: b["reason"] for b in report["refused_batches"]}
    assert reasons["web-clickstream-forged-000001"].startswith("bad signature")
    assert reasons["mobile-app-unsigned-000001"].startswith("unsigned")
    # Refused records are quarantined, not dropped.
    assert report["received"] == report["accepted"] + report["quarantined"]
    assert report["quarantine_reasons"]["batch refused"] == 100


def _set_rate_limit(shop: Shop, source: str, per_hour: int) -> None:
    """Re-enrol a source with another hourly limit (after the baseline was taken)."""
    shop.baseline()
    registry = shop.paths["registry"]
    enrolled = json.loads(registry.read_text())
    enrolled["sources"][source]["max_records_per_hour"] = per_hour
    registry.write_text(json.dumps(enrolled))


def test_source_over_its_rate_limit_is_refused(shop):
    _set_rate_limit(shop, "web-clickstream", 5)

    result = collect(shop)

    assert checks(result)["activity_events:sources_within_rate_limits"] is False
    assert "sessions" not in materialized(result)
    refused = metadata(result, "activity_events")["intake_report"]["refused_batches"]
    assert refused and all(b["source"] == "web-clickstream" for b in refused)
    assert "over its limit of 5" in refused[0]["reason"]


def test_bad_records_are_quarantined_with_reasons_and_the_run_goes_on(shop):
    event = shop.payloads("user-activity", limit=1)[0]
    review = shop.payloads("product-reviews", limit=1)[0]
    stamp = event["event_time"]
    lines = [
        b'{"topic": "user-activity", "partition": 0, "offset": 1, "value": "{not json',
        json.dumps(
            {
                "topic": "user-activity",
                "partition": 0,
                "offset": 2,
                "key": "u",
                "timestamp": 1,
                "value": "x" * 20_000,
            }
        ).encode(),
        json.dumps(
            {
                "topic": "user-activity",
                "partition": 0,
                "offset": 3,
                "key": "u",
                "timestamp": int(datetime.fromisoformat(stamp).timestamp() * 1000),
                "value": json.dumps({**event, "event_id": "e-bad", "event_type": "refund"}),
            }
        ).encode(),
    ]
    shop.land("web-clickstream", [], batch_id="web-clickstream-junk-000001", raw_lines=lines)
    script = {**review, "review_id": "r-xss", "text": 'Nice <script>fetch("//evil")</script>'}
    inert = {**review, "review_id": "r-tags", "text": "Really <b>solid</b>\x00 kettle\u202e"}
    shop.land("reviews-service", [script, inert], batch_id="reviews-service-extra-000001")

    result = collect(shop)

    events = metadata(result, "activity_events")
    assert events["received"] == events["accepted"] + events["quarantined"]
    assert events["quarantine_reasons"] == {"malformed": 1, "oversized": 1, "invalid field": 1}
    reviews = metadata(result, "product_reviews")
    assert reviews["quarantine_reasons"] == {"markup": 1}
    assert reviews["received"] == reviews["accepted"] + reviews["quarantined"]
    # Few bad records: the run goes on and processing still happens.
    assert {"sessions", "scored_reviews"} <= materialized(result)
    # The sanitised review kept its words but lost its markup and invisible characters.
    table = shop.stored_table("ecommerce/product_reviews").set_index("review_id")
    assert table.loc["r-tags", "text"] == "Really solid kettle"
    assert "r-xss" not in table.index
    # The quarantine itself is stored and says why.
    rows = shop.stored_table("ecommerce/product_reviews/quarantine", kind="quarantine")
    assert rows["reason"].tolist() == ["markup: active content in review"]


def test_volume_spike_from_one_source_is_flagged(shop):
    """Twenty times the usual volume, within the source's hard rate limit, is still an anomaly."""
    _set_rate_limit(shop, "mobile-app", 10_000)
    mobile = shop.payloads("user-activity", source="mobile-app")
    spike = [{**p, "event_id": f"s{n:04x}{i:08x}"} for n in range(19) for i, p in enumerate(mobile)]
    shop.land("mobile-app", spike, batch_id="mobile-app-spike-000001")

    result = collect(shop)

    assert checks(result)["activity_events:volume_within_baseline"] is False
    assert checks(result)["activity_events:sources_within_rate_limits"] is True
    assert "sessions" not in materialized(result)


def test_near_duplicate_review_burst_is_flagged(shop):
    template = shop.payloads("product-reviews", limit=1)[0]
    words = ["amazing", "fantastic", "incredible", "superb", "wonderful"]
    burst = [
        {
            **template,
            "review_id": f"r-burst-{i}",
            "user_id": f"u{9_000_000 + i}",
            "item_id": "i000001",
            "rating": 5,
            "title": "Best purchase ever",
            "text": f"Absolutely {words[i % 5]} product, five stars, works perfectly, "
            f"buy it now you will not regret it at all {i}",
        }
        for i in range(25)
    ]
    shop.land("reviews-service", burst, batch_id="reviews-service-burst-000001")

    result = collect(shop)

    assert checks(result)["product_reviews:no_near_duplicate_burst"] is False
    assert "scored_reviews" not in materialized(result)


def test_wave_of_brand_new_accounts_is_flagged(shop):
    events = shop.payloads("user-activity", limit=400)
    fresh = [
        {
            **p,
            "event_id": f"n{i:012x}",
            "user_id": f"u{8_000_000 + i % 40}",
            "account_created": (datetime.fromisoformat(p["event_time"]) - timedelta(days=1))
            .astimezone(UTC)
            .strftime("%Y-%m-%d"),
        }
        for i, p in enumerate(events)
    ]
    shop.land("web-clickstream", fresh, batch_id="web-clickstream-fresh-000001")

    result = collect(shop)

    assert checks(result)["activity_events:new_accounts_within_baseline"] is False
    assert "sessions" not in materialized(result)
