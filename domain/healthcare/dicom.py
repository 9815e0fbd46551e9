"""DICOM validation and sanitisation for the healthcare collection stage.

Pure functions over bytes: the collection asset calls them once per received
file and quarantines every :class:`Refusal` with its reason. Nothing here
raises on odd input: random bytes, an empty file, a PNG, a truncated study or a
header that declares gigabytes all come back as a ``Refusal`` whose reason
starts with a short machine category (the text before the first colon):

=====================  ======================================================
category               meaning
=====================  ======================================================
``empty``              no bytes at all
``too large``          more bytes than ``max_bytes`` (checked before parsing),
                       or a deflated data set that inflates past
                       ``max_bytes + max_pixel_bytes`` (checked before pydicom
                       inflates it)
``not dicom``          no ``DICM`` magic after a 128-byte preamble (this also
                       refuses files written without the preamble)
``malformed``          pydicom could not parse the data set or a value in it
``truncated``          the file ends inside an element, the (native) pixel
                       data is shorter than Rows x Columns x Frames x Bits
                       Allocated declare, or a deflate stream ends early or
                       has bytes after it
``transfer syntax``    not in :data:`ALLOWED_TRANSFER_SYNTAXES` or no installed
                       plugin decodes it ("cannot be decoded here"), or
                       excluded by the caller ("not allowed")
``not an image``       SOP class is not an image storage class (PDF, SR, ...)
                       or the data set carries no Pixel Data
``missing tag``        a required attribute is absent or empty
``metadata``           invalid UIDs, file meta that contradicts the data set,
                       a modality that contradicts the SOP class
``modality``           modality not in ``allowed_modalities``
``shape``              Rows/Columns outside bounds, or a decoded image larger
                       than ``max_pixel_bytes`` (checked before decoding)
``pixel data``         unsupported pixel module values, more frames than
                       ``max_frames``, excess bytes, encapsulated data whose
                       fragments or offset table do not match the frames
                       (trailing garbage, missing frames), a codestream whose
                       own header declares another size than the data set, a
                       compressed stream that does not decode, values outside
                       Bits Stored (data hidden in unused high bits, checked on
                       the decoded values), pixel array that does not decode
                       to the declared shape
``embedded content``   an executable/archive/document hidden in a binary
                       element other than Pixel Data, or an encapsulated
                       document inside an image
``phi``                the pixels themselves carry identity (burned-in
                       annotation, recognisable visual features): tag-level
                       de-identification cannot clean them
=====================  ======================================================

Compressed pixel data (JPEG, JPEG-LS, JPEG 2000, RLE) is decoded by
pydicom's pixel-data decoders with the installed plugins (pylibjpeg with its
libjpeg / openjpeg / rle plugins, pyjpegls; Pillow for JPEG and JPEG 2000).
Every size bound is checked before a decoder runs, on the data set *and* on
each frame's own codestream header, so a small stream that declares a huge
image (a decompression bomb) is refused for the cost of reading its header.
``ValidatedStudy.pixels`` is ``(rows, columns)`` for one frame and
``(frames, rows, columns)`` for a multi-frame image.

The 128-byte preamble is free-form by the standard, which is what makes
DICOM/executable polyglots possible (a PE "MZ" header, an ELF, a ZIP local
header there and the same file runs or unpacks elsewhere; see CVE-2019-11687).
:func:`neutralise_preamble` zeroes it and says what it found; the data set
after it is untouched, so the file parses identically.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BytesIO
from typing import NamedTuple

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import _get_jpg_parameters
from pydicom.uid import (
    JPEG2000,
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA_TAG = 0x7FE00010
DEFAULT_MAX_FRAMES = 64
DEFAULT_MAX_PIXEL_BYTES = 32 * 1024 * 1024  # decoded, all frames together
ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian: one encapsulated item

#: Transfer syntaxes whose pixel data is stored as is (pydicom inflates the
#: deflated one while reading and swaps the big-endian one while decoding).
NATIVE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
#: Compressed (encapsulated) transfer syntaxes real archives send and the installed plugins decode.
COMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
#: What :func:`validate_dicom` accepts by default; anything else "cannot be decoded here".
ALLOWED_TRANSFER_SYNTAXES: tuple[str, ...] = NATIVE_TRANSFER_SYNTAXES + COMPRESSED_TRANSFER_SYNTAXES
#: The allowed syntaxes whose decoded pixels only approximate the original.
LOSSY_TRANSFER_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000})
_JPEG_FAMILY = frozenset(
    {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless}
)
_J2K_SIZ = b"\xff\x4f\xff\x51"  # start of codestream + image and tile size marker
_J2K_HEADER_SEARCH = 512  # a JP2 wrapper's boxes before the codestream
# JPEG and JPEG-LS end of image, JPEG 2000 end of codestream: some
# decoders return a partial image from a cut stream without an error, so the marker is checked.
_END_OF_IMAGE = b"\xff\xd9"
#: Decoding plugin per syntax where the default one is unsafe on hostile input (the
#: pylibjpeg-rle extension panics, instead of raising, on some corrupt segments).
_DECODING_PLUGIN = {RLELossless: "pydicom"}

#: Image storage SOP classes this pipeline understands, with the modalities each
#: may carry (``None``: any modality; secondary capture is a wrapper).
IMAGE_STORAGE_SOP_CLASSES: dict[str, frozenset[str] | None] = {
    CTImageStorage: frozenset({"CT"}),
    MRImageStorage: frozenset({"MR"}),
    ComputedRadiographyImageStorage: frozenset({"CR"}),
    DigitalXRayImageStorageForPresentation: frozenset({"DX"}),
    DigitalXRayImageStorageForProcessing: frozenset({"DX"}),
    DigitalMammographyXRayImageStorageForPresentation: frozenset({"MG"}),
    DigitalMammographyXRayImageStorageForProcessing: frozenset({"MG"}),
    UltrasoundImageStorage: frozenset({"US"}),
    NuclearMedicineImageStorage: frozenset({"NM"}),
    PositronEmissionTomographyImageStorage: frozenset({"PT"}),
    SecondaryCaptureImageStorage: None,
}

REQUIRED_TAGS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "PatientID",
    "Rows",
    "Columns",
    "BitsAllocated",
    "PixelData",
)

#: Leading bytes of content that has no business inside a DICOM file: what a
#: polyglot hides in the preamble, or a payload in a private binary element.
EXECUTABLE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "pe"),
    (b"\x7fELF", "elf"),
    (b"\xcf\xfa\xed\xfe", "mach-o"),
    (b"\xce\xfa\xed\xfe", "mach-o"),
    (b"\xfe\xed\xfa\xcf", "mach-o"),
    (b"\xfe\xed\xfa\xce", "mach-o"),
    (b"\xca\xfe\xba\xbe", "mach-o"),
    (b"PK\x03\x04", "zip"),
    (b"#!", "script"),
    (b"%PDF", "pdf"),
    (b"\x00asm", "wasm"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW"})


@dataclass(frozen=True)
class Refusal:
    """Why an input was not accepted. ``reason`` is ``"<category>: <detail>"``."""

    reason: str

    @property
    def category(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class ValidatedStudy:
    """One accepted DICOM instance, still carrying its PHI (de-identify next)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    patient_id: str
    sop_class_uid: str
    transfer_syntax: str
    rows: int
    columns: int
    pixels: np.ndarray = field(repr=False, compare=False)
    dataset: Dataset = field(repr=False, compare=False)


