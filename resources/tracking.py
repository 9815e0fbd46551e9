"""Experiment tracking and the model registry (MLflow), as a Dagster resource.

Why our own resource and not `dagster-mlflow`: that package is an old-style
resource that configures MLflow through its *global* (fluent) state. Here
every call goes through an `MlflowClient` bound to this resource's URIs, so
several pipelines in one process (tests, a multi-location dev server) can
each use their own store without a global `mlflow.set_tracking_uri` leaking
from one into the other.

Defaults (resolved when used, so `PIPELINE_HOME` set after import counts):

    tracking_uri   sqlite:///<runtime home>/mlflow/mlflow.db
    registry_uri   the tracking URI (model registry + aliases in the same DB)
    artifacts      <runtime home>/mlflow/artifacts/<run id>/artifacts/...

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
  is set before the import below (an operator's explicit setting wins).

Nothing is pickled: models are logged as plain artifact directories (the
safetensors weights, a JSON config, the signature), never with an MLflow model
flavour, and `log_artifacts` refuses files that look like pickles.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pickletools
import platform
import sqlite3
import struct
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# No telemetry, no network: decided at `import mlflow`, so set before it. No
# tqdm progress bars on stderr for artifact downloads (they flood Dagster logs).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import dagster as dg  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.artifacts import download_artifacts  # noqa: E402
from mlflow.data.dataset import Dataset  # noqa: E402
from mlflow.data.dataset_source import DatasetSource  # noqa: E402
from mlflow.entities import Dataset as DatasetEntity  # noqa: E402
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.protos.databricks_pb2 import (  # noqa: E402
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from resources.runtime import runtime_path  # noqa: E402

__all__ = [
    "DIGEST_TAG",
    "ExperimentTracking",
    "PickledArtifactError",
    "PipelineDataset",
    "PipelineDatasetSource",
    "TrackedRun",
    "TrackingError",
]

logger = logging.getLogger(__name__)

# MLflow's SQL store logs "Creating initial MLflow database tables..." and
# alembic's migration steps at INFO for every new database, and SQLAlchemy
# warns about a deprecated loader MLflow still uses. Quiet, but only those.
for _name in ("mlflow.store.db.utils", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")

# Input tags and run tags this module writes.
DIGEST_TAG = "pipeline.digest"
ROWS_TAG = "pipeline.rows"
CONTEXT_TAG = "mlflow.data.context"  # MLflow's own key (what mlflow.log_input writes)
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # shown by the MLflow UI
CODE_VERSION_TAG = "pipeline.code_version"
PYTHON_VERSION_TAG = "pipeline.python_version"
TORCH_VERSION_TAG = "pipeline.torch_version"

MAX_MLFLOW_DIGEST = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE
MAX_INPUT_TAG_VALUE = 500  # mlflow.utils.validation.MAX_INPUT_TAG_VALUE_SIZE
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
_BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch

PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".dill"})


class TrackingError(RuntimeError):
    """The tracking store refused or could not complete an operation."""


class PickledArtifactError(TrackingError):
    """An artifact directory contains a pickle; it is never uploaded."""


# -- datasets ------------------------------------------------------------------------


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


# -- pickle guard --------------------------------------------------------------------


def _looks_pickled(path: Path) -> bool:
    """A cheap fail-closed test for pickle files (the full scanner is picklescan).

    Binary pickles (protocol 2+) start with PROTO (0x80, 2..5). Random bytes
    (ciphertext) and safetensors (8-byte little-endian header length) can
    start with 0x80 too, so a file counts as a pickle only if the opcodes
    after PROTO parse: to STOP, or for at least 8 opcodes.
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    if len(head) >= 9 and head[8:9] == b"{" and _is_safetensors(path, head):
        return False
    parsed = 0
    try:
        for opcode, _arg, _pos in pickletools.genops(head):
            parsed += 1
            if opcode.name == "STOP" or parsed >= 8:
                return True
    except Exception:  # not (or no longer) a parsable pickle stream
        return parsed >= 8
    return parsed >= 8


def _is_safetensors(path: Path, head: bytes) -> bool:
    """True if the file starts with a well-formed safetensors header (u64 length + JSON object)."""
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > _MAX_SAFETENSORS_HEADER or 8 + header_len > path.stat().st_size:
        return False
    with path.open("rb") as fh:
        fh.seek(8)
        raw = fh.read(header_len)
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _refuse_pickles(local_dir: Path) -> None:
    paths = [local_dir] if local_dir.is_file() else sorted(p for p in local_dir.rglob("*") if p.is_file())
    bad = [str(p) for p in paths if _looks_pickled(p)]
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

