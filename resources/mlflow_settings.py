"""Process-wide MLflow settings, applied when this module is imported: before `import mlflow`.

Every module of ours that imports `mlflow` imports this first (above an
``# isort: split``), because some settings are read only at `import mlflow`:

* no telemetry, no network: `MLFLOW_DISABLE_TELEMETRY` is decided at import;
* no tqdm progress bars on stderr for artifact downloads (they flood Dagster
  logs): `MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`.

An operator's explicit environment setting wins (`setdefault`).

MLflow's SQL store also logs "Creating initial MLflow database tables..." and
alembic's migration steps at INFO for every new database, and SQLAlchemy warns
about a deprecated loader MLflow still uses: quiet, but only those.
"""

import logging
import os
import warnings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

for _name in ("mlflow.store.db.utils", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")