class Neutralised(NamedTuple):
    """Result of :func:`neutralise_preamble`."""

    data: bytes
    preamble_nonzero: bool
    #: What the preamble looked like: ``None`` (all zero), ``"pe"``, ``"elf"``,
    #: ``"mach-o"``, ``"zip"``, ``"script"``, ``"pdf"``, ``"wasm"``, ``"tiff"``
    #: or ``"other"``.
    preamble_kind: str | None


def _signature(data: bytes) -> str | None:
    for magic, kind in EXECUTABLE_SIGNATURES:
        if data.startswith(magic):
            return kind
    return None


def _check_magic(data: bytes) -> Refusal | None:
    if not data:
        return Refusal("empty: no bytes")
    if len(data) < PREAMBLE_LENGTH + len(MAGIC) or data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != MAGIC:
        return Refusal("not dicom: no DICM magic after a 128-byte preamble")
    return None


def neutralise_preamble(data: bytes) -> Neutralised | Refusal:
    """Zero the 128-byte preamble and report whether (and what) it held.

    Only the preamble changes, so the data set after it parses identically.
    Input without the ``DICM`` magic at offset 128 is refused, not rewritten.
    """
    refused = _check_magic(data)
    if refused is not None:
        return refused
    preamble = data[:PREAMBLE_LENGTH]
    if not any(preamble):
        return Neutralised(bytes(data), False, None)
    kind = _signature(preamble) or "other"
    return Neutralised(bytes(PREAMBLE_LENGTH) + data[PREAMBLE_LENGTH:], True, kind)


