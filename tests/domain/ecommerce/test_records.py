"""Record validation and sanitisation for the e-commerce topics."""

import pandas as pd

from domain.ecommerce.records import ACTIVITY, REVIEWS, sanitise_text

KAFKA_TIME = pd.Timestamp("2026-11-02T10:00:00Z")
EVENT = {
    "event_id": "e0001",
    "event_type": "view",
    "user_id": "u0000001",
    "item_id": "i000001",
    "session_id": "s1",
    "event_time": "2026-11-02T10:00:00.000Z",
    "price": 9.99,
    "account_created": "2025-01-01",
}
REVIEW = {
    "review_id": "r1",
    "user_id": "u0000001",
    "item_id": "i000001",
    "rating": 4,
    "title": "Good",
    "text": "Works well.",
    "review_time": "2026-11-02T10:00:00.000Z",
    "account_created": "2025-01-01",
}


def _check(schema, rows):
    fields = [
        n
        for n in schema.arrow_schema.names
        if n not in ("source", "batch_id", "kafka_partition", "kafka_offset")
    ]
    frame = pd.DataFrame.from_records(rows, columns=fields)
    return schema.check(frame, pd.Series([KAFKA_TIME] * len(rows)))


def test_valid_event_passes_and_invalid_fields_get_their_reason():
    rows = [
        EVENT,
        {**EVENT, "event_type": "refund"},
        {**EVENT, "price": -1},
        {**EVENT, "price": "9.99"},
        {**EVENT, "user_id": "u1; DROP TABLE"},
        {**EVENT, "event_time": "2026-12-25T00:00:00Z"},
        {**EVENT, "account_created": "2027-01-01"},
        {k: v for k, v in EVENT.items() if k != "item_id"},
    ]
    clean, reasons = _check(ACTIVITY, rows)
    assert reasons.tolist() == [
        "",
        "invalid field: event_type",
        "out of range: price",
        "out of range: price",
        "invalid field: user_id",
        "timestamp: event_time far from Kafka time",
        "timestamp: account created after the event",
        "invalid field: item_id",
    ]
    assert clean.loc[0, "event_time"] == KAFKA_TIME


def test_reviews_with_active_markup_or_oversized_text_are_refused():
    rows = [
        REVIEW,
        {**REVIEW, "text": "<img src=x onerror=alert(1)>"},
        {**REVIEW, "text": "click <a href='javascript:steal()'>here</a>"},
        {**REVIEW, "text": "x" * 5_001},
        {**REVIEW, "rating": 6},
        {**REVIEW, "rating": 4.5},
        {**REVIEW, "text": "\u200b\x07"},
    ]
    _, reasons = _check(REVIEWS, rows)
    assert reasons.tolist() == [
        "",
        "markup: active content in review",
        "markup: active content in review",
        "oversized: text",
        "out of range: rating",
        "out of range: rating",
        "invalid field: empty text after sanitising",
    ]


def test_sanitising_strips_invisible_characters_and_inert_tags_but_keeps_words():
    text = pd.Series(["Great <b>value</b> &amp; fast\x1b[31m", "bidi \u202egnirts\u202c ok", "plain"])
    assert sanitise_text(text).tolist() == ["Great value & fast[31m", "bidi gnirts ok", "plain"]
