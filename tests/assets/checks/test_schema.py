"""Expectation checks: the same suite gives the same verdict whichever engine reads the table."""

from __future__ import annotations

import great_expectations.expectations as gxe
import pandas as pd
import pytest

from assets.checks.schema import validation_frame
from resources.spark import SparkResource
from resources.tables import TableFile
from resources.validation import DataValidator, Suite

SUITE = Suite(
    "orders",
    [
        gxe.ExpectColumnValuesToNotBeNull(column="order_id"),
        gxe.ExpectColumnValuesToBeUnique(column="order_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=100, strict_min=True),
        gxe.ExpectColumnValueLengthsToBeBetween(column="note", min_value=1, max_value=8),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ],
)


def write_table(path, frame: pd.DataFrame) -> TableFile:
    frame.to_parquet(path, index=False)
    return TableFile(path=path, rows=len(frame))


def orders(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(rows)],
            "user_id": [i % 7 for i in range(rows)],
            "item_id": list(range(rows)),
            "price": [1.0 + i % 50 for i in range(rows)],
            "note": ["ok"] * rows,
            "image": [b"\x00" * 64] * rows,
            "unread": ["x"] * rows,
        }
    )


def broken(rows: int) -> pd.DataFrame:
    frame = orders(rows)
    frame.loc[3, "order_id"] = None
    frame.loc[5, "order_id"] = "o6"  # a duplicate
    frame.loc[15, "item_id"] = 8  # user 1 and item 8 twice (rows 8 and 15)
    frame.loc[[10, 11], "price"] = [0.0, 250.0]
    frame.loc[12, "note"] = "far too long"
    return frame


def failures(outcome) -> dict[str, int | None]:
    return {f"{f['expectation_type']}:{f['column']}": f["unexpected_count"] for f in outcome.failed}


def test_suite_columns_are_what_its_expectations_read():
    assert SUITE.columns == ("order_id", "user_id", "item_id", "price", "note")
    whole_table = Suite("columns", [gxe.ExpectTableColumnsToMatchSet(column_set=["a"])])
    assert whole_table.columns is None


def test_pandas_reads_only_the_suites_columns_and_a_missing_one_fails_the_suite(tmp_path):
    table = write_table(tmp_path / "orders.parquet", orders(20).drop(columns=["note"]))

    frame, engine = validation_frame(table, SUITE, engine="auto", spark=None)
    outcome = DataValidator().validate(frame, SUITE, asset_name="orders")

    assert engine == "pandas"
    assert list(frame.columns) == ["order_id", "user_id", "item_id", "price"]
    assert outcome.success is False
    (missing,) = outcome.failed
    assert missing["column"] == "note" and missing.get("exception")


def test_without_named_columns_pandas_leaves_binary_columns_unread(tmp_path):
    table = write_table(tmp_path / "orders.parquet", orders(5))
    whole_table = Suite(
        "columns", [gxe.ExpectTableColumnsToMatchSet(column_set=["order_id"], exact_match=False)]
    )

    frame, _ = validation_frame(table, whole_table, engine="pandas", spark=None)

    assert "image" not in frame.columns and "unread" in frame.columns


@pytest.mark.slow
def test_auto_switches_to_spark_above_the_limit_with_the_same_verdict(tmp_path, spark):
    spark_resource = SparkResource(master=spark.sparkContext.master, local_dir=str(tmp_path))  # reuses it
    table = write_table(tmp_path / "orders.parquet", broken(40))
    validator = DataValidator()
    verdicts = {}
    for limit in (40, 39):
        frame, engine = validation_frame(
            table, SUITE, engine="auto", spark=spark_resource, pandas_max_rows=limit
        )
        verdicts[engine] = failures(validator.validate(frame, SUITE, asset_name="orders"))

    assert set(verdicts) == {"pandas", "spark"}
    assert verdicts["pandas"] == verdicts["spark"]
    assert verdicts["pandas"] == {
        "expect_column_values_to_not_be_null:order_id": 1,
        "expect_column_values_to_be_unique:order_id": 2,
        "expect_compound_columns_to_be_unique:None": 2,
        "expect_column_values_to_be_between:price": 2,
        "expect_column_value_lengths_to_be_between:note": 1,
    }
    clean = write_table(tmp_path / "clean.parquet", orders(40))
    for limit in (40, 39):
        frame, _ = validation_frame(clean, SUITE, engine="auto", spark=spark_resource, pandas_max_rows=limit)
        assert validator.validate(frame, SUITE, asset_name="orders").success is True


def test_an_unknown_engine_is_refused(tmp_path):
    table = write_table(tmp_path / "orders.parquet", orders(3))
    with pytest.raises(ValueError, match="engine must be one of auto, spark, pandas"):
        validation_frame(table, SUITE, engine="polars", spark=None)


def test_a_suite_of_row_counts_alone_still_sees_every_row(tmp_path):
    table = write_table(tmp_path / "orders.parquet", orders(7))
    counted = Suite("rows", [gxe.ExpectTableRowCountToBeBetween(min_value=7, max_value=7)])

    frame, _ = validation_frame(table, counted, engine="pandas", spark=None)

    assert counted.columns == ()
    assert len(frame) == 7
    assert DataValidator().validate(frame, counted, asset_name="orders").success is True
