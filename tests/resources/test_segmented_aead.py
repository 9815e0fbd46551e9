"""The store's segmented AES-256-GCM format against what an attacker with write access to the bytes tries.

Each attack first shows the untouched object decrypting, then the altered one refused, read both from a
stream and from a buffer holding the whole object (the store's memory map of a local file).
Segments are shrunk to 1 KiB so that a few KiB make a many-segment object.
"""

import io
import mmap
import os

import pytest

from resources import segmented_aead
from resources.segmented_aead import HEADER, TAG_SIZE, DecryptingReader, DecryptionError, EncryptingWriter

SEGMENT = 1024
KEYS = {7: os.urandom(32), 9: os.urandom(32)}
PATH = b"processing/t/table.parquet"
PLAINTEXT = os.urandom(3 * SEGMENT + 100)  # four segments, the last partial


SOURCES = {"stream": io.BytesIO, "buffer": memoryview}
source = SOURCES["stream"]  # set for each test by `each_source`


@pytest.fixture(autouse=True)
def small_segments(monkeypatch):
    monkeypatch.setattr(segmented_aead, "SEGMENT_SIZE", SEGMENT)


@pytest.fixture(autouse=True, params=SOURCES)
def each_source(request, monkeypatch):
    monkeypatch.setitem(globals(), "source", SOURCES[request.param])


def seal(plaintext: bytes = PLAINTEXT, *, key_id: int = 7, path: bytes = PATH, write_size: int = 0) -> bytes:
    sink = io.BytesIO()
    with EncryptingWriter(sink, key_id, KEYS[key_id], path) as writer:
        for start in range(0, len(plaintext), write_size or len(plaintext) or 1):
            writer.write(plaintext[start : start + (write_size or len(plaintext))])
    return sink.getvalue()


def unseal(ciphertext: bytes, *, keys=KEYS, path: bytes = PATH) -> bytes:
    return DecryptingReader(source(ciphertext), keys, path).read()


def split(ciphertext: bytes) -> tuple[bytes, list[bytes]]:
    """The header and each segment's ciphertext."""
    step = SEGMENT + TAG_SIZE
    body = ciphertext[HEADER.size :]
    return ciphertext[: HEADER.size], [body[i : i + step] for i in range(0, len(body), step)]


def refused(ciphertext: bytes, match: str = "failed authentication", **kwargs) -> None:
    with pytest.raises(DecryptionError, match=match):
        unseal(ciphertext, **kwargs)


@pytest.mark.parametrize(
    "size, segments",
    [
        (0, 1),
        (1, 1),
        (SEGMENT - 1, 1),
        (SEGMENT, 1),
        (SEGMENT + 1, 2),
        (3 * SEGMENT, 3),
        (3 * SEGMENT + 1, 4),
    ],
)
@pytest.mark.parametrize("write_size", [0, 1, 100, SEGMENT, SEGMENT + 7])
def test_round_trip_at_and_around_segment_boundaries(size, segments, write_size):
    """An object exactly N segments long is N segments (no empty trailer); one byte over is N + 1."""
    plaintext = os.urandom(size)
    ciphertext = seal(plaintext, write_size=write_size)
    assert len(ciphertext) == HEADER.size + size + segments * TAG_SIZE
    assert unseal(ciphertext) == plaintext
    reader = io.BufferedReader(DecryptingReader(source(ciphertext), KEYS, PATH), buffer_size=300)
    assert b"".join(iter(lambda: reader.read(77), b"")) == plaintext


def test_each_object_gets_a_fresh_key_and_nonces():
    first, second = seal(), seal()
    assert first[:13] == second[:13]  # magic, version, key id, segment size
    assert first[13 : HEADER.size] != second[13 : HEADER.size]  # salt and nonce prefix
    assert split(first)[1][0] != split(second)[1][0]


def test_a_flipped_bit_in_a_middle_segment_is_refused():
    ciphertext = bytearray(seal())
    assert unseal(bytes(ciphertext)) == PLAINTEXT
    ciphertext[HEADER.size + SEGMENT + TAG_SIZE + 5] ^= 0x01
    refused(bytes(ciphertext), "segment 1 failed")


