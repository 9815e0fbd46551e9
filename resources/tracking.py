"""Experiment tracking and the model registry (MLflow), as a Dagster resource.

Why our own resource and not `dagster-mlflow`: that package is an old-style
resource that configures MLflow through its *global* (fluent) state. Here
every call goes through an `MlflowClient` bound to this resource's URIs, so
several pipelines in one process (tests, a multi-location dev server) can
each use their own store without a global `mlflow.set_tracking_uri` leaking
from one into the other.

Embedded store (what the code location passes for a runtime home):

    tracking_uri   sqlite:///<runtime home>/mlflow/mlflow.db
    registry_uri   the tracking URI (model registry + aliases in the same DB)
    artifacts      beside the SQLite file: <runtime home>/mlflow/artifacts/<run id>/artifacts/...

Production: point `tracking_uri` at an MLflow server (`https://mlflow.internal`)
or a database (`postgresql://...`); the experiment's artifact location is then
the server's (or `artifact_location`, e.g. `s3://bucket/mlflow`). No code edit.

MLflow facts this module relies on (checked against mlflow 3.17):

* Dataset digests are limited to 36 characters (`MAX_DATASET_DIGEST_SIZE`,
  validated client side; the `datasets.digest` column is VARCHAR(36) and is
  part of the table's primary key). Our digests are longer
  (`blake3:` + 64 hex = 71), so MLflow's own digest field holds a 36-character
  prefix and the FULL digest is kept in three places: the dataset input's tag
  `pipeline.digest` (per run, authoritative), the dataset's source JSON and
  its profile JSON. `run_inputs()` returns the full digest.
* MLflow 3's own default backend is SQLite (`sqlite:///mlflow.db` in the
  current directory); the file store (`./mlruns`) is legacy and lacks newer
  APIs. SQLite holds runs, the model registry and aliases, offline. With a
  `sqlite://` URI MLflow puts artifacts in `./mlruns` of the current
  directory unless told otherwise, so our experiment is always created with
  an explicit artifact location, and the `Default` experiment of a store we
  create points into the runtime home too.
* A model version's source is stored as given; a `runs:/` source is resolved
  later through the *global* tracking URI. We register the run's concrete
  artifact URI (`file:///...` or `s3://...`) instead, so downloads need no
  global state.
* A missing alias raises INVALID_PARAMETER_VALUE (not RESOURCE_DOES_NOT_EXIST)
  in the SQL store; `get_alias` reads the registered model's alias map
  instead of parsing errors.
* Telemetry is decided when `mlflow` is imported: `MLFLOW_DISABLE_TELEMETRY`
  is set by `resources.mlflow_settings`, imported before `mlflow` (an
  operator's explicit setting wins).

Nothing is pickled: models are logged as plain artifact directories (the
safetensors weights, a JSON config, the signature), never with an MLflow model
flavour, and `log_artifacts` refuses files that look like pickles, or zip
archives such as `torch.save` checkpoints (`resources.artifact_formats`).

The pieces: `resources.mlflow_datasets` (datasets as MLflow records them),
`resources.mlflow_store` (the embedded SQLite store), this module (runs, the
registry and the resource).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import resources.mlflow_settings  # noqa: F401 - settings read at `import mlflow`, so first

# isort: split

import dagster as dg
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from resources.artifact_formats import pickle_evidence
from resources.endpoints import require_reachable
from resources.mlflow_datasets import PipelineDataset
from resources.mlflow_store import is_sqlite_uri, prepare_sqlite_store, sqlite_path

__all__ = [
    "DIGEST_TAG",
    "ExperimentTracking",
    "PickledArtifactError",
    "TrackedRun",
    "TrackingError",
]

logger = logging.getLogger(__name__)

# Input tags and run tags this module writes.
DIGEST_TAG = "pipeline.digest"
ROWS_TAG = "pipeline.rows"
CONTEXT_TAG = "mlflow.data.context"  # MLflow's own key (what mlflow.log_input writes)
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # shown by the MLflow UI
CODE_VERSION_TAG = "pipeline.code_version"
PYTHON_VERSION_TAG = "pipeline.python_version"
TORCH_VERSION_TAG = "pipeline.torch_version"

MAX_INPUT_TAG_VALUE = 500  # mlflow.utils.validation.MAX_INPUT_TAG_VALUE_SIZE
_BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch


class TrackingError(RuntimeError):
    """The tracking store refused or could not complete an operation."""


class PickledArtifactError(TrackingError):
    """An artifact directory contains a pickle; it is never uploaded."""


# -- pickle guard --------------------------------------------------------------------


def _refuse_pickles(local_dir: Path) -> None:
    """Refuse the upload if any file is (or holds) a pickle, by `resources.artifact_formats.pickle_evidence`.

    That covers pickle suffixes, pickle protocol headers, picklescan's global
    imports and zip archives, i.e. `torch.save` checkpoints whatever their name.
    """
    paths = [local_dir] if local_dir.is_file() else sorted(p for p in local_dir.rglob("*") if p.is_file())
    bad = [f"{p} ({why})" for p in paths if (why := pickle_evidence(p))]
    if bad:
        raise PickledArtifactError(f"refusing to log pickled artifact(s): {', '.join(bad[:5])}")


# -- runs ----------------------------------------------------------------------------


class TrackedRun:
    """One MLflow run, written through a client bound to one store."""

    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: str):
        self._client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (immutable in MLflow: logging a key again with another value fails)."""
        items = [Param(str(k), str(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self._client.log_batch(self.run_id, params=items[i : i + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), _BATCH):
            self._client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for i in range(0, len(items), _BATCH):
            self._client.log_batch(self.run_id, tags=items[i : i + _BATCH])

    def log_dataset(self, name: str, digest: str, source: str, rows: int, context: str = "training") -> None:
        """Record an input dataset (what `mlflow.log_input` does, on this run's store).

        The full `digest` is kept as the input tag `pipeline.digest` and in the
        dataset's source and profile; MLflow's own digest field is a prefix.
        """
        if not digest or len(digest) > MAX_INPUT_TAG_VALUE:
            raise TrackingError(f"dataset digest must be 1..{MAX_INPUT_TAG_VALUE} characters")
        dataset = PipelineDataset(name=name, digest=digest, source=source, rows=rows)
        tags = [
            InputTag(CONTEXT_TAG, context),
            InputTag(DIGEST_TAG, digest),
            InputTag(ROWS_TAG, str(int(rows))),
        ]
        self._client.log_inputs(self.run_id, datasets=[DatasetInput(dataset.to_entity(), tags)])

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload a file or directory as plain artifacts; refuses anything that looks pickled."""
        path = Path(local_dir)
        if not path.exists():
            raise TrackingError(f"no such artifact path: {path}")
        _refuse_pickles(path)
        if path.is_file():
            self._client.log_artifact(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifacts(self.run_id, str(path), artifact_path)


# -- the resource --------------------------------------------------------------------


def _error_code(exc: MlflowException) -> int:
    return ErrorCode.Value(exc.error_code) if isinstance(exc.error_code, str) else exc.error_code


class ExperimentTracking(dg.ConfigurableResource):
    """MLflow runs, dataset inputs and the model registry, through a bound `MlflowClient`.

    `tracking_uri` is a SQLite file for the embedded store (artifacts beside
    it) or an MLflow server or database URL.
    """

    tracking_uri: str
    registry_uri: str = ""
    artifact_location: str = ""
    experiment: str = "secure-ai-pipeline"

    # -- binding -------------------------------------------------------------------

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri

    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri()

    def resolved_artifact_location(self) -> str | None:
        """Where a newly created experiment keeps its artifacts (None: the server decides)."""
        if self.artifact_location:
            return self.artifact_location
        if is_sqlite_uri(self.tracking_uri):
            folder = sqlite_path(self.tracking_uri).parent / "artifacts"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            return folder.as_uri()
        return None

    def client(self) -> MlflowClient:
        """A client bound to this resource's store (never to MLflow's global URIs)."""
        tracking = self.resolved_tracking_uri()
        registry = self.registry_uri or tracking
        for uri in dict.fromkeys((tracking, registry)):
            if is_sqlite_uri(uri):
                root = self.resolved_artifact_location() if uri == tracking else None
                prepare_sqlite_store(uri, root or (sqlite_path(uri).parent / "artifacts").as_uri())
            elif uri.startswith(("http://", "https://")):
                require_reachable(uri, "PIPELINE_MLFLOW_URI")
        return MlflowClient(tracking_uri=tracking, registry_uri=registry)

    def experiment_id(self, client: MlflowClient | None = None) -> str:
        """The experiment's id, created (with an explicit artifact location) on first use."""
        client = client or self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(
                self.experiment, artifact_location=self.resolved_artifact_location()
            )
        except MlflowException as exc:  # created concurrently by another process
            if _error_code(exc) != RESOURCE_ALREADY_EXISTS:
                raise
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    # -- runs ----------------------------------------------------------------------

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        *,
        tags: Mapping[str, Any] | None = None,
        code_version: str | None = None,
        git_revision: str | None = None,
        torch_version: str | None = None,
    ) -> Iterator[TrackedRun]:
        """Open a run; it ends FINISHED, or FAILED if the block raises.

        `code_version`, `git_revision` and `torch_version` are recorded as tags
        (the git revision under MLflow's `mlflow.source.git.commit`, which its
        UI shows); the Python version is recorded always.
        """
        client = self.client()
        experiment_id = self.experiment_id(client)
        run_tags: dict[str, str] = {PYTHON_VERSION_TAG: platform.python_version()}
        if code_version:
            run_tags[CODE_VERSION_TAG] = code_version
        if git_revision:
            run_tags[GIT_COMMIT_TAG] = git_revision
        if torch_version:
            run_tags[TORCH_VERSION_TAG] = torch_version
        run_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        created = client.create_run(experiment_id, tags=run_tags, run_name=name)
        tracked = TrackedRun(client, created.info.run_id, created.info.artifact_uri)
        try:
            yield tracked
        except BaseException:
            try:
                client.set_terminated(tracked.run_id, status="FAILED")
            except Exception:  # keep the original error; the run stays RUNNING
                logger.warning("could not mark MLflow run %s as FAILED", tracked.run_id, exc_info=True)
            raise
        client.set_terminated(tracked.run_id, status="FINISHED")

    def attach(self, run_id: str) -> TrackedRun:
        """A handle on an existing run (promotion adds the signed release to the run that trained it)."""
        client = self.client()
        return TrackedRun(client, run_id, client.get_run(run_id).info.artifact_uri)

    def run_inputs(self, run_id: str) -> list[dict[str, Any]]:
        """The datasets a run logged: name, full digest, source, context, rows."""
        run = self.client().get_run(run_id)
        inputs = run.inputs.dataset_inputs if run.inputs else []
        out = []
        for item in inputs:
            tags = {t.key: t.value for t in item.tags}
            dataset = item.dataset
            source = _json_or_empty(dataset.source)
            profile = _json_or_empty(dataset.profile)
            rows = tags.get(ROWS_TAG, profile.get("num_rows"))
            out.append(
                {
                    "name": dataset.name,
                    "digest": tags.get(DIGEST_TAG) or profile.get("digest") or dataset.digest,
                    "source": source.get("uri", dataset.source),
                    "context": tags.get(CONTEXT_TAG),
                    "rows": int(rows) if rows is not None else None,
                }
            )
        return out

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client().get_run(run_id).data.tags)

    # -- registry ------------------------------------------------------------------

    def register(
        self, run_id: str, artifact_path: str, name: str, *, tags: Mapping[str, Any] | None = None
    ) -> int:
        """Register a run's plain artifact directory as a new version of `name`; returns its number.

        No MLflow flavour is involved (nothing is pickled, nothing is
        imported); the version's source is the run's concrete artifact URI.
        """
        client = self.client()
        if not client.list_artifacts(run_id, artifact_path):
            raise TrackingError(f"run {run_id} has no artifacts under {artifact_path!r}")
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path.strip('/')}"
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if _error_code(exc) != RESOURCE_ALREADY_EXISTS:
                raise
        version = client.create_model_version(
            name,
            source,
            run_id=run_id,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            await_creation_for=0,
        )
        return int(version.version)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client().set_registered_model_alias(name, alias, str(version))

    def get_alias(self, name: str, alias: str) -> int | None:
        """The version an alias points at, or None (unknown alias or model)."""
        try:
            model = self.client().get_registered_model(name)
        except MlflowException as exc:
            if _error_code(exc) == RESOURCE_DOES_NOT_EXIST:
                return None
            raise
        version = model.aliases.get(alias)
        return int(version) if version is not None else None

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return dict(self.client().get_model_version(name, str(version)).tags)

    def set_version_tags(self, name: str, version: int, tags: Mapping[str, Any]) -> None:
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), str(key), str(value))

    def version_run_id(self, name: str, version: int) -> str | None:
        return self.client().get_model_version(name, str(version)).run_id

    def download_version(self, name: str, version: int, dst: str | os.PathLike[str]) -> Path:
        """Copy a registered version's artifact directory to `dst` (verify it before trusting it)."""
        client = self.client()
        uri = client.get_model_version_download_uri(name, str(version))
        local = download_artifacts(
            artifact_uri=uri,
            dst_path=str(dst),
            tracking_uri=self.resolved_tracking_uri(),
            registry_uri=self.resolved_registry_uri(),
        )
        return Path(local)

    def store_dir(self) -> Path | None:
        """The local folder of an embedded (SQLite) store, for audits and tests; None otherwise."""
        uri = self.resolved_tracking_uri()
        return sqlite_path(uri).parent if is_sqlite_uri(uri) else None


def _json_or_empty(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