_init_lock = threading.Lock()
_initialised: set[str] = set()
_template_lock = threading.Lock()
_template: bytes | None = None


def _is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def _sqlite_path(uri: str) -> Path:
    # sqlite:////abs/path.db -> /abs/path.db (SQLAlchemy's form: three slashes + the path)
    return Path(uri[len("sqlite:///") :])


def _template_db() -> bytes:
    """An empty MLflow database at the current schema head, built once per process.

    MLflow creates a new SQLite store by running its whole alembic migration
    history (~1.5 s on an idle machine, several seconds under load). Every
    fresh runtime home (each test, each demo reset) would pay that; instead
    the first one in a process is built by MLflow itself in a private
    temporary folder and later fresh stores start as copies of it. MLflow
    still verifies the schema version when it opens the copy.
    """
    global _template
    with _template_lock:
        if _template is None:
            with tempfile.TemporaryDirectory(prefix="mlflow-template-") as tmp:
                uri = f"sqlite:///{Path(tmp) / 'template.db'}"
                client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                client.search_experiments(max_results=1)
                client.search_registered_models(max_results=1)
                _template = (Path(tmp) / "template.db").read_bytes()
        return _template


def _seed(db: Path, artifact_root: str) -> None:
    """Write a fresh store from the template, atomically, owner-only.

    The template's `Default` experiment (id 0, which MLflow always creates)
    would point at the template's folder; it is pointed at this store's
    artifact root instead, so nothing can ever land in `./mlruns`.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=".mlflow-seed-", dir=db.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_template_db())
        with contextlib.closing(sqlite3.connect(tmp)) as conn, conn:
            conn.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (f"{artifact_root.rstrip('/')}/0",),
            )
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare_sqlite(uri: str, artifact_root: str) -> None:
    """Create a SQLite store once, under an flock, before MLflow opens it.

    Dagster's multiprocess executor starts several processes at once; two
    of them creating the same fresh database's tables together fail. The
    flock beside the database makes them take turns; the first seeds it.
    """
    if not _is_sqlite(uri):
        return
    with _init_lock:
        if uri in _initialised:
            return
    db = _sqlite_path(uri)
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(db.with_name(".mlflow-init.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not db.exists():
            try:
                _seed(db, artifact_root)
            except Exception:  # MLflow creates it itself below (the slow way)
                logger.warning("could not seed %s from the template store", db, exc_info=True)
        # Opening the store verifies (or creates) its schema while we hold the lock.
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
        with _init_lock:
            _initialised.add(uri)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _error_code(exc: MlflowException) -> int:
    return ErrorCode.Value(exc.error_code) if isinstance(exc.error_code, str) else exc.error_code


class ExperimentTracking(dg.ConfigurableResource):
    """MLflow runs, dataset inputs and the model registry, through a bound `MlflowClient`.

    Leave the URIs empty for the embedded store under the runtime home
    (SQLite + local artifacts); set them for an MLflow server or database.
    """

    tracking_uri: str = ""
    registry_uri: str = ""
    artifact_location: str = ""
    experiment: str = "secure-ai-pipeline"

    # -- binding -------------------------------------------------------------------

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{runtime_path('mlflow') / 'mlflow.db'}"

    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri()

    def resolved_artifact_location(self) -> str | None:
        """Where a newly created experiment keeps its artifacts (None: the server decides)."""
        if self.artifact_location:
            return self.artifact_location
        if not self.tracking_uri:
            return runtime_path("mlflow", "artifacts").as_uri()
        if _is_sqlite(self.tracking_uri):
            folder = _sqlite_path(self.tracking_uri).parent / "artifacts"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            return folder.as_uri()
        return None

    def client(self) -> MlflowClient:
        """A client bound to this resource's store (never to MLflow's global URIs)."""
        tracking = self.resolved_tracking_uri()
        registry = self.registry_uri or tracking
        for uri in dict.fromkeys((tracking, registry)):
            if _is_sqlite(uri):
                root = self.resolved_artifact_location() if uri == tracking else None
                _prepare_sqlite(uri, root or (_sqlite_path(uri).parent / "artifacts").as_uri())
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
        return _sqlite_path(uri).parent if _is_sqlite(uri) else None


def _json_or_empty(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
