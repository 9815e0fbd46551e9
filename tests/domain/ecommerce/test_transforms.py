"""The approved e-commerce transformations, on tiny hand-built tables."""

from __future__ import annotations

import inspect
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from domain.ecommerce.transforms import (
    approved_transforms,
    build_interactions,
    item_review_features,
    review_sentiment,
    sessionise,
)

EVENTS_SCHEMA = (
    "event_id string, event_type string, user_id string, item_id string, session_id string, "
    "event_time timestamp, price double, account_created date, source string, "
    "batch_id string, kafka_offset long"
)
REVIEWS_SCHEMA = (
    "review_id string, user_id string, item_id string, rating int, title string, text string, "
    "review_time timestamp, account_created date, source string, batch_id string, "
    "kafka_offset long"
)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def events(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """Events from (event_id, user_id, item_id, minutes after T0, kafka_offset, batch_id)."""
    return spark.createDataFrame(
        [
            (
                event_id,
                "view",
                user,
                item,
                "client-session",
                T0 + timedelta(minutes=minutes),
                9.99,
                date(2024, 1, 1),
                "web",
                batch,
                offset,
            )
            for event_id, user, item, minutes, offset, batch in rows
        ],
        EVENTS_SCHEMA,
    )


def by_event_id(df: DataFrame) -> dict[str, dict]:
    return {row["event_id"]: row.asDict() for row in df.collect()}


def test_sessionise_splits_on_gaps_longer_than_the_limit(spark):
    out = sessionise(
        events(
            spark,
            [
                ("a1", "u1", "i1", 0, 1, "b1"),
                ("a2", "u1", "i2", 29, 2, "b1"),  # 29 min later: same session
                ("a3", "u1", "i3", 60, 3, "b1"),  # 31 min later: new session
                ("c1", "u2", "i1", 0, 4, "b1"),
                ("c2", "u2", "i1", 30, 5, "b1"),  # exactly the limit: same session
            ],
        ),
        gap_minutes=30,
    )
    rows = by_event_id(out)

    assert {k: (r["session_key"], r["session_seq"]) for k, r in rows.items()} == {
        "a1": ("u1:1", 1),
        "a2": ("u1:1", 2),
        "a3": ("u1:2", 1),
        "c1": ("u2:1", 1),
        "c2": ("u2:1", 2),
    }
    assert [rows[k]["seconds_since_prev"] for k in ("a1", "a2", "a3", "c2")] == [
        None,
        29 * 60.0,
        31 * 60.0,
        30 * 60.0,
    ]
    # All input columns are kept, and the new ones have the documented types.
    assert out.columns[:11] == spark.createDataFrame([], EVENTS_SCHEMA).columns
    assert dict(out.dtypes[11:]) == {
        "seconds_since_prev": "double",
        "session_key": "string",
        "session_seq": "int",
    }


def test_sessionise_gap_is_configurable(spark):
    df = events(spark, [("a1", "u1", "i1", 0, 1, "b1"), ("a2", "u1", "i1", 20, 2, "b1")])

    assert {r["session_key"] for r in sessionise(df, gap_minutes=15).collect()} == {
        "u1:1",
        "u1:2",
    }


def test_sessionise_keeps_only_the_first_delivery_of_a_replayed_event(spark):
    out = sessionise(
        events(
            spark,
            [
                ("e1", "u1", "i1", 0, 7, "b1"),
                ("e1", "u1", "i9", 0, 7, "b2"),  # consumer replay, later batch, altered item
                ("e1", "u1", "i8", 0, 12, "b1"),  # same id at a later offset
                ("e2", "u1", "i2", 5, 8, "b1"),
            ],
        )
    )
    rows = out.collect()

    assert sorted(r["event_id"] for r in rows) == ["e1", "e2"]
    first = by_event_id(out)["e1"]
    assert (first["item_id"], first["kafka_offset"], first["batch_id"]) == ("i1", 7, "b1")
    assert by_event_id(out)["e2"]["session_seq"] == 2


def test_sessionise_breaks_time_ties_by_event_id_whatever_the_input_order(spark):
    rows = [
        ("p", "u1", "i0", -10, 0, "b1"),
        ("z", "u1", "i1", 0, 1, "b1"),
        ("m", "u1", "i2", 0, 2, "b1"),
        ("a", "u1", "i3", 0, 3, "b1"),
        ("q", "u1", "i4", 45, 4, "b1"),
    ]
    forward = by_event_id(sessionise(events(spark, rows)))
    shuffled = by_event_id(sessionise(events(spark, rows[::-1]).repartition(3)))

    assert {k: (r["session_seq"], r["seconds_since_prev"]) for k, r in forward.items()} == {
        "p": (1, None),
        "a": (2, 600.0),  # first of the three events at the same instant
        "m": (3, 0.0),
        "z": (4, 0.0),
        "q": (1, 45 * 60.0),
    }
    assert shuffled == forward


def test_build_interactions_counts_and_confidence(spark):
    sessions = spark.createDataFrame(
        [
            ("u1", "i1", "view", "u1:1", T0),
            ("u1", "i1", "view", "u1:2", T0 + timedelta(hours=2)),
            ("u1", "i1", "add_to_cart", "u1:2", T0 + timedelta(hours=2, minutes=1)),
            ("u1", "i1", "purchase", "u1:2", T0 + timedelta(hours=2, minutes=5)),
            ("u1", "i2", "view", "u1:1", T0 + timedelta(minutes=3)),
            ("u2", "i1", "add_to_cart", "u2:1", T0 + timedelta(days=1)),
        ],
        "user_id string, item_id string, event_type string, session_key string, event_time timestamp",
    )
    out = build_interactions(sessions)
    rows = {
        (r["user_id"], r["item_id"]): r
        for r in out.withColumns(
            {c: F.date_format(c, "yyyy-MM-dd HH:mm") for c in ("first_seen", "last_seen")}
        ).collect()
    }

    counts = {
        key: (r["views"], r["carts"], r["purchases"], r["sessions"], r["label"]) for key, r in rows.items()
    }
    assert counts == {
        ("u1", "i1"): (2, 1, 1, 2, 1),
        ("u1", "i2"): (1, 0, 0, 1, 0),
        ("u2", "i1"): (0, 1, 0, 1, 1),
    }
    # 1 + 0.4 * (views + 3 * carts + 5 * purchases)
    assert rows[("u1", "i1")]["confidence"] == pytest.approx(5.0)
    assert rows[("u1", "i2")]["confidence"] == pytest.approx(1.4)
    assert rows[("u2", "i1")]["confidence"] == pytest.approx(2.2)
    assert (rows[("u1", "i1")]["first_seen"], rows[("u1", "i1")]["last_seen"]) == (
        "2024-05-01 12:00",
        "2024-05-01 14:05",
    )
    assert dict(out.dtypes) == {
        "user_id": "string",
        "item_id": "string",
        "views": "bigint",
        "carts": "bigint",
        "purchases": "bigint",
        "sessions": "bigint",
        "first_seen": "timestamp",
        "last_seen": "timestamp",
        "confidence": "double",
        "label": "int",
    }


POSITIVE_WORDS = ["great", "excellent", "love", "perfect", "amazing", "recommend", "sturdy"]
NEGATIVE_WORDS = ["terrible", "broken", "awful", "waste", "refund", "flimsy", "disappointed"]
NEUTRAL_WORDS = ["product", "arrived", "box", "colour", "size", "use", "kitchen", "daily"]


def synthetic_reviews(spark: SparkSession, n: int = 400) -> DataFrame:
    """Reviews whose wording follows their rating, with some neutral filler."""
    rng = random.Random(11)  # noqa: S311 -- reproducible test data, not a secret
    rows = []
    for i in range(n):
        rating = rng.choice([1, 2, 3, 4, 5])
        if rating == 3:
            vocabulary = POSITIVE_WORDS + NEGATIVE_WORDS
        else:
            vocabulary = POSITIVE_WORDS if rating >= 4 else NEGATIVE_WORDS
        words = rng.choices(vocabulary, k=3) + rng.choices(NEUTRAL_WORDS, k=5)
        rng.shuffle(words)
        rows.append(
            (
                f"r{i:04d}",
                f"u{i % 97}",
                f"i{i % 13}",
                rating,
                words[0].title(),
                " ".join(words[1:]),
                T0 + timedelta(minutes=i),
                date(2023, 6, 1),
                "web",
                "b1",
                i,
            )
        )
    return spark.createDataFrame(rows, REVIEWS_SCHEMA)


@pytest.fixture(scope="module")
def sentiment_run(spark):
    """One training run shared by the sentiment tests: (reviews, scored rows, metrics).

    Besides the synthetic reviews, two rating-3 reviews whose words are clearly
    positive and clearly negative.
    """
    reviews = (
        synthetic_reviews(spark)
        .unionByName(
            spark.createDataFrame(
                [
                    (
                        "x-pos",
                        "u1",
                        "i1",
                        3,
                        "Amazing",
                        "great perfect love it",
                        T0,
                        date(2023, 1, 1),
                        "web",
                        "b2",
                        1,
                    ),
                    (
                        "x-neg",
                        "u1",
                        "i1",
                        3,
                        "Awful",
                        "terrible broken waste",
                        T0,
                        date(2023, 1, 1),
                        "web",
                        "b2",
                        2,
                    ),
                ],
                REVIEWS_SCHEMA,
            )
        )
        .cache()
    )
    scored, metrics = review_sentiment(reviews)
    return reviews, scored, {r["review_id"]: r for r in scored.collect()}, metrics


@pytest.mark.slow
def test_review_sentiment_learns_from_ratings(sentiment_run):
    _, _, _, metrics = sentiment_run

    assert metrics["heldout_accuracy"] > 0.8
    assert metrics["train_auc"] > 0.8


@pytest.mark.slow
def test_review_sentiment_labels_by_rating_and_scores_every_review(sentiment_run):
    reviews, scored, rows, metrics = sentiment_run
    ratings = {r["review_id"]: r["rating"] for r in reviews.collect()}

    labelled = sum(1 for rating in ratings.values() if rating != 3)
    assert metrics["train_rows"] + metrics["heldout_rows"] == labelled
    assert 0.1 * labelled < metrics["heldout_rows"] < 0.3 * labelled
    # Every review is returned and scored; rating 3 has a score but no label.
    assert rows.keys() == ratings.keys()
    for review_id, row in rows.items():
        assert 0.0 <= row["sentiment_score"] <= 1.0
        expected = None if ratings[review_id] == 3 else int(ratings[review_id] >= 4)
        assert row["sentiment_label"] == expected
    assert scored.columns == [*reviews.columns, "sentiment_label", "sentiment_score"]
    assert dict(scored.dtypes[-2:]) == {"sentiment_label": "int", "sentiment_score": "double"}


@pytest.mark.slow
def test_review_sentiment_scores_unlabelled_text_by_its_words(sentiment_run):
    _, _, rows, _ = sentiment_run

    assert rows["x-pos"]["sentiment_score"] > 0.7
    assert rows["x-neg"]["sentiment_score"] < 0.3


def test_review_sentiment_refuses_training_without_both_classes(spark):
    only_positive = synthetic_reviews(spark, 60).withColumn("rating", F.lit(5))

    with pytest.raises(ValueError, match="needs both positive"):
        review_sentiment(only_positive)


def test_item_review_features(spark):
    scored = spark.createDataFrame(
        [
            ("iA", "u1", 5, 0.9),
            ("iA", "u1", 4, 0.7),
            ("iA", "u2", 1, 0.2),
            ("iB", "u3", 2, 0.5),
        ],
        "item_id string, user_id string, rating int, sentiment_score double",
    )
    out = item_review_features(scored)
    rows = {r["item_id"]: r.asDict() for r in out.collect()}

    assert rows["iA"] == pytest.approx(
        {
            "item_id": "iA",
            "reviews": 3,
            "mean_rating": 10 / 3,
            "mean_sentiment": 0.6,
            "positive_share": 2 / 3,
            "reviewers": 2,
        }
    )
    assert rows["iB"] == pytest.approx(
        {
            "item_id": "iB",
            "reviews": 1,
            "mean_rating": 2.0,
            "mean_sentiment": 0.5,
            "positive_share": 1.0,
            "reviewers": 1,
        }
    )
    assert dict(out.dtypes) == {
        "item_id": "string",
        "reviews": "bigint",
        "mean_rating": "double",
        "mean_sentiment": "double",
        "positive_share": "double",
        "reviewers": "bigint",
    }


def test_approved_transforms_lists_the_four_functions_with_their_source():
    transforms = approved_transforms()

    assert transforms == {
        "sessionise": sessionise,
        "build_interactions": build_interactions,
        "review_sentiment": review_sentiment,
        "item_review_features": item_review_features,
    }
    for name, function in transforms.items():
        assert inspect.getsource(function).startswith(f"def {name}(")
