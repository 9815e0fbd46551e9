"""The pipeline's datasets as MLflow sees them: metadata only, with our full digest.

MLflow limits dataset digests to 36 characters (`MAX_DATASET_DIGEST_SIZE`,
validated client side; the `datasets.digest` column is VARCHAR(36) and is part
of the table's primary key). Our digests are longer (`blake3:` + 64 hex = 71),
so MLflow's own digest field holds a 36-character prefix and the FULL digest
is kept in the dataset's source JSON and its profile JSON (and, per run, in
the input tag `resources.tracking.DIGEST_TAG`).
"""

from __future__ import annotations

import json
from typing import Any

import resources.mlflow_settings  # noqa: F401 - settings read at `import mlflow`, so first

# isort: split

from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.entities import Dataset as DatasetEntity

__all__ = ["MAX_MLFLOW_DIGEST", "PipelineDataset", "PipelineDatasetSource"]

MAX_MLFLOW_DIGEST = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE


class PipelineDatasetSource(DatasetSource):
    """Where a dataset lives in the pipeline's store, plus its full digest."""

    def __init__(self, uri: str, digest: str):
        self.uri = uri
        self.digest = digest

    @staticmethod
    def _get_source_type() -> str:
        return "pipeline"

    def load(self, **kwargs: Any) -> Any:
        raise NotImplementedError("load pipeline datasets through the artifact store, which verifies them")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> PipelineDatasetSource:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "digest": self.digest}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> PipelineDatasetSource:
        return cls(uri=source_dict["uri"], digest=source_dict["digest"])


class PipelineDataset(Dataset):
    """An `mlflow.data` dataset that carries only metadata: our digest, source and row count.

    The data itself stays in the (encrypted, ledgered) artifact store; MLflow
    records which version of it trained the model. `digest` is MLflow's
    36-character key; `full_digest` is ours.
    """

    def __init__(self, name: str, digest: str, source: str, rows: int):
        self.full_digest = digest
        self.rows = int(rows)
        super().__init__(
            source=PipelineDatasetSource(source, digest), name=name, digest=digest[:MAX_MLFLOW_DIGEST]
        )

    def _compute_digest(self) -> str:  # never called: the digest is always given
        return self.full_digest[:MAX_MLFLOW_DIGEST]

    @property
    def profile(self) -> dict[str, Any]:
        return {"digest": self.full_digest, "num_rows": self.rows}

    @property
    def schema(self) -> None:
        return None

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self.profile)
        return config

    def to_entity(self) -> DatasetEntity:
        config = self.to_dict()
        return DatasetEntity(
            name=config["name"],
            digest=config["digest"],
            source_type=config["source_type"],
            source=config["source"],
            schema=None,
            profile=config["profile"],
        )
