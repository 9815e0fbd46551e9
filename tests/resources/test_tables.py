"""Spark output copied into one Parquet file: every row kept, in row groups of bounded size."""

import datetime as dt

import pyarrow.parquet as pq

from resources import tables


def test_spark_output_is_copied_whole_in_row_groups_of_at_most_batch_rows(spark, tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "BATCH_ROWS", 100)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [(i, f"user-{i % 37}", start + dt.timedelta(seconds=i)) for i in range(1_000)]
    frame = spark.createDataFrame(rows, "id long, user string, at timestamp").coalesce(1)

    copied = tables.spark_to_table_file(frame, tmp_path / "copy.parquet")

    assert copied.rows == 1_000
    metadata = pq.ParquetFile(copied.path).metadata
    # One Spark part of 1,000 rows: copied row group by row group, that was one group of 1,000.
    assert metadata.num_row_groups == 10
    assert max(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)) <= 100
    table = pq.read_table(copied.path).sort_by("id")
    assert table.column("id").to_pylist() == list(range(1_000))
    assert table.column("user").to_pylist() == [f"user-{i % 37}" for i in range(1_000)]
    assert spark.read.parquet(str(copied.path)).count() == 1_000  # Spark reads the copy back
    assert not (tmp_path / "copy.parquet.parts").exists()
