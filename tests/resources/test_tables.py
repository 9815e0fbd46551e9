"""Spark output copied into one Parquet file, and tables read back, in bounded row groups and batches."""

import datetime as dt

import pyarrow as pa
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


def test_spark_writes_its_parts_in_row_groups_of_bounded_bytes(spark, tmp_path, monkeypatch):
    """Spark's row groups are decoded whole when read: their size is held to SPARK_ROW_GROUP_BYTES."""
    part_groups = []
    read = tables.parquet_batches

    def counting(path, *args, **kwargs):
        part_groups.append(pq.ParquetFile(path).metadata.num_row_groups)
        return read(path, *args, **kwargs)

    monkeypatch.setattr(tables, "parquet_batches", counting)
    frame = spark.range(20_000).selectExpr("id", "sha2(cast(id as string), 256) as digest").coalesce(1)

    tables.spark_to_table_file(frame, tmp_path / "default.parquet")
    monkeypatch.setattr(tables, "SPARK_ROW_GROUP_BYTES", 64 * 1024)
    copied = tables.spark_to_table_file(frame, tmp_path / "small.parquet")

    assert part_groups[0] == 1  # 20,000 rows (~1.5 MB) fit one group of the default 16 MiB
    assert part_groups[1] >= 10  # the same part in groups of ~64 KiB
    assert copied.rows == 20_000


def test_a_table_is_read_one_row_group_at_a_time(tmp_path):
    """No batch spans two row groups (a reader over the whole file holds more of it as it grows)."""
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"n": list(range(750)), "other": ["x"] * 750}), path, row_group_size=250)

    batches = list(tables.parquet_batches(path, ["n"], batch_size=100))

    assert [b.num_rows for b in batches] == [100, 100, 50] * 3
    assert [b.schema.names for b in batches] == [["n"]] * 9
    assert [n for b in batches for n in b.column("n").to_pylist()] == list(range(750))
