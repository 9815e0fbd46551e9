"""Dataset versioning with DVC: every dataset version the pipeline publishes.

What DVC versions here is the *stored bytes* of an artifact, i.e. the
ciphertext the artifact store keeps at rest, so neither the DVC cache nor the
DVC remote ever holds plaintext. Each `version()` returns the DVC md5 of those
bytes (it goes into the asset's metadata next to the ledger digest, git
revision and code version); `restore()` brings back any earlier version by
that md5, from the local cache or from the remote, and verifies it.

Layout of the DVC project (no git: `core.no_scm`)::

    <repo_dir>/.dvc/config        remote, analytics off, site cache dir
    <repo_dir>/.dvc/cache/        local object cache (content addressed)
    <repo_dir>/.dvc/site-cache/   DVC's state/index databases (see below)
    <repo_dir>/data/<name>        latest version of <name> (hardlink into the cache)
    <repo_dir>/data/<name>.dvc    pointer file of the latest version
    <remote_url>/files/md5/xx/... every version ever pushed

Only the latest version of a name is in the workspace; older ones live in the
cache and in the remote, addressed by md5. The remote is the durable copy:
`restore` works with the workspace and the cache both gone.

Concurrency: every operation runs under DVC's own repository lock
(`.dvc/tmp/lock`, an flock taken by `dvc.repo.lock_repo`, which waits rather
than failing after DVC's default 3 s), so several processes (Dagster's
multiprocess executor) and threads can publish and restore at once. The first
initialisation is made atomic by building `.dvc/` in a private temporary
folder and renaming it into place.

Production: set `remote_url` to e.g. `s3://bucket/dvc` (with the `dvc-s3`
plugin installed and credentials from the environment); no code change.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# No analytics, no update checks: the pipeline runs without network. An
# explicit setting by the operator wins.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import dagster as dg  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

from resources.atomic import atomic_file

__all__ = [
    "DataVersioning",
    "DatasetVersion",
    "VersionIntegrityError",
    "VersionNotFoundError",
    "VersioningError",
]

logger = logging.getLogger(__name__)

REMOTE_NAME = "storage"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,7}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1 << 20


class VersioningError(RuntimeError):
    """A dataset version could not be published or restored."""


class VersionNotFoundError(VersioningError, LookupError):
    """No object with that md5 exists in the local cache or the remote."""


class VersionIntegrityError(VersioningError):
    """The bytes found for a version do not hash to its md5 (corruption or tampering)."""


@dataclass(frozen=True)
class DatasetVersion:
    """One published version of a dataset, as DVC recorded it."""

    name: str
    md5: str
    size: int
    dvc_file: str  # text of the .dvc pointer file (YAML)

    def to_metadata(self) -> dict[str, Any]:
        """Dagster metadata for the asset that published this version."""
        return {
            "dvc_name": dg.MetadataValue.text(self.name),
            "dvc_md5": dg.MetadataValue.text(self.md5),
            "dvc_size": dg.MetadataValue.int(self.size),
            "dvc_file": dg.MetadataValue.md(f"```yaml\n{self.dvc_file}```"),
        }


class DataVersioning(dg.ConfigurableResource):
    """Publishes dataset versions to DVC and restores them by md5.

    `repo_dir` is the DVC repository (a local folder); `remote_url` where
    versions are pushed (a folder, or `s3://…` with the `prod` extra).
    """

    repo_dir: str
    remote_url: str
    jobs: int | None = None  # parallel transfers for push/fetch; DVC's default when unset

    _configured: bool = PrivateAttr(default=False)

    # -- paths & configuration -------------------------------------------------------

    @property
    def root(self) -> Path:
        return Path(self.repo_dir)

    @property
    def remote(self) -> str:
        return self.remote_url

    def _site_cache_dir(self, root: Path) -> str:
        # DVC keeps its state DB (inode/mtime -> md5) and index caches in a
        # "site cache", by default /var/tmp/dvc: a world-writable folder
        # shared by every user on the machine. A poisoned state DB makes DVC
        # record a wrong md5 for a file, so keep it in the owner-only repo.
        return str(root / ".dvc" / "site-cache")

    def _desired_config(self, root: Path) -> dict[str, Any]:
        return {
            "core": {
                "no_scm": True,
                "analytics": False,
                "autostage": False,
                "remote": REMOTE_NAME,
                "site_cache_dir": self._site_cache_dir(root),
            },
            # The workspace copy is a hardlink to the cache object (read-only):
            # no second copy on disk. Falls back to copy across filesystems.
            "cache": {"type": "reflink,hardlink,copy"},
            "remote": {REMOTE_NAME: {"url": self.remote}},
        }

    def _ensure_repo(self) -> Path:
        """Initialise the DVC project on first use (atomically) and apply the config."""
        root = self.root
        dvc_dir = root / ".dvc"
        if not (dvc_dir / "config").is_file():
            self._init_repo(root)
            self._configured = False
        if not self._configured:
            self._sync_config(root)
            self._configured = True
        return root

    def _init_repo(self, root: Path) -> None:
        """`dvc init --no-scm`, published with one atomic rename.

        Equivalent to `Repo.init(root, no_scm=True)`, but (1) the `.dvc` folder
        only appears once its config is complete, so a concurrent process never
        opens a half-configured repo, and (2) `Repo.init` opens the repo before
        we can set `core.site_cache_dir`, which creates /var/tmp/dvc.
        """
        from dvc.config import Config
        from dvc.ignore import init as init_dvcignore

        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".dvc-init-", dir=root))
        try:
            Config.init(str(staging))
            config = Config(str(staging))
            with config.edit("repo") as conf:
                _merge(conf, self._desired_config(root))
            try:
                os.rename(staging, root / ".dvc")
            except OSError:
                # Another process won the race (rename onto a non-empty dir fails).
                if not (root / ".dvc" / "config").is_file():
                    raise
            else:
                logger.info("initialised DVC repository (no SCM) at %s", root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        init_dvcignore(str(root))

    def _sync_config(self, root: Path) -> None:
        """Make the repo config match this resource's configuration (remote URL etc.)."""
        from dvc.config import Config

        desired = self._desired_config(root)
        current = Config(str(root / ".dvc"), validate=False).read("repo")
        if _contains(current, desired):
            return
        with self._open(root) as repo, _locked(repo), repo.config.edit("repo") as conf:
            _merge(conf, desired)

    @contextlib.contextmanager
    def _open(self, root: Path):
        from dvc.repo import Repo

        # _wait_for_lock: wait for a concurrent publisher instead of failing
        # after DVC's default 3 s (what `dvc --wait-for-lock` does).
        repo = Repo(str(root), _wait_for_lock=True)
        try:
            yield repo
        finally:
            repo.close()

    # -- public API ------------------------------------------------------------------

    def version(self, name: str, source_file: Path | str) -> DatasetVersion:
        """Publish the bytes of `source_file` as a new version of dataset `name`.

        The file is copied (never moved or modified) to `data/<name>` in the
        DVC workspace, `dvc add`-ed and `dvc push`-ed to the remote. Returns
        its md5, size and the .dvc pointer text.
        """
        _check_name(name)
        source = Path(source_file)
        if not source.is_file():
            raise FileNotFoundError(f"cannot version {name!r}: {source} is not a regular file")
        root = self._ensure_repo()
        target = root / "data" / name
        pointer = target.with_name(target.name + ".dvc")
        with self._open(root) as repo, _locked(repo):
            target.parent.mkdir(parents=True, exist_ok=True)
            # Copy next to the target and rename over it: the previous version's
            # workspace file is a hardlink into the cache and must not be
            # written through. Our own md5 of the bytes we copied is compared
            # with what DVC records, so a source that changes under us, or a
            # stale DVC state DB, cannot publish a wrong hash.
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                copied_md5, size = _copy_hashing(source, tmp)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            stages = repo.add([str(target)])
            out = stages[0].outs[0]
            md5 = out.hash_info.value
            if md5 != copied_md5:
                raise VersionIntegrityError(
                    f"DVC recorded md5 {md5} for {name!r} but the copied bytes hash to "
                    f"{copied_md5}: the source file changed while it was being versioned, "
                    f"or DVC's state database under {self._site_cache_dir(root)} is stale. "
                    "Nothing was pushed; version the file again once it is stable."
                )
            repo.push(targets=[str(pointer)], remote=REMOTE_NAME, jobs=self.jobs)
            dvc_text = pointer.read_text(encoding="utf-8")
        return DatasetVersion(name=name, md5=md5, size=size, dvc_file=dvc_text)

    def restore(self, name: str, md5: str, dest: Path | str) -> Path:
        """Write the exact bytes of version `md5` of `name` to `dest`, atomically.

        Looks in the local cache first, then fetches from the remote. The bytes
        are hashed while being copied and `dest` is only created when they
        match `md5`; a corrupted local cache object is discarded and fetched
        again, a corrupted remote object raises VersionIntegrityError.
        """
        _check_name(name)
        md5 = md5.strip().lower() if isinstance(md5, str) else md5
        if not isinstance(md5, str) or not _MD5_RE.match(md5):
            raise ValueError(f"{md5!r} is not a DVC md5 (32 hex digits) for dataset {name!r}")
        dest = Path(dest)
        root = self._ensure_repo()
        with self._open(root) as repo, _locked(repo):
            cache_path = Path(repo.cache.local.oid_to_path(md5))
            fetched = False
            if not cache_path.is_file():
                self._fetch(repo, root, name, md5)
                fetched = True
            for attempt in range(2):
                if not cache_path.is_file():
                    raise VersionNotFoundError(
                        f"version {md5} of dataset {name!r} is neither in the local DVC cache "
                        f"nor on the remote {self.remote!r}. Check that the md5 comes from this "
                        "pipeline's asset metadata (dvc_md5) and that remote_url points at the "
                        "remote it was pushed to."
                    )
                try:
                    return _copy_verified(cache_path, dest, md5)
                except VersionIntegrityError as exc:
                    # Never leave a bad object in the cache: a later restore (or a
                    # push) would trust it.
                    with contextlib.suppress(FileNotFoundError):
                        cache_path.unlink()
                    if fetched or attempt:
                        raise VersionIntegrityError(
                            f"restoring {name!r} version {md5} from the remote {self.remote!r}: "
                            f"{exc}. The remote object is corrupted or was tampered with; "
                            f"{dest} was not written. Restore the remote object from a backup "
                            "or re-publish the dataset, and investigate who can write to the "
                            "remote."
                        ) from None
                    logger.warning(
                        "local DVC cache object for %s version %s was corrupted (%s); "
                        "discarded it and fetching from the remote",
                        name,
                        md5,
                        exc,
                    )
                    self._fetch(repo, root, name, md5)
                    fetched = True
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, repo: Any, root: Path, name: str, md5: str) -> None:
        """`dvc fetch` one object by md5, via a temporary .dvc pointer file."""
        from dvc.exceptions import DownloadError

        restore_dir = root / "restore"
        restore_dir.mkdir(exist_ok=True)
        token = uuid.uuid4().hex
        pointer = restore_dir / f"{token}.dvc"
        pointer.write_text(f"outs:\n- md5: '{md5}'\n  hash: md5\n  path: {token}\n", encoding="utf-8")
        remote_odb = repo.cloud.get_remote_odb(REMOTE_NAME, command="fetch")
        on_remote = remote_odb.exists(md5)
        try:
            repo.fetch(targets=[str(pointer)], remote=REMOTE_NAME, jobs=self.jobs)
        except DownloadError as exc:
            raise VersioningError(
                f"fetching {name!r} version {md5} from the remote {self.remote!r} failed: {exc}. "
                "Check that the remote is reachable and its credentials are set."
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                pointer.unlink()
        if on_remote and not Path(repo.cache.local.oid_to_path(md5)).is_file():
            # For a folder remote, DVC re-hashes objects that are not read-only
            # (mode 0444) before using them, and *deletes* one whose bytes do
            # not match its md5, then reports it as merely "missing".
            raise VersionIntegrityError(
                f"restoring {name!r} version {md5}: the remote {self.remote!r} held an object "
                f"at {remote_odb.oid_to_path(md5)} but its bytes did not hash to {md5}, so DVC "
                "rejected (and, for a folder remote, removed) it. The remote object was "
                "corrupted or tampered with; restore it from a backup or re-publish the "
                "dataset, and investigate who can write to the remote."
            )


# -- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(repo: Any):
    """Hold DVC's repository lock for a multi-step operation (re-entrant for DVC calls)."""
    from dvc.repo import lock_repo

    with lock_repo(repo):
        yield


def _check_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not _NAME_RE.match(name)
        or name.endswith(".dvc")
        or any(part in {".", ".."} for part in name.split("/"))
    ):
        raise ValueError(
            f"invalid dataset name {name!r}: use letters, digits, '.', '_', '-' and '/' "
            "between segments, not starting with '.', not ending in '.dvc'"
        )


def _merge(conf: dict, desired: dict) -> None:
    for key, value in desired.items():
        if isinstance(value, dict):
            _merge(conf.setdefault(key, {}), value)
        else:
            conf[key] = value


def _contains(current: Any, desired: Any) -> bool:
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(_contains(current.get(k), v) for k, v in desired.items())
    if isinstance(desired, bool):  # the config file stores booleans as text
        return str(current).lower() == str(desired).lower()
    return current == desired


def _copy_hashing(source: Path, dest: Path) -> tuple[str, int]:
    """Copy source to dest (fsynced), returning the md5 and size of the bytes copied."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(source, "rb") as src, open(dest, "xb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest(), size


def _copy_verified(source: Path, dest: Path, md5: str) -> Path:
    """Copy source to dest atomically, only if its bytes hash to md5."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(source, "rb") as src, atomic_file(dest, mode=0o644) as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != md5:
            raise VersionIntegrityError(f"bytes hash to md5 {digest.hexdigest()}, expected {md5}")
    return dest