@pytest.mark.parametrize("kept", [1, 2, 3])
def test_truncation_at_a_segment_boundary_is_refused(kept):
    """Dropping the last segments leaves a well-formed file whose last segment was not sealed as the last."""
    plaintext = os.urandom(4 * SEGMENT)
    header, segments = split(seal(plaintext))
    assert unseal(header + b"".join(segments)) == plaintext
    refused(header + b"".join(segments[:kept]), f"segment {kept - 1} failed")


@pytest.mark.parametrize("cut", [1, TAG_SIZE, 100])
def test_truncation_inside_the_last_segment_is_refused(cut):
    ciphertext = seal()
    refused(ciphertext[:-cut])


def test_a_ciphertext_cut_to_its_header_or_less_is_refused():
    ciphertext = seal()
    refused(ciphertext[: HEADER.size], "segment 0 failed")
    refused(ciphertext[: HEADER.size - 1], "shorter than its header")


def test_reordered_segments_are_refused():
    header, segments = split(seal())
    segments[0], segments[1] = segments[1], segments[0]
    refused(header + b"".join(segments), "segment 0 failed")


def test_a_segment_spliced_from_another_object_under_the_same_key_and_path_is_refused():
    header, segments = split(seal())
    _, others = split(seal(os.urandom(len(PLAINTEXT))))
    segments[1] = others[1]
    refused(header + b"".join(segments), "segment 1 failed")
    refused(header + b"".join(others), "segment 0 failed")  # another object's segments under this header


def test_ciphertext_moved_to_another_path_is_refused():
    ciphertext = seal()
    assert unseal(ciphertext, path=PATH) == PLAINTEXT
    refused(ciphertext, path=b"processing/t/other.parquet")


@pytest.mark.parametrize("appended", [b"\x00", os.urandom(TAG_SIZE), os.urandom(SEGMENT + TAG_SIZE)])
def test_anything_appended_is_refused(appended):
    ciphertext = seal()
    refused(ciphertext + appended)


def test_a_copy_of_the_last_segment_appended_is_refused():
    header, segments = split(seal(os.urandom(2 * SEGMENT)))
    refused(header + b"".join(segments) + segments[-1])


def test_a_key_missing_from_the_keyset_is_refused_before_any_segment():
    ciphertext = seal(key_id=9)
    assert unseal(ciphertext) == PLAINTEXT
    refused(ciphertext, "another key", keys={7: KEYS[7]})  # a keyset that no longer holds key 9


def test_the_right_key_id_with_other_key_bytes_is_refused():
    refused(seal(), keys={7: os.urandom(32)})


@pytest.mark.parametrize(
    "offset, flip, match",
    [
        (0, 0x01, "unknown format"),  # magic
        (4, 0x03, "unknown format"),  # version 1 -> 2
        (8, 0x0E, "failed authentication"),  # key id 7 -> 9: a key the keyset holds
        (11, 0x0C, "failed authentication"),  # segment size 1024 -> 2048
        (11, 0x04, "out of range"),  # segment size 1024 -> 0
        (9, 0x7F, "out of range"),  # segment size past the cap: refused before allocating it
        (20, 0x01, "failed authentication"),  # salt
        (HEADER.size - 1, 0x01, "failed authentication"),  # nonce prefix
    ],
)
def test_a_changed_header_field_is_refused(offset, flip, match):
    ciphertext = bytearray(seal())
    ciphertext[offset] ^= flip
    refused(bytes(ciphertext), match)


def test_the_header_is_authenticated_even_where_decryption_would_not_notice():
    """A one-segment object reads the same under any larger segment size: only the aad catches the edit."""
    ciphertext = bytearray(seal(b"short"))
    ciphertext[11] ^= 0x0C  # segment size 1024 -> 2048
    refused(bytes(ciphertext), "segment 0 failed")


@pytest.mark.parametrize("tampered", [False, True])
def test_a_reader_of_a_memory_map_lets_the_map_close_once_closed(tmp_path, tampered):
    """A view of a map that outlives the reader stops the map from closing (BufferError), which would hide
    the refusal of a tampered object behind an error about the map."""
    ciphertext = bytearray(seal())
    ciphertext[-1] ^= tampered
    (tmp_path / "object").write_bytes(ciphertext)
    with (
        open(tmp_path / "object", "rb") as file,
        mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
    ):
        with memoryview(mapped) as view, DecryptingReader(view, KEYS, PATH) as reader:
            if tampered:
                with pytest.raises(DecryptionError, match="segment 3 failed"):
                    reader.read()
            else:
                assert reader.read() == PLAINTEXT
    assert mapped.closed
