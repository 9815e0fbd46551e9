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
``too large``          more bytes than ``max_bytes`` (checked before parsing)
``not dicom``          no ``DICM`` magic after a 128-byte preamble (this also
                       refuses files written without the preamble)
``malformed``          pydicom could not parse the data set or a value in it
``truncated``          the file ends inside an element, or the pixel data is
                       shorter than Rows x Columns x Bits Allocated declare
``transfer syntax``    not one of the allowed (uncompressed) transfer syntaxes
``not an image``       SOP class is not an image storage class (PDF, SR, ...)
                       or the data set carries no Pixel Data
``missing tag``        a required attribute is absent or empty
``metadata``           invalid UIDs, file meta that contradicts the data set,
                       a modality that contradicts the SOP class
``modality``           modality not in ``allowed_modalities``
``shape``              Rows/Columns outside bounds, multi-frame data
``pixel data``         unsupported pixel module values, excess bytes, values
                       outside Bits Stored (data hidden in unused high bits),
                       pixel array that does not decode to the declared shape
``embedded content``   an executable/archive/document hidden in a binary
                       element other than Pixel Data, or an encapsulated
                       document inside an image
``phi``                the pixels themselves carry identity (burned-in
                       annotation, recognisable visual features): tag-level
                       de-identification cannot clean them
=====================  ======================================================

The 128-byte preamble is free-form by the standard, which is what makes
DICOM/executable polyglots possible (a PE "MZ" header, an ELF, a ZIP local
header there and the same file runs or unpacks elsewhere; see CVE-2019-11687).
:func:`neutralise_preamble` zeroes it and says what it found; the data set
after it is untouched, so the file parses identically.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BytesIO
from typing import NamedTuple

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA_TAG = 0x7FE00010

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


def _truncation(ds: Dataset, size: int) -> str | None:
    """The file must end exactly where its last element ends (pydicom stops silently)."""
    meta = getattr(ds, "file_meta", None)
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
            if raw_end is None:
                last_undefined = True
            elif raw_end >= end:
                end, last_undefined = raw_end, False
    if not last_undefined and end != size:
        return f"{size - end} bytes after the last complete element"
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


def _hidden_high_bits(raw: np.ndarray, bits_stored: int, bits_allocated: int, signed: bool) -> bool:
    """True when a pixel sets bits above Bits Stored (an overlay or smuggled data)."""
    if bits_stored >= bits_allocated:
        return False
    unsigned = raw.view(np.uint8 if bits_allocated == 8 else np.uint16)
    upper = unsigned >> bits_stored
    if not signed:
        return bool(upper.any())
    # Signed data may be sign-extended (upper bits all ones for negative values)
    # or stored in Bits Stored bits with zero upper bits.
    ones = (1 << (bits_allocated - bits_stored)) - 1
    sign = (unsigned >> (bits_stored - 1)) & 1
    ok = (upper == 0) | ((upper == ones) & (sign == 1))
    return not bool(ok.all())


def validate_dicom(
    data: bytes,
    *,
    allowed_modalities: Iterable[str] = ("CT", "CR", "MR"),
    allowed_transfer_syntaxes: Iterable[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    allowed_photometric: Iterable[str] = ("MONOCHROME1", "MONOCHROME2"),
    max_bytes: int = DEFAULT_MAX_BYTES,
    min_size: int = 32,
    max_size: int = 1024,
    max_frames: int = 1,
) -> ValidatedStudy | Refusal:
    """Parse and validate one DICOM file; a :class:`Refusal` for anything off.

    Never raises for bad input. The checks run cheapest first, and the size
    bounds are checked before the pixel array is decoded, so a header that
    declares a huge image costs nothing.
    """
    if not data:
        return Refusal("empty: no bytes")
    if len(data) > max_bytes:
        return Refusal(f"too large: {len(data)} bytes (at most {max_bytes})")
    refused = _check_magic(data)
    if refused is not None:
        return refused
    try:
        ds = pydicom.dcmread(BytesIO(data), force=False)
    except (struct.error, EOFError) as exc:  # a header cut short
        return Refusal(f"truncated: {type(exc).__name__}: {str(exc)[:200]}")
    except Exception as exc:  # pydicom raises many types on hostile input
        return Refusal(f"malformed: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        return _validate_dataset(
            ds,
            size=len(data),
            allowed_modalities=frozenset(allowed_modalities),
            allowed_transfer_syntaxes=frozenset(allowed_transfer_syntaxes),
            allowed_photometric=tuple(allowed_photometric),
            min_size=min_size,
            max_size=max_size,
            max_frames=max_frames,
        )
    except Exception as exc:  # a value that fails to convert, a bad number, ...
        return Refusal(f"malformed: {type(exc).__name__}: {str(exc)[:200]}")


def _validate_dataset(
    ds: Dataset,
    *,
    size: int,
    allowed_modalities: frozenset[str],
    allowed_transfer_syntaxes: frozenset[str],
    allowed_photometric: tuple[str, ...],
    min_size: int,
    max_size: int,
    max_frames: int,
) -> ValidatedStudy | Refusal:
    truncated = _truncation(ds, size)
    if truncated:
        return Refusal(f"truncated: {truncated}")

    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")).strip() if meta is not None else ""
    if not transfer_syntax:
        return Refusal("malformed: no transfer syntax in the file meta information")
    if transfer_syntax not in allowed_transfer_syntaxes:
        return Refusal(f"transfer syntax: {UID(transfer_syntax).name} ({transfer_syntax}) not allowed")

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

    bits_allocated = int(ds.BitsAllocated)
    bits_stored = _int(ds, "BitsStored", bits_allocated)
    signed = _int(ds, "PixelRepresentation", 0) == 1
    frames = _int(ds, "NumberOfFrames", 1)
    expected_bytes = rows * columns * frames * bits_allocated // 8
    actual = len(ds.PixelData)
    if actual < expected_bytes:
        return Refusal(f"truncated: pixel data has {actual} bytes, {rows}x{columns} needs {expected_bytes}")
    if actual > expected_bytes + (expected_bytes % 2):
        return Refusal(f"pixel data: {actual - expected_bytes} bytes beyond the declared image")

    embedded = _embedded_content([*elements, *meta])
    if embedded:
        return Refusal(f"embedded content: {embedded}")
    if _text(ds, "BurnedInAnnotation").upper() == "YES":
        return Refusal("phi: burned-in annotation in the pixels")
    if _text(ds, "RecognizableVisualFeatures").upper() == "YES":
        return Refusal("phi: recognisable visual features in the pixels")

    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
    raw = np.frombuffer(ds.PixelData, dtype=dtype, count=rows * columns * frames)
    if _hidden_high_bits(raw, bits_stored, bits_allocated, signed):
        return Refusal(f"pixel data: values use bits above bits stored ({bits_stored})")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        return Refusal(f"pixel data: does not decode: {type(exc).__name__}: {str(exc)[:160]}")
    expected_shape = (rows, columns) if frames == 1 else (frames, rows, columns)
    if pixels.shape != expected_shape or pixels.dtype.kind != dtype.kind or pixels.itemsize != dtype.itemsize:
        decoded = f"{pixels.dtype}{list(pixels.shape)}"
        return Refusal(f"pixel data: decoded {decoded}, declared {dtype.name}{list(expected_shape)}")
    pixels.flags.writeable = False

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
