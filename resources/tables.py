"""Tables and model directories passed between assets as files rather than in-memory objects."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame

# Rows per batch wherever a table is streamed: bounded memory whatever the window's size.
BATCH_ROWS = 262_144


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
    frame.write.mode("overwrite").parquet(str(parts_dir))
    parts = sorted(parts_dir.glob("part-*.parquet"))
    schema = pq.read_schema(parts[0]) if parts else frame.toArrow().schema
    rows = 0
    # Microsecond timestamps: Spark cannot read the nanosecond ones pyarrow would write.
    with pq.ParquetWriter(dest, schema, coerce_timestamps="us", allow_truncated_timestamps=True) as writer:
        for part in parts:
            # Bounded batches, not Spark's row groups: those grow with the window up to its block size.
            for batch in pq.ParquetFile(part).iter_batches(batch_size=BATCH_ROWS):
                rows += batch.num_rows
                writer.write_batch(batch.cast(schema))
    shutil.rmtree(parts_dir)
    return TableFile(path=dest, rows=rows)
