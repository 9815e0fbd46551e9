"""The artifact store: encrypted at rest, atomic writes, one write area per stage.

Every artifact is encrypted under a data key from a Tink keyset that is itself
wrapped by the key provider's key-encryption key: envelope encryption, so a KMS
in production only ever unwraps one small keyset. Artifacts are sealed in
`resources.segmented_aead`'s format (AES-256-GCM through OpenSSL over 4 MiB
segments, a fresh HKDF-derived key per artifact, at disk speed); the
artifact's store path is the associated data, so ciphertext moved to another
artifact's path does not decrypt. Artifacts written by earlier versions in
Tink's streaming AEAD (AES256-GCM-HKDF, 1 MB segments) still read: the header
tells the two apart. `rotate_data_key` makes a fresh key the keyset's primary
for new writes and keeps the older keys, so what they encrypted still decrypts.

Spark cannot read files the application encrypted itself, so Spark stages
work on plaintext copies in a private per-run scratch folder
(`resources.scratch`); in production, prefer storage-native encryption that
Spark reads transparently (S3 SSE-KMS) and keep this layer for models/images.

A stage gets a `StageStore` that can write only under its own area
(`<root>/<stage>/`), optionally with its own storage credentials.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import tink
from dagster import ConfigurableResource
from pydantic import PrivateAttr
from tink import aead, secret_key_access, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, tink_pb2
from upath import UPath

from resources.atomic import atomic_file
from resources.digests import CHUNK, Hasher, IntegrityError, algorithm_of, digest_file
from resources.keys import KeyProvider
from resources.segmented_aead import MAGIC, DecryptingReader, DecryptionError, EncryptingWriter, read_to_end

streaming_aead.register()

# The lifecycle stages, and `security` for the attack lab's scorecard.
STAGES = ("collection", "storage", "processing", "modeling", "deployment", "monitoring", "security")
_KEYSET_AD = b"secure-ai-pipeline/store-keyset"
# Tink's streaming key type: its 32 key bytes are the HKDF input of both formats (under different HKDF
# info), so one keyset serves artifacts from before `resources.segmented_aead` and after.
_DATA_KEY_TEMPLATE = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB
# A memory-mapped artifact's pages are dropped from the process after each window of it is read.
MAP_WINDOW = 64 * 2**20


def _keyset_proto(handle: tink.KeysetHandle) -> tink_pb2.Keyset:
    return tink_pb2.Keyset.FromString(tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN))


def _new_data_key() -> tink_pb2.Keyset.Key:
    return _keyset_proto(tink.new_keyset_handle(_DATA_KEY_TEMPLATE)).key[0]


def _data_keys(handle: tink.KeysetHandle) -> tuple[int, dict[int, bytes]]:
    """The primary key id, and every enabled data key's bytes by Tink key id.

    Tink manages the data keys (creates them, has the KEK wrap them, rotates
    them) but has no Python primitive that seals large segments at OpenSSL
    speed, and no way to hand a key's bytes to one other than serialising the
    keyset with its secret-key access token: this is the one place that reads
    them, for `resources.segmented_aead`.
    """
    keyset = _keyset_proto(handle)
    keys = {
        key.key_id: aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey.FromString(key.key_data.value).key_value
        for key in keyset.key
        if key.status == tink_pb2.ENABLED
    }
    return keyset.primary_key_id, keys


class StoreAccessError(PermissionError):
    """A stage tried to write outside its own area of the store."""


class StoreUnavailableError(RuntimeError):
    """The store's location cannot be reached, does not exist, or refuses the credentials."""


@dataclass(frozen=True)
class StoredArtifact:
    """What was written: store path, plaintext digest, digest of the bytes at rest, size."""

    path: str
    digest: str
    stored_digest: str
    size: int


