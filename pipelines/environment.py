"""Resources for a deployment, chosen by configuration rather than code edits.

Embedded defaults run on a laptop: local keyset, local encrypted store, a
SQLite ledger, Spark `local[*]`, a DVC remote in a folder. Production sets
environment variables instead of editing code:

| variable | what it selects | example |
|---|---|---|
| `PIPELINE_HOME` | the runtime folder for local state | `/var/lib/pipeline` |
| `PIPELINE_STORE_URL` | artifact store root (any fsspec URL) | `s3://bucket/pipeline` |
| `PIPELINE_LEDGER_URL` | ledger database (SQLAlchemy URL) | `postgresql+psycopg://...` |
| `PIPELINE_DVC_REMOTE` | DVC remote | `s3://bucket/dvc` |
| `PIPELINE_SPARK_MASTER` | Spark master | `spark://spark-master:7077` |
| `PIPELINE_MLFLOW_URI` | MLflow tracking and registry | `http://mlflow:5000` |
"""

from __future__ import annotations

import os
from typing import Any

from resources.code_approval import CodeApprovals
from resources.integrity import IntegrityLedger
from resources.io_managers import JsonIOManager, ModelDirIOManager, ParquetIOManager
from resources.keys import LocalKeyProvider
from resources.releases import ModelReleases
from resources.retraining_approval import RetrainingApprovals
from resources.scratch import ScratchSpace
from resources.signing import ReleaseSigner
from resources.sources import SourceRegistry
from resources.spark import SparkResource
from resources.store import ArtifactStore
from resources.tracking import ExperimentTracking
from resources.validation import DataValidator
from resources.versioning import DataVersioning


def _env(name: str) -> str:
    return os.environ.get(name, "")


def resources_for(example: str) -> dict[str, Any]:
    """Every resource an example's assets use, keyed as the assets ask for them."""
    keys = LocalKeyProvider()
    store = ArtifactStore(key_provider=keys, root=_env("PIPELINE_STORE_URL"))
    ledger = IntegrityLedger(key_provider=keys, url=_env("PIPELINE_LEDGER_URL"))
    scratch = ScratchSpace()
    versioning = DataVersioning(
        **({"remote_url": _env("PIPELINE_DVC_REMOTE")} if _env("PIPELINE_DVC_REMOTE") else {})
    )
    spark = SparkResource(
        **({"master": _env("PIPELINE_SPARK_MASTER")} if _env("PIPELINE_SPARK_MASTER") else {})
    )
    return {
        "key_provider": keys,
        "store": store,
        "ledger": ledger,
        "scratch": scratch,
        "versioning": versioning,
        "spark": spark,
        "validator": DataValidator(),
        "sources": SourceRegistry(name=example),
        "approvals": CodeApprovals(key_provider=keys),
        "retraining_approvals": RetrainingApprovals(key_provider=keys),
        "io_manager": ParquetIOManager(store=store, ledger=ledger, scratch=scratch, versioning=versioning),
        "json_io_manager": JsonIOManager(store=store, ledger=ledger),
        "model_io_manager": ModelDirIOManager(store=store, ledger=ledger, scratch=scratch),
        "tracking": ExperimentTracking(tracking_uri=_env("PIPELINE_MLFLOW_URI")),
        # Only the promotion step asks for the signer: it alone holds the release key.
        "signer": ReleaseSigner(key_provider=keys),
        "releases": ModelReleases(),
    }
