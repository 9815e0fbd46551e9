"""The artifact store: encryption at rest, per-stage areas, atomic writes, tamper detection."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from tink import streaming_aead

from resources import store as store_module
from resources.digests import IntegrityError, digest_bytes, digest_file
from resources.keys import LocalKeyProvider
from resources.segmented_aead import HEADER, MAGIC, SEGMENT_SIZE, TAG_SIZE
from resources.store import ArtifactStore, StoreAccessError, StoredArtifact, StoreUnavailableError

SECRET_ROW = b"user u0000042 bought item i000777 for 19.99 -- confidential"


@pytest.fixture
def store(home, keys) -> ArtifactStore:
    return ArtifactStore(key_provider=keys, root=str(home / "store"))


def test_stored_bytes_hold_no_plaintext_and_read_back_verified(store):
    artifact = store.stage("collection").write_bytes("collection/t/1.bin", SECRET_ROW * 100)
    at_rest = store.local_path(artifact.path).read_bytes()
    assert SECRET_ROW[:20] not in at_rest and b"u0000042" not in at_rest
    assert (
        store.read_verified(artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest)
        == SECRET_ROW * 100
    )
    assert os.stat(store.local_path(artifact.path)).st_mode & 0o077 == 0


def test_stored_bytes_do_not_decrypt_with_another_key(store, tmp_path):
    artifact = store.stage("collection").write_bytes("collection/t/1.bin", SECRET_ROW)
    other = ArtifactStore(
        key_provider=LocalKeyProvider(folder=str(tmp_path / "other-keys")),
        root=str(tmp_path / "other-store"),
    )
    target = other.local_path(artifact.path)
    target.parent.mkdir(parents=True)
    target.write_bytes(store.local_path(artifact.path).read_bytes())
    with pytest.raises(IntegrityError, match="another key"):
        other.read_verified(artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest)


def test_ciphertext_moved_to_another_path_does_not_decrypt(store):
    """The path is the associated data: swapping two artifacts' files is caught."""
    a = store.stage("collection").write_bytes("collection/t/a.bin", b"A" * 64)
    b = store.stage("collection").write_bytes("collection/t/b.bin", b"B" * 64)
    store.local_path(b.path).write_bytes(store.local_path(a.path).read_bytes())
    with pytest.raises(IntegrityError):
        store.read_verified(b.path, digest=b.digest, stored_digest=a.stored_digest)