def _raw_end(raw: RawDataElement) -> int | None:
    return None if raw.length == UNDEFINED_LENGTH else raw.value_tell + raw.length


def _truncation(ds: Dataset, data: bytes) -> str | None:
    """The file must end exactly where its last element ends (pydicom stops silently).

    A deflated data set's element positions are in the inflated stream, so
    only its file meta is placed against the file size; each element must
    still hold the bytes it declares (:func:`_deflate_problem` checks the
    stream itself before pydicom inflates it).
    """
    size = len(data)
    meta = getattr(ds, "file_meta", None)
    deflated = meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    group_length = meta.get("FileMetaInformationGroupLength") if meta is not None else None
    # preamble + "DICM" + the group length element (tag, VR, length, UL value) = 144
    end = PREAMBLE_LENGTH + 4 + 12 + int(group_length) if group_length is not None else 0
    if end > size:
        return f"file meta declares {end - PREAMBLE_LENGTH - 4} bytes, file has {size} bytes"
    last_undefined = False
    for container in (meta, ds):
        if container is None:
            continue
        for tag in container.keys():
            raw = container.get_item(tag)
            if not isinstance(raw, RawDataElement):
                continue
            if raw.length != UNDEFINED_LENGTH and raw.value is not None and len(raw.value) < raw.length:
                return f"element {raw.tag} declares {raw.length} bytes, file has {len(raw.value)}"
            raw_end = _raw_end(raw)
            if deflated and container is ds:
                continue
            if raw_end is None:
                last_undefined = True
            elif raw_end >= end:
                end, last_undefined = raw_end, False
    if not deflated and not last_undefined and end != size:
        return f"{size - end} bytes after the last complete element"
    return None


def _deflate_problem(data: bytes, max_inflated: int) -> Refusal | None:
    """A deflated data set must inflate to at most `max_inflated` bytes, with nothing after the stream.

    pydicom inflates the whole data set while reading, before any other
    check: a few megabytes of deflate can declare gigabytes (a zip bomb), so
    the stream is inflated here first, bounded. Only a pad byte to even
    length (pydicom's writer) or the gzip trailer (CRC-32 and length of the
    inflated bytes) that some writers append may follow it.
    """
    fp = BytesIO(data)
    fp.seek(PREAMBLE_LENGTH + len(MAGIC))
    if _read_file_meta_info(fp).get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = inflater.decompress(data[fp.tell() :], max_inflated)
    if inflater.unconsumed_tail:
        return Refusal(f"too large: the deflated data set inflates to more than {max_inflated} bytes")
    if not inflater.eof:
        return Refusal("truncated: the deflate stream ends early")
    gzip_trailer = struct.pack("<2L", zlib.crc32(inflated), len(inflated) & 0xFFFFFFFF)
    if inflater.unused_data not in (b"", b"\x00", gzip_trailer):
        return Refusal(f"truncated: {len(inflater.unused_data)} bytes after the deflated data set")
    return None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    return int(value)


def _embedded_content(elements: Iterable) -> str | None:
    for elem in elements:
        if elem.tag == PIXEL_DATA_TAG:
            continue
        if elem.keyword == "EncapsulatedDocument":
            return "encapsulated document inside an image"
        if elem.VR in _BINARY_VRS and isinstance(elem.value, bytes | bytearray):
            kind = _signature(bytes(elem.value[:8]))
            if kind is not None:
                return f"{kind} signature in element {elem.tag}"
    return None


