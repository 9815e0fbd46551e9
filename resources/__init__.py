"""The capabilities assets use: integrity, keys, storage, IO, validation, tracking, signing."""

import warnings

# PySpark 4.3 warns on import that pandas 3 is not "fully supported"; the
# pipeline hands tables to Spark as Parquet files, never as pandas frames.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
