"""The embedded MLflow store: a SQLite database prepared once, safely, before MLflow opens it.

MLflow 3's own default backend is SQLite (`sqlite:///mlflow.db` in the current
directory). A fresh SQLite store is created here rather than by MLflow's first
client call, for three reasons:

* **speed**: MLflow creates a store by running its whole alembic migration
  history; here later stores in a process start as copies of one template;
* **concurrency**: Dagster's multiprocess executor starts several processes at
  once, and two of them creating the same database's tables together fail;
  an flock beside the database makes them take turns;
* **no stray files**: the `Default` experiment of a store created here points
  at this store's artifact root, never at `./mlruns` of the current directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import tempfile
import threading
from pathlib import Path

import resources.mlflow_settings  # noqa: F401 - settings read at `import mlflow`, so first

# isort: split

from mlflow import MlflowClient

__all__ = ["is_sqlite_uri", "prepare_sqlite_store", "sqlite_path"]

logger = logging.getLogger(__name__)

_init_lock = threading.Lock()
_initialised: set[str] = set()
_template_lock = threading.Lock()
_template: bytes | None = None


def is_sqlite_uri(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_path(uri: str) -> Path:
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


def prepare_sqlite_store(uri: str, artifact_root: str) -> None:
    """Create a SQLite store once, under an flock, before MLflow opens it.

    Dagster's multiprocess executor starts several processes at once; two
    of them creating the same fresh database's tables together fail. The
    flock beside the database makes them take turns; the first seeds it.
    A URI that is not SQLite is left alone.
    """
    if not is_sqlite_uri(uri):
        return
    with _init_lock:
        if uri in _initialised:
            return
    db = sqlite_path(uri)
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