def _pixel_problem(ds: Dataset, *, allowed_photometric: tuple[str, ...], max_frames: int) -> str | None:
    spp = _int(ds, "SamplesPerPixel", 1)
    photometric = _text(ds, "PhotometricInterpretation")
    bits_allocated = _int(ds, "BitsAllocated")
    bits_stored = _int(ds, "BitsStored", bits_allocated)
    high_bit = _int(ds, "HighBit", (bits_stored or 1) - 1)
    representation = _int(ds, "PixelRepresentation", 0)
    frames = _int(ds, "NumberOfFrames", 1)
    if photometric not in allowed_photometric:
        return f"photometric interpretation {photometric!r} not allowed"
    if spp != 1:
        return f"{spp} samples per pixel, expected 1"
    if bits_allocated not in (8, 16):
        return f"bits allocated {bits_allocated} not supported"
    if bits_stored is None or not 1 <= bits_stored <= bits_allocated or high_bit != bits_stored - 1:
        return f"bits stored {bits_stored} / high bit {high_bit} inconsistent with bits allocated"
    if representation not in (0, 1):
        return f"pixel representation {representation} not supported"
    if frames is None or frames < 1 or frames > max_frames:
        return f"{frames} frames (at most {max_frames})"
    return None


def _hidden_high_bits(pixels: np.ndarray, bits_stored: int, bits_allocated: int, signed: bool) -> bool:
    """True when a decoded pixel sets bits above Bits Stored (an overlay or smuggled data).

    Checked on the values as decoded, before pydicom's own correction would
    mask those bits away: a payload there survives de-identification, which
    copies the pixel data unchanged.
    """
    if bits_stored >= bits_allocated:
        return False
    unsigned = pixels.view(np.uint8 if bits_allocated == 8 else np.uint16)
    upper = unsigned >> bits_stored
    if not signed:
        return bool(upper.any())
    # Signed data may be sign-extended (upper bits all ones for negative values)
    # or stored in Bits Stored bits with zero upper bits.
    ones = (1 << (bits_allocated - bits_stored)) - 1
    sign = (unsigned >> (bits_stored - 1)) & 1
    ok = (upper == 0) | ((upper == ones) & (sign == 1))
    return not bool(ok.all())


def _stored_values(pixels: np.ndarray, bits_stored: int, bits_allocated: int, signed: bool) -> np.ndarray:
    """Signed values stored in fewer than Bits Allocated bits, sign-extended (as pydicom's `pixel_array`)."""
    shift = bits_allocated - bits_stored
    if signed and shift:
        pixels = (pixels << shift) >> shift
    return pixels


def _transfer_syntax_problem(syntax: str, allowed: frozenset[str]) -> str | None:
    """Why pixel data in `syntax` cannot be used here: not supported, no plugin installed, not allowed."""
    name = f"{UID(syntax).name} ({syntax})"
    if syntax not in ALLOWED_TRANSFER_SYNTAXES:
        return f"{name} cannot be decoded here"
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        return f"{name} cannot be decoded here (no decoding plugin installed)"
    if syntax not in allowed:
        return f"{name} not allowed"
    return None


def _items(data: bytes) -> list[bytes] | str:
    """The items of encapsulated pixel data (offset table first), or why they are not well formed."""
    items: list[bytes] = []
    offset = 0
    while offset < len(data):
        if data[offset : offset + 4] != ITEM_TAG or len(data) - offset < 8:
            return f"{len(data) - offset} bytes after item {len(items)} are not an item (garbage)"
        length = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if length == UNDEFINED_LENGTH or offset + 8 + length > len(data):
            return f"item {len(items)} declares {length} bytes, past the end of the pixel data"
        items.append(data[offset + 8 : offset + 8 + length])
        offset += 8 + length
    return items if items else "no offset table item"


def _frames(data: bytes, frames: int) -> list[bytes] | str:
    """The codestream of each frame of encapsulated pixel data, or why the fragments do not add up.

    With an offset table, it must list one offset per frame, each at the start
    of a fragment; without one, a single frame may span many fragments and a
    multi-frame image needs exactly one fragment per frame.
    """
    items = _items(data)
    if isinstance(items, str):
        return items
    table, fragments = items[0], items[1:]
    if not fragments:
        return "no fragments"
    if len(table) % 4:
        return f"offset table of {len(table)} bytes (not a multiple of 4)"
    offsets = list(struct.unpack(f"<{len(table) // 4}L", table))
    if not offsets:
        if frames == 1:
            return [b"".join(fragments)]
        if len(fragments) != frames:
            return f"{len(fragments)} fragments and no offset table for {frames} frames"
        return fragments
    starts = np.cumsum([0] + [8 + len(f) for f in fragments])
    index = {int(start): i for i, start in enumerate(starts[:-1])}
    if len(offsets) != frames or offsets[0] != 0 or any(o not in index for o in offsets):
        return f"offset table {offsets[:8]} does not match {frames} frames in {len(fragments)} fragments"
    bounds = [index[o] for o in offsets] + [len(fragments)]
    if any(b >= e for b, e in zip(bounds, bounds[1:], strict=False)):
        return "offset table is not increasing"
    return [b"".join(fragments[b:e]) for b, e in zip(bounds, bounds[1:], strict=False)]


