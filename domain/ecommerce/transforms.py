"""The approved transformation code of the e-commerce processing stage.

Pure, deterministic functions on Spark DataFrames, with no I/O: the processing
assets load validated tables, call these, and store the results. Each
function's source is hashed into its asset's `code_version`, and the signed
manifest of approved transformation code covers exactly the functions that
`approved_transforms()` returns, so a run whose code was altered (for example
to bias features) is refused before it publishes.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import IDF, HashingTF, RegexTokenizer, StopWordsRemover
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


def sessionise(events: DataFrame, gap_minutes: int = 30) -> DataFrame:
    """Split each user's events into sessions on the server side.

    The client-provided `session_id` is kept but not trusted: a session starts
    at a user's first event and whenever more than `gap_minutes` passed since
    their previous one (ordered by `event_time`, ties broken by `event_id`).
    Adds `session_key` ("<user_id>:<ordinal>"), `session_seq` (1-based position
    in the session) and `seconds_since_prev` (since the user's previous event;
    null for their first). A replayed Kafka message arrives with an `event_id`
    already seen: only its first delivery (lowest `kafka_offset`, then
    `batch_id`) is kept, so a replay can neither inflate counts nor overwrite
    an earlier event.
    """
    first_delivery = Window.partitionBy("event_id").orderBy("kafka_offset", "batch_id")
    deduplicated = (
        events.withColumn("_delivery", F.row_number().over(first_delivery))
        .where(F.col("_delivery") == 1)
        .drop("_delivery")
    )

    by_user = Window.partitionBy("user_id").orderBy("event_time", "event_id")
    micros_since_prev = F.unix_micros("event_time") - F.unix_micros(F.lag("event_time").over(by_user))
    starts_session = micros_since_prev.isNull() | (micros_since_prev > gap_minutes * 60_000_000)
    with_ordinal = (
        deduplicated.withColumn("seconds_since_prev", micros_since_prev / 1_000_000)
        .withColumn("_starts", starts_session.cast("int"))
        .withColumn(
            "_ordinal",
            F.sum("_starts").over(by_user.rowsBetween(Window.unboundedPreceding, 0)),
        )
    )
    # Same user_id partitioning as `by_user`, so this window needs no second shuffle.
    in_session = Window.partitionBy("user_id", "_ordinal").orderBy("event_time", "event_id")
    return (
        with_ordinal.withColumn("session_key", F.concat_ws(":", "user_id", F.col("_ordinal").cast("string")))
        .withColumn("session_seq", F.row_number().over(in_session))
        .drop("_starts", "_ordinal")
    )


VIEW_WEIGHT = 1
CART_WEIGHT = 3
PURCHASE_WEIGHT = 5
CONFIDENCE_ALPHA = 0.4


def build_interactions(sessions: DataFrame) -> DataFrame:
    """The implicit-feedback table: one row per (user_id, item_id).

    `confidence` = 1 + alpha * (views * 1 + carts * 3 + purchases * 5), the
    weighting of implicit-feedback matrix factorisation; `label` is 1 when the
    user put the item in a cart or bought it, else 0.
    """

    def count_of(event_type: str) -> Column:
        return F.count(F.when(F.col("event_type") == event_type, True))

    counts = sessions.groupBy("user_id", "item_id").agg(
        count_of("view").alias("views"),
        count_of("add_to_cart").alias("carts"),
        count_of("purchase").alias("purchases"),
        F.count_distinct("session_key").alias("sessions"),
        F.min("event_time").alias("first_seen"),
        F.max("event_time").alias("last_seen"),
    )
    weighted = (
        F.col("views") * VIEW_WEIGHT + F.col("carts") * CART_WEIGHT + F.col("purchases") * PURCHASE_WEIGHT
    )
    return counts.withColumn("confidence", 1.0 + CONFIDENCE_ALPHA * weighted).withColumn(
        "label", (F.col("carts") + F.col("purchases") > 0).cast("int")
    )


SENTIMENT_FEATURES = 1 << 16
SENTIMENT_SPLIT_SEED = 20240611
SENTIMENT_HELDOUT_PERCENT = 20


def review_sentiment(reviews: DataFrame) -> tuple[DataFrame, dict[str, int | float]]:
    """Score every review's sentiment with a model trained on its rating.

    Labels come from the rating (>= 4 positive, <= 2 negative, 3 left out of
    training); the text is title + " " + text, lower-cased and tokenised, then
    stop words removed, hashed (2^16 features), IDF-weighted and fed to a
    logistic regression. The held-out 20 % is chosen by a seeded hash of
    `review_id`, so the split does not depend on partitioning. Returns the
    reviews plus `sentiment_label` (null for rating 3) and `sentiment_score`
    (probability of positive), and metrics: `train_rows`, `heldout_rows`,
    `train_auc` (area under ROC of the trained model, measured on the held-out
    split) and `heldout_accuracy`. Raises ValueError when either split lacks a
    class, rather than scoring with a model that cannot be evaluated. The
    fitted model lives only in this plan: it is never saved.
    """
    label = F.when(F.col("rating") >= 4, 1).when(F.col("rating") <= 2, 0).cast("int")
    prepared = reviews.withColumn("sentiment_label", label).withColumn(
        "_text", F.concat_ws(" ", "title", "text")
    )
    bucket = F.pmod(F.xxhash64(F.lit(SENTIMENT_SPLIT_SEED), "review_id"), F.lit(100))
    labelled = prepared.where(F.col("sentiment_label").isNotNull()).withColumns(
        {
            "_label": F.col("sentiment_label").cast("double"),
            "_heldout": bucket < SENTIMENT_HELDOUT_PERCENT,
        }
    )
    class_counts = {
        (row["_heldout"], row["_label"]): row["count"]
        for row in labelled.groupBy("_heldout", "_label").count().collect()
    }
    for heldout, split in ((False, "training"), (True, "held-out")):
        if not (class_counts.get((heldout, 0.0)) and class_counts.get((heldout, 1.0))):
            raise ValueError(
                f"review_sentiment: the {split} split needs both positive (rating >= 4) "
                f"and negative (rating <= 2) reviews; class counts: {class_counts}"
            )

    pipeline = Pipeline(
        stages=[
            # Splits on anything that is not a letter or digit, in any script; lower-cases.
            RegexTokenizer(inputCol="_text", outputCol="_tokens", pattern=r"[^\p{L}\p{N}]+"),
            StopWordsRemover(inputCol="_tokens", outputCol="_words", locale="en_US"),
            HashingTF(inputCol="_words", outputCol="_tf", numFeatures=SENTIMENT_FEATURES),
            IDF(inputCol="_tf", outputCol="_features"),
            LogisticRegression(
                featuresCol="_features",
                labelCol="_label",
                predictionCol="_prediction",
                rawPredictionCol="_raw",
                probabilityCol="_probability",
                maxIter=50,
                regParam=0.01,
            ),
        ]
    )
    model = pipeline.fit(labelled.where(~F.col("_heldout")))

    heldout = model.transform(labelled.where(F.col("_heldout")))
    train_auc = BinaryClassificationEvaluator(
        rawPredictionCol="_raw", labelCol="_label", metricName="areaUnderROC"
    ).evaluate(heldout)
    correct = (F.col("_prediction") == F.col("_label")).cast("double")
    (accuracy,) = heldout.agg(F.avg(correct)).first()
    metrics = {
        "train_rows": class_counts[(False, 0.0)] + class_counts[(False, 1.0)],
        "heldout_rows": class_counts[(True, 0.0)] + class_counts[(True, 1.0)],
        "train_auc": float(train_auc),
        "heldout_accuracy": float(accuracy),
    }

    scored = model.transform(prepared).withColumn("sentiment_score", vector_to_array("_probability")[1])
    return scored.select(*reviews.columns, "sentiment_label", "sentiment_score"), metrics


POSITIVE_SCORE = 0.5


def item_review_features(scored_reviews: DataFrame) -> DataFrame:
    """Per-item review features from `review_sentiment`'s output.

    `reviews` (count), `mean_rating`, `mean_sentiment` (mean score),
    `positive_share` (share of reviews scored >= 0.5) and `reviewers`
    (distinct users). Comparing `reviews` with `reviewers`, and `mean_rating`
    with `mean_sentiment`, exposes one account reviewing repeatedly and
    5-star ratings on text that does not read positive.
    """
    return scored_reviews.groupBy("item_id").agg(
        F.count(F.lit(1)).alias("reviews"),
        F.avg("rating").alias("mean_rating"),
        F.avg("sentiment_score").alias("mean_sentiment"),
        F.avg((F.col("sentiment_score") >= POSITIVE_SCORE).cast("double")).alias("positive_share"),
        F.count_distinct("user_id").alias("reviewers"),
    )


def approved_transforms() -> dict[str, Callable[..., object]]:
    """The transformation functions the signed code manifest covers, by name."""
    return {
        "sessionise": sessionise,
        "build_interactions": build_interactions,
        "review_sentiment": review_sentiment,
        "item_review_features": item_review_features,
    }
