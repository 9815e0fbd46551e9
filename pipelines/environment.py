"""Resources for a deployment, chosen by configuration rather than code edits.

Every resource gets its place from the runtime home it is given: keyset,
encrypted store, SQLite ledger, MLflow store, Spark scratch, DVC repository
and remote, landing zone. Production sets environment variables instead of
editing code (the code location reads them once, when it loads):

| variable | what it selects | example |
|---|---|---|
| `PIPELINE_HOME` | the runtime folder for local state | `/var/lib/pipeline` |
| `PIPELINE_STORE_URL` | artifact store root (any fsspec URL) | `s3://bucket/pipeline` |
| `PIPELINE_LEDGER_URL` | ledger database (SQLAlchemy URL) | `postgresql+psycopg://...` |
| `PIPELINE_DVC_REMOTE` | DVC remote | `s3://bucket/dvc` |
| `PIPELINE_SPARK_MASTER` | Spark master | `spark://spark-master:7077` |
| `PIPELINE_MLFLOW_URI` | MLflow tracking and registry | `http://mlflow:5000` |
| `PIPELINE_HEALTHCARE_SETTINGS` | diagnostic model settings and thresholds | `/etc/pipeline/dx.json` |
| `PIPELINE_KAFKA_BOOTSTRAP` | e-commerce live window from Kafka (`PIPELINE_KAFKA_*`) | `broker-1:9093` |
| `PIPELINE_KMS_KEY_URI` | KMS key wrapping every key | `aws-kms://arn:aws:kms:<region>:<account>:key/<id>` |

No resource here is given an approval key: the code-approval and retraining
reviewer keys are held by people (`PIPELINE_CODE_APPROVER_KEY`,
`PIPELINE_RETRAINING_APPROVER_KEY`, read by `make approve-code` and
`make approve-retraining` only, never by a code location).
"""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar

from resources.code_approval import CodeApprovals
from resources.integrity import IntegrityLedger
from resources.io_managers import JsonIOManager, ModelDirIOManager, ParquetIOManager
from resources.kafka_intake import KafkaIntake
from resources.kms_keys import key_provider_from_environment
from resources.release_folder import ReleaseFolder
from resources.releases import ReleaseSigner
from resources.retraining_approval import RetrainingApprovals
from resources.runtime import RuntimeHome
from resources.scratch import ScratchSpace
from resources.sources import SourceRegistry
from resources.spark import SparkResource
from resources.store import ArtifactStore
from resources.tracking import ExperimentTracking
from resources.trust_store import TrustStore
from resources.validation import DataValidator
from resources.versioning import DataVersioning


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _kafka(example: str) -> KafkaIntake | None:
    """The Kafka cluster the e-commerce sources publish their live window to, if one is configured."""
    bootstrap = os.environ.get("PIPELINE_KAFKA_BOOTSTRAP")
    if example != "ecommerce" or not bootstrap:
        return None
    return KafkaIntake(
        bootstrap_servers=bootstrap,
        group_id=_env("PIPELINE_KAFKA_GROUP", "secure-ai-pipeline-collection"),
        security_protocol=_env("PIPELINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        sasl_mechanism=_env("PIPELINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        sasl_username=_env("PIPELINE_KAFKA_USERNAME", ""),
        sasl_password=EnvVar("PIPELINE_KAFKA_PASSWORD") if os.environ.get("PIPELINE_KAFKA_PASSWORD") else "",
        ssl_ca_location=_env("PIPELINE_KAFKA_CA", ""),
    )


def resources_for(example: str, home: RuntimeHome, trust: TrustStore) -> dict[str, Any]:
    """Every resource an example's assets use, keyed as the assets ask for them.

    Local state is placed under `home`; what decides trust is read from (and witnessed in) `trust`,
    the operator's store, which lives elsewhere.
    """
    keys = key_provider_from_environment(str(home.path("keys")))
    store = ArtifactStore(key_provider=keys, root=_env("PIPELINE_STORE_URL", str(home.path("store"))))
    ledger_file = home.path("ledger") / "ledger.sqlite"
    ledger = IntegrityLedger(
        key_provider=keys,
        url=_env("PIPELINE_LEDGER_URL", f"sqlite:///{ledger_file}"),
        trust_store=str(trust.root),
    )
    scratch = ScratchSpace(root=str(home.path("scratch")))
    versioning = DataVersioning(
        repo_dir=str(home.path("dvc")), remote_url=_env("PIPELINE_DVC_REMOTE", str(home.path("dvc-remote")))
    )
    spark = SparkResource(master=_env("PIPELINE_SPARK_MASTER", "local[*]"), local_dir=str(home.path("spark")))
    mlflow_db = home.path("mlflow") / "mlflow.db"
    return {
        "key_provider": keys,
        "store": store,
        "ledger": ledger,
        "scratch": scratch,
        "versioning": versioning,
        "spark": spark,
        "validator": DataValidator(),
        "sources": SourceRegistry(
            name=example,
            path=str(home.path("config") / f"{example}_sources.json"),
            landing=str(home.path("landing", example)),
            kafka=_kafka(example),
        ),
        # Verify-only: approvals count when signed by an approver key the operator listed in `trust`.
        "approvals": CodeApprovals(
            manifest_path=str(home.path("config") / "approved_code.json"), trust_store=str(trust.root)
        ),
        "retraining_approvals": RetrainingApprovals(
            folder=str(home.path("approvals")), trust_store=str(trust.root)
        ),
        "io_manager": ParquetIOManager(store=store, ledger=ledger, scratch=scratch, versioning=versioning),
        "json_io_manager": JsonIOManager(store=store, ledger=ledger),
        "model_io_manager": ModelDirIOManager(store=store, ledger=ledger, scratch=scratch),
        "tracking": ExperimentTracking(tracking_uri=_env("PIPELINE_MLFLOW_URI", f"sqlite:///{mlflow_db}")),
        # Only the promotion step asks for the signer: it alone holds the release key.
        "signer": ReleaseSigner(key_provider=keys),
        "releases": ReleaseFolder(home.path("releases")),  # read by servers too: a plain object
        "trust_store": trust,
    }