def _codestream_size(frame: bytes, syntax: str) -> tuple[int, int, int] | None:
    """(rows, columns, components) a JPEG / JPEG-LS / JPEG 2000 codestream's own header declares."""
    if syntax in _JPEG_FAMILY:
        info = _get_jpg_parameters(frame)
        if not info:
            return None
        return info["height"], info["width"], info["components"]
    at = frame.find(_J2K_SIZ, 0, _J2K_HEADER_SEARCH)
    if at < 0 or len(frame) < at + 42:
        return None
    x, y, x0, y0 = struct.unpack(">4L", frame[at + 8 : at + 24])
    (components,) = struct.unpack(">H", frame[at + 40 : at + 42])
    return y - y0, x - x0, components


def _ends_codestream(frame: bytes) -> bool:
    """The frame ends with the end marker, then at most one pad byte (NUL, or JPEG's 0xFF fill)."""
    return frame.endswith(_END_OF_IMAGE) or (
        frame[-3:-1] == _END_OF_IMAGE and frame[-1:] in (b"\x00", b"\xff")
    )


def _rle_problem(frame: bytes, bytes_per_sample: int) -> str | None:
    """An RLE frame header: one segment per byte of a sample, offsets inside the frame."""
    if len(frame) < 64:
        return "RLE header cut short"
    header = struct.unpack("<16L", frame[:64])
    segments = header[0]
    if segments != bytes_per_sample:
        return f"RLE header declares {segments} segments, {bytes_per_sample} expected"
    offsets = header[1 : 1 + segments]
    if offsets[0] != 64:
        return "RLE first segment does not follow the header"
    if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)) or offsets[-1] >= len(frame):
        return "RLE segment offsets outside the frame"
    return None


