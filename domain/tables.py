"""Reading stored tables in bounded batches, so that memory stays flat as a window grows."""

from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from resources.tables import parquet_batches


def table_batches(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    """`columns` of the Parquet table at `path`, as pandas frames of at most BATCH_ROWS rows each."""
    for batch in parquet_batches(path, columns):
        yield batch.to_pandas()


def read_table(path: Path, columns: list[str], categorical: Sequence[str] = ()) -> pd.DataFrame:
    """`columns` of the Parquet table at `path` as one frame, read one row group at a time.

    `categorical` columns (ids that repeat down the table) come as pandas
    categoricals: reading a reference window's interactions this way held
    a third of the memory that reading every column as strings did.
    """
    batches = list(parquet_batches(path, columns, dictionary=list(categorical)))
    if not batches:
        return pd.read_parquet(path, columns=columns)
    return pa.Table.from_batches(batches).to_pandas()
