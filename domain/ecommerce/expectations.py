"""Great Expectations suites for the e-commerce tables, declared in code."""

from __future__ import annotations

import great_expectations.expectations as gxe

from domain.ecommerce.records import EVENT_TYPES
from resources.validation import Suite


def _not_null(*columns: str) -> list:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]


def _unique(*columns: str) -> list:
    return [gxe.ExpectColumnValuesToBeUnique(column=c) for c in columns]


ACTIVITY_SUITE = Suite(
    "ecommerce.activity_events",
    [
        *_not_null("event_id", "event_type", "user_id", "item_id", "event_time", "price"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=100_000, strict_min=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ],
)

REVIEW_SUITE = Suite(
    "ecommerce.product_reviews",
    [
        *_not_null("review_id", "user_id", "item_id", "rating", "text", "review_time"),
        *_unique("review_id"),
        gxe.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1, max_value=5_000),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ],
)

SESSIONS_SUITE = Suite(
    "ecommerce.sessions",
    [
        *_not_null("event_id", "user_id", "item_id", "session_key", "session_seq", "event_time"),
        *_unique("event_id"),
        gxe.ExpectColumnValuesToBeBetween(column="session_seq", min_value=1),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ],
)

INTERACTIONS_SUITE = Suite(
    "ecommerce.interactions",
    [
        *_not_null("user_id", "item_id", "confidence", "label"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
        gxe.ExpectColumnValuesToBeBetween(column="confidence", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ],
)

SCORED_REVIEWS_SUITE = Suite(
    "ecommerce.scored_reviews",
    [
        *_not_null("review_id", "item_id", "sentiment_score"),
        *_unique("review_id"),
        gxe.ExpectColumnValuesToBeBetween(column="sentiment_score", min_value=0, max_value=1),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ],
)

ITEM_FEATURES_SUITE = Suite(
    "ecommerce.item_features",
    [
        *_not_null("item_id", "reviews", "mean_rating", "mean_sentiment"),
        *_unique("item_id"),
        gxe.ExpectColumnValuesToBeBetween(column="mean_rating", min_value=1, max_value=5),
        gxe.ExpectColumnValuesToBeBetween(column="positive_share", min_value=0, max_value=1),
    ],
)