def _encapsulation_problem(ds: Dataset, syntax: str, rows: int, columns: int, frames: int) -> str | None:
    """Before decoding: the fragments hold `frames` frames and each codestream declares the data set's size.

    This is what makes a decompression bomb cheap to refuse: the decoder
    allocates what the codestream declares, not what the data set does.
    """
    if "ExtendedOffsetTable" in ds:
        return "extended offset table not supported"
    if not ds["PixelData"].is_undefined_length:
        return f"{UID(syntax).name} pixel data is not encapsulated"
    found = _frames(ds.PixelData, frames)
    if isinstance(found, str):
        return found
    for number, frame in enumerate(found, 1):
        if syntax == RLELossless:
            problem = _rle_problem(frame, int(ds.BitsAllocated) // 8)
            if problem:
                return f"frame {number}: {problem}"
            continue
        size = _codestream_size(frame, syntax)
        if size is None:
            return f"frame {number} has no readable {UID(syntax).name} header"
        if size != (rows, columns, 1):
            declared = "x".join(map(str, size))
            return f"frame {number} codestream declares {declared}, data set {rows}x{columns}x1"
        if not _ends_codestream(frame):
            return f"frame {number} codestream has no end marker (truncated)"
    return None


def _native_problem(ds: Dataset, expected_bytes: int) -> Refusal | None:
    """Native pixel data must hold exactly the declared image (plus one pad byte)."""
    actual = len(ds.PixelData)
    if actual < expected_bytes:
        return Refusal(f"truncated: pixel data has {actual} bytes, the declared image needs {expected_bytes}")
    if actual > expected_bytes + (expected_bytes % 2):
        return Refusal(f"pixel data: {actual - expected_bytes} bytes beyond the declared image")
    return None


def _decode(ds: Dataset, syntax: str) -> np.ndarray | Refusal:
    """All frames as decoded by pydicom's decoder for `syntax`, unused high bits left as stored.

    A corrupt stream is refused, whatever the plugin raises: its own
    exception types, or a Rust extension's ``PanicException`` (a
    ``BaseException``, so that it is not swallowed by ``except Exception``).
    """
    plugin = _DECODING_PLUGIN.get(syntax, "")
    try:
        pixels, _ = get_decoder(syntax).as_array(
            ds, raw=True, correct_unused_bits=False, decoding_plugin=plugin
        )
    except BaseException as exc:
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        name = UID(syntax).name
        return Refusal(f"pixel data: does not decode: {name}: {type(exc).__name__}: {str(exc)[:160]}")
    return pixels.astype(pixels.dtype.newbyteorder("="), copy=False)


def validate_dicom(
    data: bytes,
    *,
    allowed_modalities: Iterable[str] = ("CT", "CR", "MR"),
    allowed_transfer_syntaxes: Iterable[str] = ALLOWED_TRANSFER_SYNTAXES,
    allowed_photometric: Iterable[str] = ("MONOCHROME1", "MONOCHROME2"),
    max_bytes: int = DEFAULT_MAX_BYTES,
    min_size: int = 32,
    max_size: int = 1024,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES,
) -> ValidatedStudy | Refusal:
    """Parse and validate one DICOM file; a :class:`Refusal` for anything off.

    Never raises for bad input. The checks run cheapest first, and the size
    bounds (rows, columns, frames, decoded bytes, and each compressed frame's
    own header) are checked before the pixel data is decoded, so a header or
    a codestream that declares a huge image costs nothing.
    """
    if not data:
        return Refusal("empty: no bytes")
    if len(data) > max_bytes:
        return Refusal(f"too large: {len(data)} bytes (at most {max_bytes})")
    refused = _check_magic(data)
    if refused is not None:
        return refused
    try:
        refused = _deflate_problem(data, max_bytes + max_pixel_bytes)
        if refused is not None:
            return refused
        ds = pydicom.dcmread(BytesIO(data), force=False)
    except (struct.error, EOFError) as exc:  # a header cut short
        return Refusal(f"truncated: {type(exc).__name__}: {str(exc)[:200]}")
    except Exception as exc:  # pydicom raises many types on hostile input
        return Refusal(f"malformed: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        return _validate_dataset(
            ds,
            data=data,
            allowed_modalities=frozenset(allowed_modalities),
            allowed_transfer_syntaxes=frozenset(allowed_transfer_syntaxes),
            allowed_photometric=tuple(allowed_photometric),
            min_size=min_size,
            max_size=max_size,
            max_frames=max_frames,
            max_pixel_bytes=max_pixel_bytes,
        )
    except Exception as exc:  # a value that fails to convert, a bad number, ...
        return Refusal(f"malformed: {type(exc).__name__}: {str(exc)[:200]}")


def _validate_dataset(
    ds: Dataset,
    *,
    data: bytes,
    allowed_modalities: frozenset[str],
    allowed_transfer_syntaxes: frozenset[str],
    allowed_photometric: tuple[str, ...],
    min_size: int,
    max_size: int,
    max_frames: int,
    max_pixel_bytes: int,
) -> ValidatedStudy | Refusal:
    truncated = _truncation(ds, data)
    if truncated:
        return Refusal(f"truncated: {truncated}")

    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")).strip() if meta is not None else ""
    if not transfer_syntax:
        return Refusal("malformed: no transfer syntax in the file meta information")
    undecodable = _transfer_syntax_problem(transfer_syntax, allowed_transfer_syntaxes)
    if undecodable:
        return Refusal(f"transfer syntax: {undecodable}")

    # Convert every raw element now (pydicom converts lazily), so a value that
    # does not decode is refused here, not in a later stage.
    elements = list(ds.iterall())

    sop_class = _text(ds, "SOPClassUID")
    if sop_class not in IMAGE_STORAGE_SOP_CLASSES:
        name = UID(sop_class).name if sop_class else "missing"
        return Refusal(f"not an image: SOP class {name} ({sop_class or '-'})")
    if "PixelData" not in ds or not ds.PixelData:
        return Refusal("not an image: no pixel data")
    for keyword in REQUIRED_TAGS:
        if keyword not in ds or ds[keyword].value in (None, "", b""):
            return Refusal(f"missing tag: {keyword}")

    study_uid = _text(ds, "StudyInstanceUID")
    series_uid = _text(ds, "SeriesInstanceUID")
    sop_uid = _text(ds, "SOPInstanceUID")
    for keyword, uid in (
        ("StudyInstanceUID", study_uid),
        ("SeriesInstanceUID", series_uid),
        ("SOPInstanceUID", sop_uid),
    ):
        if not UID(uid).is_valid:
            return Refusal(f"metadata: {keyword} {uid[:80]!r} is not a valid UID")
    if len({study_uid, series_uid, sop_uid}) != 3:
        return Refusal("metadata: study, series and SOP instance UIDs must differ")
    media_class = str(meta.get("MediaStorageSOPClassUID", "")).strip()
    media_instance = str(meta.get("MediaStorageSOPInstanceUID", "")).strip()
    if media_class and media_class != sop_class:
        return Refusal("metadata: file meta SOP class contradicts the data set's")
    if media_instance and media_instance != sop_uid:
        return Refusal("metadata: file meta SOP instance UID contradicts the data set's")

    modality = _text(ds, "Modality")
    expected = IMAGE_STORAGE_SOP_CLASSES[sop_class]
    if expected is not None and modality not in expected:
        return Refusal(f"metadata: modality {modality!r} contradicts SOP class {UID(sop_class).name}")
    if modality not in allowed_modalities:
        return Refusal(f"modality: {modality!r} not allowed")

    rows, columns = int(ds.Rows), int(ds.Columns)
    if not (min_size <= rows <= max_size and min_size <= columns <= max_size):
        return Refusal(f"shape: {rows}x{columns} outside {min_size}..{max_size}")
    problem = _pixel_problem(ds, allowed_photometric=allowed_photometric, max_frames=max_frames)
    if problem:
        return Refusal(f"pixel data: {problem}")

    pixels = _checked_pixels(
        ds,
        transfer_syntax,
        rows=rows,
        columns=columns,
        elements=[*elements, *meta],
        max_pixel_bytes=max_pixel_bytes,
    )
    if isinstance(pixels, Refusal):
        return pixels

    return ValidatedStudy(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        modality=modality,
        patient_id=_text(ds, "PatientID"),
        sop_class_uid=sop_class,
        transfer_syntax=transfer_syntax,
        rows=rows,
        columns=columns,
        pixels=pixels,
        dataset=ds,
    )


def _checked_pixels(
    ds: Dataset, syntax: str, *, rows: int, columns: int, elements: list, max_pixel_bytes: int
) -> np.ndarray | Refusal:
    """The decoded pixels, read-only, after every check that can run before decoding has passed."""
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = _int(ds, "BitsStored", bits_allocated)
    signed = _int(ds, "PixelRepresentation", 0) == 1
    frames = _int(ds, "NumberOfFrames", 1)
    expected_bytes = rows * columns * frames * bits_allocated // 8
    if expected_bytes > max_pixel_bytes:
        return Refusal(
            f"shape: {frames}x{rows}x{columns} decodes to {expected_bytes} bytes (at most {max_pixel_bytes})"
        )
    if UID(syntax).is_encapsulated:
        problem = _encapsulation_problem(ds, syntax, rows, columns, frames)
        if problem:
            return Refusal(f"pixel data: {problem}")
    else:
        refused = _native_problem(ds, expected_bytes)
        if refused:
            return refused

    embedded = _embedded_content(elements)
    if embedded:
        return Refusal(f"embedded content: {embedded}")
    if _text(ds, "BurnedInAnnotation").upper() == "YES":
        return Refusal("phi: burned-in annotation in the pixels")
    if _text(ds, "RecognizableVisualFeatures").upper() == "YES":
        return Refusal("phi: recognisable visual features in the pixels")

    pixels = _decode(ds, syntax)
    if isinstance(pixels, Refusal):
        return pixels
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
    expected_shape = (rows, columns) if frames == 1 else (frames, rows, columns)
    if pixels.shape != expected_shape or pixels.dtype != dtype:
        decoded = f"{pixels.dtype}{list(pixels.shape)}"
        return Refusal(f"pixel data: decoded {decoded}, declared {dtype.name}{list(expected_shape)}")
    if _hidden_high_bits(pixels, bits_stored, bits_allocated, signed):
        return Refusal(f"pixel data: values use bits above bits stored ({bits_stored})")
    pixels = _stored_values(pixels, bits_stored, bits_allocated, signed)
    pixels.flags.writeable = False
    return pixels
