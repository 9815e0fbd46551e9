"""DataVersioning: every published dataset version lives in DVC and can be restored."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from resources.runtime import REPO_ROOT
from resources.versioning import (
    DatasetVersion,
    DataVersioning,
    VersionIntegrityError,
    VersionNotFoundError,
)

NAME = "ecommerce/interactions.parquet.enc"


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def versioning_in(home: Path, remote: Path | None = None) -> DataVersioning:
    """A DVC project and remote under `home`, as the code location places them."""
    return DataVersioning(repo_dir=str(home / "dvc"), remote_url=str(remote or home / "dvc-remote"))


@pytest.fixture
def versioning(home) -> DataVersioning:
    return versioning_in(home)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def remote_object(home: Path, md5: str) -> Path:
    return home / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]


def cache_object(home: Path, md5: str) -> Path:
    return home / "dvc" / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def tamper(path: Path, data: bytes, *, keep_read_only: bool) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    path.chmod(0o644)
    path.write_bytes(data)
    if keep_read_only:
        path.chmod(mode)


def test_project_and_remote_live_where_they_are_placed(home, versioning):
    source = write(home / "in" / "a.bin", b"ciphertext")

    versioning.version("a.bin", source)

    assert versioning.root == home / "dvc"
    assert versioning.remote == str(home / "dvc-remote")
    config = (home / "dvc" / ".dvc" / "config").read_text()
    assert "no_scm = True" in config
    assert "analytics = False" in config
    assert f"site_cache_dir = {home / 'dvc' / '.dvc' / 'site-cache'}" in config
    assert remote_object(home, md5_of(b"ciphertext")).is_file()


def test_versions_are_pushed_and_restored_from_the_remote_alone(home, versioning, tmp_path):
    v1_bytes, v2_bytes = os.urandom(4096), os.urandom(5000)
    source = write(tmp_path / "store" / "interactions.enc", v1_bytes)

    v1 = versioning.version(NAME, source)
    write(source, v2_bytes)
    v2 = versioning.version(NAME, source)

    assert isinstance(v1, DatasetVersion)
    assert (v1.name, v1.md5, v1.size) == (NAME, md5_of(v1_bytes), 4096)
    assert (v2.md5, v2.size) == (md5_of(v2_bytes), 5000)
    assert f"md5: {v2.md5}" in v2.dvc_file and "size: 5000" in v2.dvc_file
    assert v1.to_metadata()["dvc_md5"].value == v1.md5
    # the source is neither moved nor modified nor made read-only
    assert source.read_bytes() == v2_bytes
    assert os.access(source, os.W_OK)
    # the remote keeps every version
    assert remote_object(home, v1.md5).read_bytes() == v1_bytes
    assert remote_object(home, v2.md5).read_bytes() == v2_bytes

    shutil.rmtree(home / "dvc" / "data")
    shutil.rmtree(home / "dvc" / ".dvc" / "cache")
    restored = versioning.restore(NAME, v1.md5, tmp_path / "restored" / "v1.enc")

    assert restored == tmp_path / "restored" / "v1.enc"
    assert restored.read_bytes() == v1_bytes
    assert versioning.restore(NAME, v2.md5, tmp_path / "v2.enc").read_bytes() == v2_bytes
    # no temporary files left beside the destination
    assert sorted(p.name for p in restored.parent.iterdir()) == ["v1.enc"]


def test_restore_works_after_losing_the_whole_dvc_project(home, versioning, tmp_path):
    data = os.urandom(2048)
    version = versioning.version(NAME, write(tmp_path / "x.enc", data))

    shutil.rmtree(home / "dvc")
    restored = versioning_in(home).restore(NAME, version.md5, tmp_path / "back.enc")

    assert restored.read_bytes() == data


def test_restore_replaces_the_destination_atomically(versioning, tmp_path):
    version = versioning.version(NAME, write(tmp_path / "x.enc", b"version one"))
    dest = write(tmp_path / "dest.enc", b"stale content")

    versioning.restore(NAME, version.md5, dest)

    assert dest.read_bytes() == b"version one"


def test_an_unknown_version_raises_a_clear_error(versioning, tmp_path):
    versioning.version(NAME, write(tmp_path / "x.enc", b"known"))
    unknown = md5_of(b"never published")
    dest = tmp_path / "out.enc"

    with pytest.raises(VersionNotFoundError, match=f"{unknown}.*neither in the local DVC cache"):
        versioning.restore(NAME, unknown, dest)
    assert not dest.exists()
    with pytest.raises(ValueError, match="not a DVC md5"):
        versioning.restore(NAME, "../../etc/passwd", dest)


@pytest.mark.parametrize("keep_read_only", [True, False], ids=["mode-kept", "mode-changed"])
def test_a_corrupted_remote_object_is_detected_not_returned(home, versioning, tmp_path, keep_read_only):
    data = os.urandom(3000)
    version = versioning.version(NAME, write(tmp_path / "x.enc", data))
    tamper(remote_object(home, version.md5), b"X" + data[1:], keep_read_only=keep_read_only)
    shutil.rmtree(home / "dvc" / ".dvc" / "cache")
    dest = tmp_path / "out.enc"

    with pytest.raises(VersionIntegrityError, match="tampered with"):
        versioning.restore(NAME, version.md5, dest)

    assert not dest.exists()
    # the bad bytes were not left in the local cache for a later restore to trust
    assert not cache_object(home, version.md5).exists()


def test_a_corrupted_local_cache_object_is_replaced_from_the_remote(home, versioning, tmp_path):
    data = os.urandom(3000)
    version = versioning.version(NAME, write(tmp_path / "x.enc", data))
    tamper(cache_object(home, version.md5), b"X" + data[1:], keep_read_only=True)

    restored = versioning.restore(NAME, version.md5, tmp_path / "out.enc")

    assert restored.read_bytes() == data
    assert cache_object(home, version.md5).read_bytes() == data


def test_the_remote_is_chosen_by_configuration(home, tmp_path):
    other_remote = tmp_path / "elsewhere"
    versioning_in(home).version(NAME, write(tmp_path / "a.enc", b"first"))

    version = versioning_in(home, other_remote).version(NAME, write(tmp_path / "b.enc", b"second"))

    assert (other_remote / "files" / "md5" / version.md5[:2] / version.md5[2:]).is_file()
    assert not remote_object(home, version.md5).exists()


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/../../b", "x.dvc", ".hidden", ""])
def test_unsafe_dataset_names_are_refused(versioning, tmp_path, name):
    with pytest.raises(ValueError, match="invalid dataset name"):
        versioning.version(name, write(tmp_path / "x.enc", b"x"))


def test_a_missing_source_is_refused(versioning, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a regular file"):
        versioning.version(NAME, tmp_path / "absent.enc")


PUBLISHER = """
import json, os, sys
from pathlib import Path
from resources.versioning import DataVersioning

home, worker = sys.argv[1], int(sys.argv[2])
versioning = DataVersioning(repo_dir=f"{home}/dvc", remote_url=f"{home}/dvc-remote")
published = []
for round_ in range(3):
    source = Path(home) / "in" / f"{worker}-{round_}.enc"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(os.urandom(512) + bytes([worker, round_]))
    name = f"shared/{worker % 2}.enc"
    published.append([name, versioning.version(name, source).md5])
print(json.dumps(published))
"""


@pytest.mark.slow
def test_several_processes_publish_into_one_project_at_once(home, tmp_path):
    # Separate interpreters (not multiprocessing, which would pickle), started
    # together against a project that does not exist yet: they race on the
    # initialisation and then on DVC's repository lock.
    env = dict(os.environ)
    workers = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", PUBLISHER, str(home), str(worker)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(3)
    ]
    versions = []
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        versions.extend(json.loads(out.strip().splitlines()[-1]))

    assert len({md5 for _, md5 in versions}) == 9
    versioning = versioning_in(home)
    for name, md5 in versions:
        restored = versioning.restore(name, md5, tmp_path / "out" / md5)
        assert md5_of(restored.read_bytes()) == md5
