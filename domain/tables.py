"""Reading stored tables in bounded batches, so that memory stays flat as a window grows."""

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from resources.tables import BATCH_ROWS


def table_batches(path: Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    """`columns` of the Parquet table at `path`, as pandas frames of at most BATCH_ROWS rows each."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
        yield batch.to_pandas()