class _HashingWriter(io.RawIOBase):
    """Passes writes through to `sink` while hashing and counting them."""

    def __init__(self, sink: BinaryIO, algorithm: str, *, close_sink: bool):
        self._sink, self._close_sink = sink, close_sink
        self.hasher, self.size = Hasher(algorithm), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.hasher.update(view)
        self.size += len(view)
        self._sink.write(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if not self.closed and self._close_sink:
            self._sink.close()
        super().close()


class _HashingReader(io.RawIOBase):
    """Hashes everything read from `source`; `size_hint` bounds its size, so `readall` allocates once.

    `every_window`, when given, is called after each MAP_WINDOW bytes read.
    """

    def __init__(
        self,
        source: BinaryIO,
        algorithm: str,
        size_hint: int = 0,
        every_window: Callable[[], None] | None = None,
    ):
        self._source, self.hasher, self._size_hint = source, Hasher(algorithm), size_hint
        self._every_window, self._unwindowed = every_window, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._source.readinto(buffer)
        self.hasher.update(memoryview(buffer)[:count])
        self._unwindowed += count
        if self._every_window and self._unwindowed >= MAP_WINDOW:
            self._every_window()
            self._unwindowed = 0
        return count

    def readall(self) -> bytes:
        return read_to_end(self, self._size_hint)


class _MappedFile:
    """A read-only memory map of an open local file, whose pages can be dropped from the process.

    A mapped page stays in the process's resident set until it is unmapped, so a map read through
    once would add the file's whole size to the process's peak memory (111 MiB for the reference
    table of a 3M-event window). `drop` unmaps every page; the kernel keeps them in its page cache
    and maps one again when it is next read.
    """

    def __init__(self, file: BinaryIO):
        self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self.view = memoryview(self._map)

    def hash_into(self, hasher: Hasher) -> None:
        """Hash the whole file, dropping its pages after each MAP_WINDOW bytes."""
        for start in range(0, len(self.view), MAP_WINDOW):
            with self.view[start : start + MAP_WINDOW] as window:
                hasher.update(window)
            self.drop()

    def drop(self) -> None:
        self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.view.release()  # a memory map cannot close while a view of it is alive
        self._map.close()


class ArtifactStore(ConfigurableResource):
    """Encrypted, atomic artifact storage with per-stage write areas.

    `root` is a local folder by default and any fsspec URL in production
    (e.g. ``s3://bucket/pipeline``); `stage_storage_options` gives each stage
    its own credentials there, so the object store enforces the same
    least-privilege split the local path check enforces here.
    """

    key_provider: KeyProvider
    root: str  # a local folder or any fsspec URL (s3://bucket/prefix)
    encrypt: bool = True
    algorithm: str = "blake3"
    stage_storage_options: dict[str, dict[str, str]] = {}

    _keyset: tink.KeysetHandle | None = PrivateAttr(default=None)

    def _root(self, stage: str | None = None) -> UPath:
        options = self.stage_storage_options.get(stage, {}) if stage else {}
        return UPath(self.root, **options)

    def _is_local(self) -> bool:
        return self._root().protocol in ("", "file", "local")

    def _keyset_file(self) -> UPath:
        return self._root() / ".keyset" / "data-keyset.json"

    def _data_keyset(self, kek: aead.Aead) -> tink.KeysetHandle:
        """The data keyset, unwrapped by the KEK; created and stored wrapped on first use."""
        keyset_file = self._keyset_file()
        if keyset_file.exists():
            return tink.json_proto_keyset_format.parse_encrypted(keyset_file.read_text(), kek, _KEYSET_AD)
        handle = tink.new_keyset_handle(_DATA_KEY_TEMPLATE)
        self._write_keyset(handle, kek)
        return handle

    def _write_keyset(self, handle: tink.KeysetHandle, kek: aead.Aead) -> None:
        wrapped = tink.json_proto_keyset_format.serialize_encrypted(handle, kek, _KEYSET_AD)
        with self._open_atomic(self._keyset_file()) as sink:
            sink.write(wrapped.encode())

    def _keyset_handle(self) -> tink.KeysetHandle:
        if self._keyset is None:
            with self._reachable():
                self._keyset = self._data_keyset(self.key_provider.key_encryption_aead())
        return self._keyset

    def rotate_data_key(self) -> int:
        """Make a fresh data key the primary; returns its key id.

        New artifacts are encrypted under the new key; the older keys stay in
        the keyset (each artifact names its key), so everything written
        before still decrypts and verifies. The keyset is re-wrapped by the
        KEK and replaced atomically. Run one rotation at a time: two
        concurrent read-modify-writes would drop one new key (a local store
        takes a lock; an object store relies on the operator command running
        alone).
        """
        kek = self.key_provider.key_encryption_aead()
        with self._rotation_lock():
            keyset = _keyset_proto(self._data_keyset(kek))
            used = {key.key_id for key in keyset.key}
            new_key = _new_data_key()
            while new_key.key_id in used:  # random 32-bit ids: a clash would shadow an old key
                new_key = _new_data_key()
            keyset.key.append(new_key)
            keyset.primary_key_id = new_key.key_id
            handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
            self._write_keyset(handle, kek)
        self._keyset = handle
        return new_key.key_id

    @contextlib.contextmanager
    def _rotation_lock(self) -> Iterator[None]:
        if not self._is_local():
            yield
            return
        lock = Path(self._keyset_file().path).with_name(".rotation.lock")
        lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with os.fdopen(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600), "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def _open_atomic(self, target: UPath) -> Iterator[BinaryIO]:
        if self._is_local():
            with atomic_file(Path(target.path)) as handle:
                yield handle
        else:
            # An object store publishes an object only when its upload is closed,
            # so a body that fails must discard the upload rather than close it.
            with self._reachable():
                handle = target.open("wb")
            try:
                yield handle
            except BaseException:
                handle.discard()
                handle.closed = True  # nothing left to publish; stops __del__ from closing it
                raise
            with self._reachable():
                handle.close()

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn an object store's refusal (no bucket, bad credentials, no endpoint) into advice."""
        try:
            yield
        except OSError as error:
            raise StoreUnavailableError(
                f"The artifact store at {self.root} cannot be used: {error}. Check the store URL "
                "(PIPELINE_STORE_URL), that its bucket exists, and the credentials and endpoint in the "
                "AWS_* settings; nothing was published."
            ) from error

    def stage(self, name: str) -> StageStore:
        """A handle that can write only under `<root>/<name>/`."""
        if name not in STAGES:
            raise StoreAccessError(f"Unknown stage {name!r}; stages are {', '.join(STAGES)}.")
        return StageStore(self, name)

    @contextlib.contextmanager
    def _write(self, stage: str, path: str) -> Iterator[_HashingWriter]:
        target = self._root(stage) / path
        with self._open_atomic(target) as raw:
            stored = _HashingWriter(raw, self.algorithm, close_sink=False)
            if self.encrypt:
                key_id, keys = _data_keys(self._keyset_handle())
                encrypting = EncryptingWriter(stored, key_id, keys[key_id], path.encode())
                plain = _HashingWriter(encrypting, self.algorithm, close_sink=True)
            else:
                plain = _HashingWriter(stored, self.algorithm, close_sink=False)
            yield plain
            plain.close()
            plain.stored = stored

    @contextlib.contextmanager
    def open_verified(self, path: str, *, digest: str, stored_digest: str) -> Iterator[BinaryIO]:
        """Yield a plaintext stream of `path`; raise IntegrityError unless both digests match.

        The check runs when the caller has read the stream to its end, so read
        it fully before trusting anything derived from it (`read_verified` and
        `copy_verified` do).
        """
        algorithm = algorithm_of(digest)
        with contextlib.ExitStack() as cleanup:
            raw = cleanup.enter_context((self._root() / path).open("rb"))
            segmented = self.encrypt and raw.read(len(MAGIC)) == MAGIC
            size = raw.seek(0, os.SEEK_END)  # the plaintext is never longer than the bytes at rest
            raw.seek(0)
            if segmented and self._is_local():
                # Decrypted where it lies in the page cache, with no copy into the process, and hashed at
                # once on every core. Writes replace files whole, so the mapped file never shrinks under it;
                # one truncated in place by an intruder ends the process (SIGBUS) rather than a read.
                mapped = cleanup.enter_context(contextlib.closing(_MappedFile(raw)))
                stored, stored_hasher, every_window = mapped.view, Hasher(algorithm), mapped.drop
                mapped.hash_into(stored_hasher)
            else:
                stored = _HashingReader(raw, algorithm)
                stored_hasher, every_window = stored.hasher, None
            if self.encrypt:
                try:
                    plain_source = cleanup.enter_context(
                        contextlib.closing(self._decrypting(stored, path, segmented=segmented))
                    )
                except (tink.TinkError, DecryptionError) as error:
                    raise IntegrityError(f"{path} cannot be decrypted: {error}") from error
            else:
                plain_source = stored
            plain = _HashingReader(plain_source, algorithm, size, every_window)
            try:
                yield io.BufferedReader(plain, CHUNK)
            except (tink.TinkError, DecryptionError) as error:
                raise IntegrityError(
                    f"{path} failed authenticated decryption: its bytes were changed at rest "
                    f"or it was encrypted under another key ({error}). Do not use it; "
                    "re-materialise it from trusted inputs and run the integrity audit."
                ) from error
            if stored_hasher.digest() != stored_digest:
                raise IntegrityError(
                    f"{path}: the bytes at rest do not match the ledger "
                    f"(expected {stored_digest}, found {stored_hasher.digest()}). "
                    "The artifact was changed after it was written; do not use it. "
                    "Re-materialise it from trusted inputs and run the integrity audit."
                )
            if plain.hasher.digest() != digest:
                raise IntegrityError(
                    f"{path}: content digest {plain.hasher.digest()} does not match the "
                    f"ledger's {digest}. Re-materialise it from trusted inputs."
                )

    def _decrypting(self, stored: BinaryIO | memoryview, path: str, *, segmented: bool) -> BinaryIO:
        """The plaintext of an encrypted artifact: in `resources.segmented_aead`'s format (from a stream or a
        memory map), or in Tink's streaming AEAD for artifacts written before it (from a stream; Tink tries
        each key of the keyset)."""
        if segmented:
            return DecryptingReader(stored, _data_keys(self._keyset_handle())[1], path.encode())
        legacy = self._keyset_handle().primitive(streaming_aead.StreamingAead)
        return legacy.new_decrypting_stream(io.BufferedReader(stored, CHUNK), path.encode())

    def read_verified(self, path: str, *, digest: str, stored_digest: str) -> bytes:
        with self.open_verified(path, digest=digest, stored_digest=stored_digest) as stream:
            return stream.read()

    def copy_verified(self, path: str, dest: Path, *, digest: str, stored_digest: str) -> Path:
        """Decrypt a verified copy into a local file (for Spark); no partial file survives."""
        with (
            self.open_verified(path, digest=digest, stored_digest=stored_digest) as stream,
            atomic_file(dest) as out,
        ):
            while chunk := stream.read(CHUNK):
                out.write(chunk)
        return dest

    def stored_digest(self, path: str, algorithm: str | None = None) -> str:
        """Digest of the bytes at rest, without decrypting (the audit needs no data key)."""
        if self._is_local():
            return digest_file(self.local_path(path), algorithm or self.algorithm)  # mmap, every core
        hasher = Hasher(algorithm or self.algorithm)
        with (self._root() / path).open("rb") as raw:
            while chunk := raw.read(CHUNK):
                hasher.update(chunk)
        return hasher.digest()

    def exists(self, path: str) -> bool:
        return (self._root() / path).exists()

    @contextlib.contextmanager
    def stored_file(self, path: str, copy: Path) -> Iterator[Path]:
        """A local file holding the bytes at rest (still encrypted): the file itself in a local store,
        else a copy at `copy`, removed afterwards."""
        if self._is_local():
            yield self.local_path(path)
            return
        try:
            with (self._root() / path).open("rb") as raw, atomic_file(copy) as out:
                while chunk := raw.read(CHUNK):
                    out.write(chunk)
            yield copy
        finally:
            copy.unlink(missing_ok=True)

    def local_path(self, path: str) -> Path:
        """The file behind a store path (local stores only: tests and the audit use it)."""
        return Path((self._root() / path).path)


class StageStore:
    """One stage's write handle: every write lands under `<root>/<stage>/` or is refused."""

    def __init__(self, store: ArtifactStore, stage: str):
        self._store, self.stage = store, stage

    def _checked(self, relative: str) -> str:
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise StoreAccessError(f"Refused store path {relative!r}: give a path inside the area.")
        if parts[0] != self.stage:
            raise StoreAccessError(
                f"Stage '{self.stage}' may write only under '{self.stage}/'; refused a write "
                f"to '{relative}'. Each stage writes its own area: emit the artifact from an "
                f"asset in group '{parts[0]}' instead."
            )
        return str(PurePosixPath(*parts))

    @contextlib.contextmanager
    def open_write(self, relative: str) -> Iterator[BinaryIO]:
        """Stream plaintext in; it is encrypted, hashed and published atomically on exit.

        After the block, `handle.artifact` holds the `StoredArtifact`.
        """
        path = self._checked(relative)
        with self._store._write(self.stage, path) as plain:
            yield plain
        plain.artifact = StoredArtifact(
            path=path,
            digest=plain.hasher.digest(),
            stored_digest=plain.stored.hasher.digest(),
            size=plain.size,
        )

    def write_bytes(self, relative: str, data: bytes) -> StoredArtifact:
        with self.open_write(relative) as handle:
            handle.write(data)
        return handle.artifact

    def write_file(self, relative: str, source: Path) -> StoredArtifact:
        with self.open_write(relative) as handle, open(source, "rb") as src:
            while chunk := src.read(CHUNK):
                handle.write(chunk)
        return handle.artifact
