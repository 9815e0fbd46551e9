"""DataValidator: Great Expectations 1.x suites on pandas and Spark frames."""

from __future__ import annotations

import json

import dagster as dg
import great_expectations.expectations as gxe
import pandas as pd
import pytest

from resources.validation import DataValidator, Suite, ValidationOutcome

EVENT_TYPES = ["view", "add_to_cart", "purchase"]


def events_suite() -> Suite:
    return Suite(
        "events",
        [
            gxe.ExpectColumnToExist(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=EVENT_TYPES),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=1000),
            gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=100),
        ],
    )


def clean_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5, 6],
            "event_type": ["view", "view", "add_to_cart", "purchase", "view", "purchase"],
            "price": [10.0, 0.0, 999.5, 25.0, 1000.0, 3.5],
        }
    )


def dirty_events() -> pd.DataFrame:
    frame = clean_events()
    frame["user_id"] = frame["user_id"].astype("float")
    frame.loc[[1, 4], "user_id"] = None  # 2 nulls
    frame.loc[2, "event_type"] = "refund"  # 1 out of set
    frame.loc[[0, 3, 5], "price"] = [-1.0, 5000.0, 1e9]  # 3 out of range
    return frame


def by_type(outcome: ValidationOutcome) -> dict[str, dict]:
    return {item["expectation_type"]: item for item in outcome.failed}


@pytest.fixture(scope="module")
def validator() -> DataValidator:
    return DataValidator()


def test_a_clean_frame_passes(validator):
    outcome = validator.validate(clean_events(), events_suite(), asset_name="events")

    assert outcome.success is True
    assert outcome.evaluated == 5
    assert outcome.failed == []
    result = outcome.to_check_result()
    assert result.passed is True
    assert result.metadata["failed_expectations"].value == 0
    assert result.metadata["evaluated_expectations"].value == 5


def test_nulls_out_of_set_and_out_of_range_values_fail_with_evidence(validator):
    outcome = validator.validate(dirty_events(), events_suite(), asset_name="events")

    assert outcome.success is False
    assert outcome.evaluated == 5
    failed = by_type(outcome)
    assert set(failed) == {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_between",
    }
    assert failed["expect_column_values_to_not_be_null"]["column"] == "user_id"
    assert failed["expect_column_values_to_not_be_null"]["unexpected_count"] == 2
    assert failed["expect_column_values_to_be_in_set"]["unexpected_count"] == 1
    assert failed["expect_column_values_to_be_in_set"]["partial_unexpected"] == ["refund"]
    assert failed["expect_column_values_to_be_in_set"]["kwargs"]["value_set"] == EVENT_TYPES
    between = failed["expect_column_values_to_be_between"]
    assert between["unexpected_count"] == 3
    assert between["unexpected_percent"] == pytest.approx(50.0)
    assert sorted(between["partial_unexpected"]) == [-1.0, 5000.0, 1e9]
    assert between["kwargs"]["max_value"] == 1000


def test_the_check_result_carries_what_failed(validator):
    outcome = validator.validate(dirty_events(), events_suite(), asset_name="events")

    result = outcome.to_check_result(
        asset_key="events", severity=dg.AssetCheckSeverity.WARN, description="events suite"
    )

    assert result.passed is False
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.asset_key == dg.AssetKey("events")
    assert result.description == "events suite"
    assert result.metadata["failed_expectations"].value == 3
    assert result.metadata["passed_expectations"].value == 2
    failures = result.metadata["failures"].value
    assert {f["expectation_type"]: f["unexpected_count"] for f in failures} == {
        "expect_column_values_to_not_be_null": 2,
        "expect_column_values_to_be_in_set": 1,
        "expect_column_values_to_be_between": 3,
    }
    # strict JSON: the null user_ids are reported as null, not NaN
    assert "NaN" not in json.dumps(failures, allow_nan=False)
    assert "expect_column_values_to_be_in_set(event_type): 1 unexpected" in (result.metadata["summary"].value)


def test_a_missing_column_is_a_failure_not_a_crash(validator):
    frame = clean_events().drop(columns=["user_id"])

    outcome = validator.validate(frame, events_suite(), asset_name="events_no_user")

    assert outcome.success is False
    failed = by_type(outcome)
    assert failed["expect_column_to_exist"]["column"] == "user_id"
    assert "user_id" in failed["expect_column_values_to_not_be_null"]["exception"]


def test_validating_repeatedly_with_different_suites_and_assets(validator):
    prices = Suite("prices", [gxe.ExpectColumnValuesToBeBetween(column="price", max_value=10)])
    events = events_suite()

    first = validator.validate(clean_events(), events, asset_name="events")
    second = validator.validate(clean_events(), prices, asset_name="events")
    third = validator.validate(dirty_events(), events, asset_name="other_events")
    fourth = validator.validate(clean_events(), events, asset_name="events")

    assert (first.success, second.success, third.success, fourth.success) == (
        True,
        False,
        False,
        True,
    )
    assert second.suite_name == "prices" and second.evaluated == 1
    assert by_type(second)["expect_column_values_to_be_between"]["unexpected_count"] == 3
    assert third.asset_name == "other_events"
    # the declared expectations were never bound to a GX suite, so stay reusable
    assert all(exp.id is None for exp in events.expectations)


def test_suites_and_inputs_are_checked():
    with pytest.raises(ValueError, match="no expectations"):
        Suite("empty", [])
    with pytest.raises(TypeError, match="not a great_expectations Expectation"):
        Suite("bad", [{"expectation_type": "expect_column_to_exist"}])
    with pytest.raises(TypeError, match="pandas or pyspark"):
        DataValidator().validate([{"user_id": 1}], events_suite(), asset_name="events")


def test_a_blocking_asset_check_fails_in_a_dagster_run():
    @dg.asset
    def events() -> pd.DataFrame:
        return dirty_events()

    @dg.asset_check(asset=events, blocking=True)
    def events_are_valid(validator: DataValidator, events: pd.DataFrame) -> dg.AssetCheckResult:
        return validator.validate(events, events_suite(), asset_name="events").to_check_result()

    result = dg.materialize_to_memory(
        [events, events_are_valid], resources={"validator": DataValidator()}, raise_on_error=False
    )

    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["failed_expectations"].value == 3


@pytest.fixture(scope="module")
def spark_session(request):
    try:  # the suite-wide hardened session, when the shared conftest provides one
        return request.getfixturevalue("spark")
    except pytest.FixtureLookupError:
        from pyspark.sql import SparkSession

        return SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()


@pytest.mark.slow
def test_spark_frames_are_validated_too(validator, spark_session):
    schema = "user_id long, event_type string, price double"
    clean = spark_session.createDataFrame(clean_events(), schema=schema)
    dirty = spark_session.createDataFrame(
        [(None, "view", -1.0), (2, "refund", 10.0), (None, "purchase", 5000.0), (4, "view", 1.0)],
        schema=schema,
    )

    passed = validator.validate(clean, events_suite(), asset_name="spark_events")
    outcome = validator.validate(dirty, events_suite(), asset_name="spark_events")

    assert passed.success is True and passed.evaluated == 5
    assert outcome.success is False
    assert {k: v["unexpected_count"] for k, v in by_type(outcome).items()} == {
        "expect_column_values_to_not_be_null": 2,
        "expect_column_values_to_be_in_set": 1,
        "expect_column_values_to_be_between": 2,
    }
    assert outcome.to_check_result().metadata["failed_expectations"].value == 3
    # the frame was persisted only for the validation
    assert dirty.is_cached is False
