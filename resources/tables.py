"""Tables and model directories passed between assets as files rather than in-memory objects."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Rows per batch wherever a table is streamed: bounded memory whatever the window's size.
BATCH_ROWS = 262_144
# Row groups of the Parquet parts Spark writes: Spark's default (128 MiB) is decoded whole when read.
SPARK_ROW_GROUP_BYTES = 16 * 2**20


@dataclass(frozen=True)
class TableFile:
    """A Parquet table as a plaintext file in the run's private scratch folder.

    Assets that hand tables to Spark, or stream them, take and return this
    instead of a DataFrame so no stage has to hold a whole table in memory.
    """

    path: Path
    rows: int


@dataclass(frozen=True)
class ModelDir:
    """A model directory (safetensors weights + JSON config, later a signature) in scratch.

    `details` (JSON-serialisable) is recorded in the ledger entry beside the files.
    """

    path: Path
    details: dict = field(default_factory=dict)


def spark_to_table_file(frame: DataFrame, dest: Path) -> TableFile:
    """Write a Spark DataFrame as one Parquet file, streaming its parts in batches of BATCH_ROWS rows."""
    parts_dir = dest.with_name(dest.name + ".parts")
    frame.write.mode("overwrite").option("parquet.block.size", SPARK_ROW_GROUP_BYTES).parquet(str(parts_dir))
    parts = sorted(parts_dir.glob("part-*.parquet"))
    schema = pq.read_schema(parts[0]) if parts else frame.toArrow().schema
    rows = 0
    # Microsecond timestamps: Spark cannot read the nanosecond ones pyarrow would write.
    with pq.ParquetWriter(dest, schema, coerce_timestamps="us", allow_truncated_timestamps=True) as writer:
        for part in parts:
            for batch in parquet_batches(part):
                rows += batch.num_rows
                writer.write_batch(batch.cast(schema))
    shutil.rmtree(parts_dir)
    return TableFile(path=dest, rows=rows)


def parquet_batches(
    path: Path,
    columns: list[str] | None = None,
    batch_size: int | None = None,
    dictionary: Sequence[str] = (),
) -> Iterator[pa.RecordBatch]:
    """`columns` (default: all) of the Parquet table at `path`, in record batches of at most
    `batch_size` rows (default: BATCH_ROWS), read one row group at a time; the `dictionary`
    columns come dictionary-encoded.

    pyarrow's reader over the whole file holds more decoded data the larger the file is: reading a
    Spark part of 1M and 3M rows that way peaked at 143 and 280 MiB of Arrow memory, and at 82 MiB
    for both one row group (of 16 MiB) at a time.
    """
    parquet = pq.ParquetFile(path, read_dictionary=list(dictionary) or None)
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(
            batch_size=batch_size or BATCH_ROWS, row_groups=[group], columns=columns
        )
