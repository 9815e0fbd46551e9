"""Record schemas for the e-commerce topics: validation and sanitisation.

Each schema takes a frame of decoded message payloads and returns, per row,
either nothing (the row is accepted, sanitised) or the first reason it is
refused. Validation is vectorised over a batch, so a million events cost
seconds, not minutes.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

import nh3
import pandas as pd
import pyarrow as pa

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
EVENT_TYPES = ("view", "add_to_cart", "purchase")
MAX_PRICE = 100_000.0
MAX_TITLE_CHARS = 200
MAX_TEXT_CHARS = 5_000
MAX_CLOCK_SKEW = pd.Timedelta(days=1)

# C0/C1 controls (but tab and newline), bidi overrides and zero-width characters:
# invisible text that hides content from reviewers or reorders it on screen.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# Markup that executes or loads something when rendered: quarantined, not cleaned.
ACTIVE_MARKUP = re.compile(
    r"<\s*/?\s*(?:script|iframe|object|embed|style|svg|math|form|meta|link|base|img)\b"
    r"|\bon[a-z]+\s*=|javascript:|data:text/html",
    re.IGNORECASE,
)
TAG = re.compile(r"<[^>]*>")

KAFKA_FIELDS = {
    "source": pa.string(),
    "batch_id": pa.string(),
    "kafka_partition": pa.int32(),
    "kafka_offset": pa.int64(),
}


@dataclass(frozen=True)
class RecordSchema:
    """What a topic's payloads must look like, and the table accepted rows become."""

    topic: str
    arrow_schema: pa.Schema
    check: Callable[[pd.DataFrame, pd.Series], tuple[pd.DataFrame, pd.Series]]


def _first_reasons(index: pd.Index, rules: list[tuple[pd.Series, str]]) -> pd.Series:
    """The first failing rule's reason per row ('' where every rule passed)."""
    reasons = pd.Series("", index=index, dtype=object)
    for failed, reason in rules:
        reasons = reasons.mask((reasons == "") & failed.fillna(True).astype(bool), reason)
    return reasons


def _is_text(column: pd.Series) -> pd.Series:
    return column.map(lambda value: isinstance(value, str))


def _bad_id(column: pd.Series) -> pd.Series:
    return ~_is_text(column) | ~column.astype(str).str.match(ID_PATTERN)


def _timestamp(column: pd.Series) -> pd.Series:
    text = column.where(_is_text(column))
    return pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")


def _date(column: pd.Series) -> pd.Series:
    text = column.where(_is_text(column))
    return pd.to_datetime(text, utc=True, format="%Y-%m-%d", errors="coerce")


def _number(column: pd.Series) -> pd.Series:
    numeric = column.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    return pd.to_numeric(column.where(numeric), errors="coerce")


def sanitise_text(column: pd.Series) -> pd.Series:
    """Strip invisible control characters and inert markup from free text."""
    cleaned = column.str.replace(CONTROL_CHARS, "", regex=True)
    has_tags = cleaned.str.contains("<", regex=False)
    if has_tags.any():
        cleaned = cleaned.mask(
            has_tags, cleaned[has_tags].map(lambda t: html.unescape(nh3.clean(t, tags=set())))
        )
    return cleaned.str.strip()


def _check_activity(values: pd.DataFrame, kafka_time: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    event_time = _timestamp(values["event_time"])
    account_created = _date(values["account_created"])
    price = _number(values["price"])
    reasons = _first_reasons(
        values.index,
        [
            (_bad_id(values["event_id"]), "invalid field: event_id"),
            (~values["event_type"].isin(EVENT_TYPES), "invalid field: event_type"),
            (_bad_id(values["user_id"]), "invalid field: user_id"),
            (_bad_id(values["item_id"]), "invalid field: item_id"),
            (_bad_id(values["session_id"]), "invalid field: session_id"),
            (event_time.isna(), "invalid field: event_time"),
            (
                (event_time - kafka_time).abs() > MAX_CLOCK_SKEW,
                "timestamp: event_time far from Kafka time",
            ),
            (price.isna() | (price <= 0) | (price > MAX_PRICE), "out of range: price"),
            (account_created.isna(), "invalid field: account_created"),
            (account_created > event_time, "timestamp: account created after the event"),
        ],
    )
    clean = pd.DataFrame(
        {
            "event_id": values["event_id"],
            "event_type": values["event_type"],
            "user_id": values["user_id"],
            "item_id": values["item_id"],
            "session_id": values["session_id"],
            "event_time": event_time,
            "price": price,
            "account_created": account_created.dt.date,
        }
    )
    return clean, reasons


def _check_review(values: pd.DataFrame, kafka_time: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    review_time = _timestamp(values["review_time"])
    account_created = _date(values["account_created"])
    rating = _number(values["rating"])
    title_ok, text_ok = _is_text(values["title"]), _is_text(values["text"])
    title = values["title"].where(title_ok, "").astype(str)
    text = values["text"].where(text_ok, "").astype(str)
    markup = title.str.contains(ACTIVE_MARKUP) | text.str.contains(ACTIVE_MARKUP)
    reasons = _first_reasons(
        values.index,
        [
            (_bad_id(values["review_id"]), "invalid field: review_id"),
            (_bad_id(values["user_id"]), "invalid field: user_id"),
            (_bad_id(values["item_id"]), "invalid field: item_id"),
            (rating.isna() | (rating % 1 != 0) | ~rating.between(1, 5), "out of range: rating"),
            (~title_ok | ~text_ok, "invalid field: title/text"),
            (title.str.len() > MAX_TITLE_CHARS, "oversized: title"),
            (text.str.len() > MAX_TEXT_CHARS, "oversized: text"),
            (markup, "markup: active content in review"),
            (review_time.isna(), "invalid field: review_time"),
            (
                (review_time - kafka_time).abs() > MAX_CLOCK_SKEW,
                "timestamp: review_time far from Kafka time",
            ),
            (account_created.isna(), "invalid field: account_created"),
            (account_created > review_time, "timestamp: account created after the review"),
        ],
    )
    accepted = reasons == ""
    text = text.mask(accepted, sanitise_text(text[accepted]))
    title = title.mask(accepted, sanitise_text(title[accepted]))
    reasons = reasons.mask(accepted & (text == ""), "invalid field: empty text after sanitising")
    clean = pd.DataFrame(
        {
            "review_id": values["review_id"],
            "user_id": values["user_id"],
            "item_id": values["item_id"],
            "rating": rating,
            "title": title,
            "text": text,
            "review_time": review_time,
            "account_created": account_created.dt.date,
        }
    )
    return clean, reasons


_TS = pa.timestamp("ms", tz="UTC")

ACTIVITY = RecordSchema(
    topic="user-activity",
    arrow_schema=pa.schema(
        {
            "event_id": pa.string(),
            "event_type": pa.string(),
            "user_id": pa.string(),
            "item_id": pa.string(),
            "session_id": pa.string(),
            "event_time": _TS,
            "price": pa.float64(),
            "account_created": pa.date32(),
            **KAFKA_FIELDS,
        }
    ),
    check=_check_activity,
)

REVIEWS = RecordSchema(
    topic="product-reviews",
    arrow_schema=pa.schema(
        {
            "review_id": pa.string(),
            "user_id": pa.string(),
            "item_id": pa.string(),
            "rating": pa.int32(),
            "title": pa.string(),
            "text": pa.string(),
            "review_time": _TS,
            "account_created": pa.date32(),
            **KAFKA_FIELDS,
        }
    ),
    check=_check_review,
)
