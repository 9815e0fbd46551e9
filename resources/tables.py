"""Tables and model directories passed between assets as files rather than in-memory objects."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame


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
    """Write a Spark DataFrame as one Parquet file, streaming its parts row group by row group."""
    parts_dir = dest.with_name(dest.name + ".parts")
    frame.write.mode("overwrite").parquet(str(parts_dir))
    parts = sorted(parts_dir.glob("part-*.parquet"))
    schema = pq.read_schema(parts[0]) if parts else frame.toArrow().schema
    rows = 0
    # Microsecond timestamps: Spark cannot read the nanosecond ones pyarrow would write.
    with pq.ParquetWriter(dest, schema, coerce_timestamps="us", allow_truncated_timestamps=True) as writer:
        for part in parts:
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                rows += table.num_rows
                writer.write_table(table.cast(schema))
    shutil.rmtree(parts_dir)
    return TableFile(path=dest, rows=rows)
