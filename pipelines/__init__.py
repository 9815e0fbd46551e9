"""Dagster code locations, one per worked example."""

import warnings

# PySpark 4.3 warns on import that pandas 3 is not "fully supported"; the
# pipeline passes tables to Spark as Parquet files, never as pandas frames.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