def test_one_changed_byte_is_refused(store):
    artifact = store.stage("processing").write_bytes("processing/t/1.bin", os.urandom(3 << 20))
    path = store.local_path(artifact.path)
    data = bytearray(path.read_bytes())
    data[2 << 20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        store.read_verified(artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest)
    assert store.stored_digest(artifact.path) != artifact.stored_digest


@pytest.mark.parametrize("size", [0, 2 * SEGMENT_SIZE, 2 * SEGMENT_SIZE + 1])
def test_objects_at_segment_boundaries_read_back_whether_written_at_once_or_in_pieces(store, size):
    data = os.urandom(size)
    at_once = store.stage("modeling").write_bytes("modeling/t/once.bin", data)
    with store.stage("modeling").open_write("modeling/t/pieces.bin") as handle:
        for start in range(0, size, 1 << 16):
            handle.write(data[start : start + (1 << 16)])
    for artifact in (at_once, handle.artifact):
        segments = max(1, -(-size // SEGMENT_SIZE))
        assert store.local_path(artifact.path).stat().st_size == HEADER.size + size + segments * TAG_SIZE
        assert artifact.size == size and artifact.digest == digest_bytes(data)
        assert artifact.stored_digest == store.stored_digest(artifact.path)
        read = store.read_verified(
            artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest
        )
        assert read == data


def test_a_middle_segment_changed_at_rest_is_refused_even_with_a_matching_stored_digest(store):
    """Whoever can rewrite the bytes at rest and the ledger's stored digest still cannot forge a segment."""
    artifact = store.stage("processing").write_bytes("processing/t/1.bin", os.urandom(3 * SEGMENT_SIZE))
    path = store.local_path(artifact.path)
    data = bytearray(path.read_bytes())
    data[HEADER.size + SEGMENT_SIZE + TAG_SIZE + 9] ^= 0x80
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="failed authenticated decryption"):
        store.read_verified(artifact.path, digest=artifact.digest, stored_digest=digest_file(path))


def mapped_resident_bytes(path: Path) -> int:
    """How much of the process's memory maps of `path` is resident (Linux's /proc/self/smaps)."""
    resident, in_map = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            in_map = line.endswith(f" {path}")
        elif in_map and line.startswith("Rss:"):
            resident += int(line.split()[1]) * 1024
    return resident


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_a_verified_read_keeps_about_a_window_of_the_mapped_file_resident(store, monkeypatch):
    """A mapped page counts in the process's memory until dropped: read whole, the map would hold it all."""
    monkeypatch.setattr(store_module, "MAP_WINDOW", 2 * SEGMENT_SIZE)
    data = os.urandom(24 * SEGMENT_SIZE)
    artifact = store.stage("processing").write_bytes("processing/t/big.bin", data)
    path = store.local_path(artifact.path).resolve()
    resident, read = [], bytearray()
    with store.open_verified(
        artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest
    ) as plain:
        while chunk := plain.read(SEGMENT_SIZE):
            read += chunk
            resident.append(mapped_resident_bytes(path))
    assert read == data
    assert len(resident) == 24
    assert 0 < max(resident) <= 6 * SEGMENT_SIZE  # the map is found; a window, a buffer, a segment: not 24


def test_new_writes_use_the_primary_key_and_older_artifacts_still_read_after_rotation(store, home, keys):
    before = store.stage("collection").write_bytes("collection/t/before.bin", SECRET_ROW)
    new_key = store.rotate_data_key()
    after = store.stage("collection").write_bytes("collection/t/after.bin", SECRET_ROW * 2)
    reopened = ArtifactStore(key_provider=keys, root=str(home / "store"))
    headers = [HEADER.unpack(store.local_path(a.path).read_bytes()[: HEADER.size]) for a in (before, after)]
    assert headers[1][2] == new_key != headers[0][2]
    for artifact, data in ((before, SECRET_ROW), (after, SECRET_ROW * 2)):
        read = reopened.read_verified(
            artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest
        )
        assert read == data


def write_the_old_way(store: ArtifactStore, path: str, data: bytes) -> StoredArtifact:
    """An artifact as the template wrote it before the segmented format: Tink streaming AEAD."""
    target = store.local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    legacy = store._keyset_handle().primitive(streaming_aead.StreamingAead)
    with open(target, "wb") as sink, legacy.new_encrypting_stream(sink, path.encode()) as encrypting:
        encrypting.write(data)
    return StoredArtifact(path, digest_bytes(data), digest_file(target), len(data))


def test_artifacts_written_in_tink_streaming_format_still_read_and_are_still_checked(store, home, keys):
    data = os.urandom(3 << 20)
    old = write_the_old_way(store, "processing/t/old.bin", data)
    assert not store.local_path(old.path).read_bytes().startswith(MAGIC)
    store.rotate_data_key()
    reopened = ArtifactStore(key_provider=keys, root=str(home / "store"))
    assert reopened.read_verified(old.path, digest=old.digest, stored_digest=old.stored_digest) == data

    moved = reopened.local_path("processing/t/moved.bin")
    moved.write_bytes(reopened.local_path(old.path).read_bytes())
    with pytest.raises(IntegrityError, match="failed authenticated decryption"):
        reopened.read_verified("processing/t/moved.bin", digest=old.digest, stored_digest=digest_file(moved))


@pytest.mark.parametrize(
    "stage, path",
    [
        ("processing", "collection/activity_events/x.parquet"),
        ("collection", "collection/../processing/x.parquet"),
        ("collection", "/etc/passwd"),
        ("modeling", "modelingx/x"),
    ],
)
def test_a_stage_cannot_write_outside_its_own_area(store, stage, path):
    with pytest.raises(StoreAccessError):
        store.stage(stage).write_bytes(path, b"x")
    assert not any(Path(store.local_path("")).rglob("x*"))


def test_unencrypted_mode_still_verifies_digests(home, keys):
    store = ArtifactStore(key_provider=keys, root=str(home / "store"), encrypt=False)
    artifact = store.stage("collection").write_bytes("collection/t/1.bin", SECRET_ROW)
    assert artifact.digest == artifact.stored_digest
    store.local_path(artifact.path).write_bytes(SECRET_ROW.upper())
    with pytest.raises(IntegrityError, match="bytes at rest do not match"):
        store.read_verified(artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest)


WRITER = """
import sys, time
from resources.keys import LocalKeyProvider
from resources.store import ArtifactStore
home = sys.argv[1]
store = ArtifactStore(key_provider=LocalKeyProvider(folder=f"{home}/keys"), root=f"{home}/store")
with store.stage("processing").open_write("processing/big/table.parquet") as handle:
    for i in range(100_000):
        handle.write(b"row %09d " % i * 100_000)  # 1.4 MB: several segments reach the disk
        if i == 20:
            print("writing", flush=True)
        time.sleep(0.01)
"""


def test_sigkill_mid_write_leaves_nothing_a_later_load_accepts(store, home):
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
        env=os.environ.copy(),
    )
    assert writer.stdout.readline().strip() == b"writing"
    time.sleep(0.2)
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    final = store.local_path("processing/big/table.parquet")
    assert not final.exists()  # nothing was published under the artifact's name
    leftovers = list(final.parent.glob(".table.parquet.tmp-*"))
    assert leftovers and leftovers[0].stat().st_size > 0  # the half-written temp is all there is
    # Even if someone renamed the leftover into place, no digest would vouch for it.
    leftovers[0].rename(final)
    with pytest.raises(IntegrityError):
        store.read_verified(
            "processing/big/table.parquet",
            digest="blake3:unknown",
            stored_digest=store.stored_digest("processing/big/table.parquet") + "x",
        )


def test_a_missing_bucket_names_the_setting(keys, aws_environment):
    store = ArtifactStore(key_provider=keys, root="s3://no-such-bucket/pipeline")
    with pytest.raises(StoreUnavailableError) as refused:
        store.stage("collection").write_bytes("collection/a.bin", b"data")
    assert "PIPELINE_STORE_URL" in str(refused.value) and "no-such-bucket" in str(refused.value)


@pytest.mark.parametrize("failure", [RuntimeError("the producer crashed"), OSError("the source disk failed")])
def test_a_failed_write_to_an_object_store_publishes_nothing(keys, aws_environment, failure):
    bucket = f"half-written-{type(failure).__name__.lower()}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    store = ArtifactStore(key_provider=keys, root=f"s3://{bucket}/pipeline")
    stage = store.stage("collection")
    with pytest.raises(type(failure)) as raised:
        with stage.open_write("collection/table.parquet") as handle:
            handle.write(os.urandom(1 << 20))
            raise failure
    assert raised.value is failure, "the producer's own error is not reported as an unreachable store"
    assert not store.exists("collection/table.parquet")
    stage.write_bytes("collection/table.parquet", b"complete")
    assert store.exists("collection/table.parquet")


def test_an_object_store_round_trip_over_several_segments(keys, aws_environment):
    boto3.client("s3").create_bucket(Bucket="segments")
    store = ArtifactStore(key_provider=keys, root="s3://segments/pipeline")
    data = os.urandom(2 * SEGMENT_SIZE + 1)
    artifact = store.stage("modeling").write_bytes("modeling/weights.bin", data)
    assert artifact.stored_digest == store.stored_digest(artifact.path)
    read = store.read_verified(artifact.path, digest=artifact.digest, stored_digest=artifact.stored_digest)
    assert read == data
