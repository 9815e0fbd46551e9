"""Segmented AES-256-GCM: authenticated encryption of large artifacts at OpenSSL speed.

The construction of Tink's AES-GCM-HKDF streaming AEAD (the STREAM construction of
Hoang, Reyhanitabar, Rogaway and Vizár), with large segments that OpenSSL seals
in one call each (through `cryptography`) instead of 1 MB segments driven from
Python: several GB/s on one core instead of ~0.2 GB/s. The data keys stay in
the store's Tink keyset; this module only sees one key's bytes by its Tink key id.

An object, byte by byte (integers big-endian):

    offset  size  field
    0       4     magic b"SAPE" (a Tink streaming ciphertext starts with its header length, 0x28)
    4       1     format version, 1
    5       4     key id: the Tink key id of the data key the object is encrypted under
    9       4     segment size S: plaintext bytes in every segment but the last
    13      32    salt, random per object
    45      7     nonce prefix, random per object
    52      ...   segments 0 .. n-1, each AES-256-GCM ciphertext || 16-byte tag, under
                  key     = HKDF-SHA256(ikm=data key, salt=salt,
                                        info=b"secure-ai-pipeline/segmented-aead/v1"), 32 bytes
                  nonce_i = nonce prefix (7) || i (4) || 1 if segment i is the last, else 0 (1)
                  aad     = the 52 header bytes || the associated data (the store path)

Every segment but the last holds exactly S plaintext bytes, the last 0 to S, so
n >= 1 (an empty object is one empty last segment). A fresh key per object means
no nonce repeats across objects and a segment spliced in from another object
fails; the index in the nonce catches reordering and dropped segments; the last
flag catches truncation at a segment boundary and anything appended; the header
in the aad catches a changed version, key id or segment size; the path in the
aad catches ciphertext moved to another path.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Mapping
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from resources.digests import CHUNK

MAGIC = b"SAPE"
VERSION = 1
HEADER = struct.Struct(">4sBII32s7s")
TAG_SIZE = 16
# Large enough that Python's cost per segment vanishes, small enough that a segment is still in cache
# when it is hashed after decryption (1-4 MiB measured best in benchmarks.store on this machine).
SEGMENT_SIZE = 4 << 20
MAX_SEGMENT_SIZE = 64 << 20  # a reader allocates a segment before it is authenticated: bound it
_KDF_INFO = b"secure-ai-pipeline/segmented-aead/v1"


class DecryptionError(Exception):
    """The object is not a valid ciphertext for this key and associated data."""


def _object_aead(key: bytes, salt: bytes) -> AESGCM:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_KDF_INFO)
    return AESGCM(kdf.derive(key))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, last)


def _read_into(source: BinaryIO, buffer: bytearray) -> int:
    """Fill `buffer` from `source`; fewer bytes only at the end of the stream."""
    view, filled = memoryview(buffer), 0
    while filled < len(buffer) and (count := source.readinto(view[filled:])):
        filled += count
    return filled


class EncryptingWriter(io.RawIOBase):
    """Encrypts what is written to it into `sink`, one segment at a time; `close` seals the last
    segment and leaves `sink` open."""

    def __init__(self, sink: BinaryIO, key_id: int, key: bytes, associated_data: bytes):
        salt, self._prefix = os.urandom(32), os.urandom(7)
        header = HEADER.pack(MAGIC, VERSION, key_id, SEGMENT_SIZE, salt, self._prefix)
        self._sink, self._aead, self._aad = sink, _object_aead(key, salt), header + associated_data
        self._pending, self._filled, self._index = bytearray(SEGMENT_SIZE), 0, 0
        self._sealed = memoryview(bytearray(SEGMENT_SIZE + TAG_SIZE))
        sink.write(header)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self._filled:  # top up the pending segment; it stays pending while it may be the last
            taken = min(SEGMENT_SIZE - self._filled, len(view))
            self._pending[self._filled : self._filled + taken] = view[:taken]
            self._filled, view = self._filled + taken, view[taken:]
            if not view:
                return size
            self._seal(self._pending, last=False)
        while len(view) > SEGMENT_SIZE:  # whole segments straight from the caller's buffer
            self._seal(view[:SEGMENT_SIZE], last=False)
            view = view[SEGMENT_SIZE:]
        self._pending[: len(view)] = view
        self._filled = len(view)
        return size

    def _seal(self, segment, *, last: bool) -> None:
        sealed = self._sealed[: len(segment) + TAG_SIZE]
        self._aead.encrypt_into(_nonce(self._prefix, self._index, last), segment, self._aad, sealed)
        self._sink.write(sealed)
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._seal(memoryview(self._pending)[: self._filled], last=True)
        super().close()


class _StreamSegments:
    """The ciphertext segments of a stream, read one ahead: a segment is the last when nothing follows it."""

    def __init__(self, source: BinaryIO, size: int):
        self._source, self._ahead, self._spare = source, bytearray(size), bytearray(size)
        self._ahead_size = _read_into(source, self._ahead)

    def next(self) -> tuple[memoryview, bool]:
        ciphertext, size = self._ahead, self._ahead_size
        if size == len(ciphertext):
            self._ahead, self._spare = self._spare, ciphertext
            self._ahead_size = _read_into(self._source, self._ahead)
        return memoryview(ciphertext)[:size], size < len(ciphertext) or self._ahead_size == 0

    def release(self) -> None:
        pass


class _BufferSegments:
    """The ciphertext segments of a buffer that holds the whole object (a memory-mapped file), as views of
    it: nothing is copied."""

    def __init__(self, buffer: memoryview, size: int):
        self._buffer, self._size, self._position = buffer, size, 0

    def next(self) -> tuple[memoryview, bool]:
        segment = self._buffer[self._position : self._position + self._size]
        self._position += len(segment)
        return segment, self._position == len(self._buffer)

    def release(self) -> None:
        self._buffer.release()  # a memory map cannot close while a view of it is alive


class DecryptingReader(io.RawIOBase):
    """The plaintext of a ciphertext, decrypted with `keys[key id in its header]`.

    `source` is a stream, or a `memoryview` of the whole ciphertext (a memory-mapped
    file, decrypted where it lies); `close` releases the view. Raises `DecryptionError`
    when the header is refused or a segment fails authentication; a reader must
    consume the object to its end before trusting it. A caller's buffer that holds a
    whole segment is decrypted into directly.
    """

    def __init__(self, source: BinaryIO | memoryview, keys: Mapping[int, bytes], associated_data: bytes):
        in_memory = isinstance(source, memoryview)
        header = bytearray(source[: HEADER.size]) if in_memory else bytearray(HEADER.size)
        if (len(header) if in_memory else _read_into(source, header)) < HEADER.size:
            raise DecryptionError("it is shorter than its header")
        magic, version, key_id, segment_size, salt, self._prefix = HEADER.unpack(header)
        if magic != MAGIC or version != VERSION:
            raise DecryptionError(f"unknown format {bytes(magic)!r} version {version}")
        if not 0 < segment_size <= MAX_SEGMENT_SIZE:
            raise DecryptionError(f"segment size {segment_size} is out of range")
        if key_id not in keys:
            raise DecryptionError(f"it was encrypted under another key (key {key_id} is not in the keyset)")
        self._aead, self._aad = _object_aead(keys[key_id], salt), bytes(header) + associated_data
        sealed_size, self._segment_size = segment_size + TAG_SIZE, segment_size
        self._segments = (
            _BufferSegments(source[HEADER.size :], sealed_size)
            if in_memory
            else _StreamSegments(source, sealed_size)
        )
        self._plain: bytearray | None = None  # a segment decrypted for a caller's smaller buffer
        self._unread = memoryview(b"")  # the part of it not read yet
        self._index, self._finished = 0, False

    def _decrypt_next(self, into: memoryview) -> int:
        """Decrypt the next segment into `into` (room for a whole one); its size, 0 after the last."""
        if self._finished:
            return 0
        ciphertext, self._finished = self._segments.next()
        nonce = _nonce(self._prefix, self._index, self._finished)
        with ciphertext:  # released even when authentication fails and a traceback keeps this frame
            try:
                if len(ciphertext) < TAG_SIZE:
                    raise InvalidTag
                count = len(ciphertext) - TAG_SIZE
                self._aead.decrypt_into(nonce, ciphertext, self._aad, into[:count])
            except InvalidTag:
                raise DecryptionError(f"segment {self._index} failed authentication") from None
        self._index += 1
        return count

    def close(self) -> None:
        if not self.closed:
            self._segments.release()
        super().close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        buffer = memoryview(buffer).cast("B")
        if not self._unread:
            if len(buffer) >= self._segment_size:
                return self._decrypt_next(buffer)
            self._plain = self._plain or bytearray(self._segment_size)
            self._unread = memoryview(self._plain)[: self._decrypt_next(memoryview(self._plain))]
        count = min(len(buffer), len(self._unread))
        buffer[:count] = self._unread[:count]
        self._unread = self._unread[count:]
        return count

    def readall(self) -> bytes:
        return read_to_end(self)


def read_to_end(stream: io.RawIOBase, size_hint: int = 0) -> bytes:
    """Everything left in `stream`, read straight into the bytes returned.

    With `size_hint` at least the size left, that is one allocation and one pass
    over fresh memory, as a plain file read makes: `BytesIO` lends its buffer to
    `readinto` and (in CPython) hands it over without a copy.
    """
    result, filled, capacity = io.BytesIO(), 0, max(size_hint + 1, CHUNK)
    while True:
        result.seek(capacity - 1)
        result.write(b"\0")  # the buffer now holds `capacity` bytes
        with result.getbuffer() as view:
            while filled < capacity and (count := stream.readinto(view[filled : filled + CHUNK])):
                filled += count
        if filled < capacity:
            break
        capacity *= 2
    result.truncate(filled)
    return result.getvalue()
