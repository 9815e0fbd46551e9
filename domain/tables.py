"""Reading stored tables in bounded batches, so that memory stays flat as a window grows."""

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from resources.tables import parquet_batches


def table_batches(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    """`columns` of the Parquet table at `path`, as pandas frames of at most BATCH_ROWS rows each."""
    for batch in parquet_batches(path, columns):
        yield batch.to_pandas()
