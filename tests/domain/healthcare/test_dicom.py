"""DICOM validation and preamble neutralisation, on studies built here with pydicom."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from domain.healthcare.dicom import (
    Neutralised,
    Refusal,
    ValidatedStudy,
    neutralise_preamble,
    validate_dicom,
)

# pydicom warns (and logs) about every invalid value it reads; these tests feed it many on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage, "CR": ComputedRadiographyImageStorage}


def make_dataset(
    *,
    modality: str = "CT",
    rows: int = 48,
    columns: int = 40,
    patient_id: str = "MRN-0012345",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_class: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    bits: int = 16,
    signed: bool = False,
    seed: int = 0,
) -> Dataset:
    """A small, valid single-frame image of the given modality."""
    rng = np.random.default_rng(seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class or SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = 12 if bits == 16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelSpacing = [0.7, 0.7]
    if bits == 8:
        pixels = rng.integers(0, 256, (rows, columns), dtype=np.uint8)
    elif signed:
        pixels = rng.integers(-1024, 2047, (rows, columns), dtype=np.int16)
    else:
        pixels = rng.integers(0, 4096, (rows, columns), dtype=np.uint16)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def to_bytes(ds: Dataset, *, preamble: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    if preamble is not None:
        ds = pydicom.dataset.FileDataset(None, ds, file_meta=ds.file_meta, preamble=preamble)
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def make_dicom(**kwargs) -> bytes:
    return to_bytes(make_dataset(**kwargs))


def refused(result: object, category: str) -> Refusal:
    assert isinstance(result, Refusal), f"expected a refusal ({category}), got {result!r}"
    assert result.category == category, result.reason
    assert result.reason.startswith(category + ": ")
    return result


# ---------------------------------------------------------------------------
# accepted


@pytest.mark.parametrize("modality", ["CT", "MR", "CR"])
def test_valid_image_is_accepted_with_its_identity_and_pixels(modality: str) -> None:
    ds = make_dataset(modality=modality, patient_id="P-77")
    study = validate_dicom(to_bytes(ds))
    assert isinstance(study, ValidatedStudy), study
    assert study.modality == modality
    assert study.patient_id == "P-77"
    assert (study.study_uid, study.series_uid, study.sop_uid) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    )
    assert study.pixels.shape == (48, 40) and study.pixels.dtype == np.uint16
    assert np.array_equal(study.pixels, np.frombuffer(ds.PixelData, "<u2").reshape(48, 40))
    assert not study.pixels.flags.writeable
    assert study.dataset.PatientName == "Doe^Jane"


def test_implicit_vr_eight_bit_and_signed_images_are_accepted() -> None:
    assert isinstance(validate_dicom(make_dicom(transfer_syntax=ImplicitVRLittleEndian)), ValidatedStudy)
    eight = validate_dicom(make_dicom(bits=8))
    assert isinstance(eight, ValidatedStudy) and eight.pixels.dtype == np.uint8
    signed = validate_dicom(make_dicom(signed=True))
    assert isinstance(signed, ValidatedStudy) and signed.pixels.dtype == np.int16
    assert signed.pixels.min() < 0


# ---------------------------------------------------------------------------
# refused: not DICOM at all


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "category"),
    [
        (b"", "empty"),
        (np.random.default_rng(1).bytes(4096), "not dicom"),
        (b"DICM" + bytes(200), "not dicom"),
        (b"\x00" * 100, "not dicom"),
    ],
    ids=["empty", "random", "magic-at-0", "short"],
)
def test_non_dicom_bytes_are_refused(data: bytes, category: str) -> None:
    refused(validate_dicom(data), category)


def test_png_is_refused_as_not_dicom() -> None:
    refused(validate_dicom(png_bytes()), "not dicom")


def test_file_without_preamble_is_refused() -> None:
    data = make_dicom()
    refused(validate_dicom(data[128:]), "not dicom")


def test_oversized_file_is_refused_before_parsing() -> None:
    refused(validate_dicom(make_dicom(), max_bytes=1000), "too large")


# ---------------------------------------------------------------------------
# refused: truncated or inconsistent


def test_truncated_pixel_data_is_refused() -> None:
    data = make_dicom()
    reason = refused(validate_dicom(data[:-10]), "truncated").reason
    assert "(7FE0,0010)" in reason


def test_every_truncation_is_refused() -> None:
    data = make_dicom(rows=32, columns=32)
    pixel_start = data.rindex(b"\xe0\x7f\x10\x00OW") + 12
    # every cut in the header, every 16th in the pixel data
    cuts = [*range(0, pixel_start + 1), *range(pixel_start + 1, len(data), 16), len(data) - 1]
    for cut in cuts:
        result = validate_dicom(data[:cut])
        assert isinstance(result, Refusal), f"truncated at {cut} of {len(data)} bytes was accepted"
    # A cut inside an element (not exactly between two) is reported as a truncation.
    parsed = pydicom.dcmread(io.BytesIO(data))
    boundaries = {parsed.get_item(tag).value_tell + parsed.get_item(tag).length for tag in parsed.keys()}
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    boundaries.add(meta_end)
    inside = [cut for cut in cuts if cut > meta_end and cut not in boundaries]
    assert len(inside) > 100
    for cut in inside:
        refused(validate_dicom(data[:cut]), "truncated")


def test_pixel_data_shorter_than_declared_image_is_refused() -> None:
    ds = make_dataset()
    ds.Rows = 64  # the pixel data holds 48 rows
    reason = refused(validate_dicom(to_bytes(ds)), "truncated").reason
    assert "pixel data" in reason


def test_excess_pixel_bytes_are_refused() -> None:
    ds = make_dataset()
    ds.PixelData = ds.PixelData + b"MZ" * 64
    refused(validate_dicom(to_bytes(ds)), "pixel data")


def test_data_hidden_in_unused_high_bits_is_refused() -> None:
    ds = make_dataset()
    pixels = np.frombuffer(ds.PixelData, "<u2").copy()
    pixels[::7] |= 0x8000  # bits stored is 12: bit 15 carries a covert payload
    ds.PixelData = pixels.tobytes()
    refused(validate_dicom(to_bytes(ds)), "pixel data")


def test_huge_declared_dimensions_are_refused_without_decoding() -> None:
    ds = make_dataset()
    ds.Rows, ds.Columns = 65535, 65535
    refused(validate_dicom(to_bytes(ds)), "shape")
    ds.Rows, ds.Columns = 8, 8
    refused(validate_dicom(to_bytes(ds)), "shape")


def test_huge_element_length_in_header_is_refused() -> None:
    data = bytearray(make_dicom())
    # the first data-set element after the file meta: (0008,0016) UI, 2-byte length
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    assert data[meta_end : meta_end + 4] == b"\x08\x00\x16\x00"
    data[meta_end + 6 : meta_end + 8] = b"\xff\xff"
    result = validate_dicom(bytes(data))
    assert isinstance(result, Refusal)
    assert result.category in ("truncated", "malformed", "not an image")
    # a 4-byte length field declaring ~4 GiB (OW pixel data)
    data = bytearray(make_dicom())
    at = bytes(data).rindex(b"\xe0\x7f\x10\x00OW\x00\x00")
    data[at + 8 : at + 12] = (0xFFFFFFF0).to_bytes(4, "little")
    refused(validate_dicom(bytes(data)), "truncated")


def test_multi_frame_is_accepted_up_to_max_frames() -> None:
    ds = make_dataset()
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    study = validate_dicom(to_bytes(ds))
    assert isinstance(study, ValidatedStudy) and study.pixels.shape == (2, 48, 40)
    refused(validate_dicom(to_bytes(ds), max_frames=1), "pixel data")


def test_decoded_size_over_the_byte_bound_is_refused() -> None:
    ds = make_dataset()
    ds.NumberOfFrames = 4
    ds.PixelData = ds.PixelData * 4
    refused(validate_dicom(to_bytes(ds), max_pixel_bytes=3 * 48 * 40 * 2), "shape")


def test_colour_image_is_refused() -> None:
    ds = make_dataset(bits=8)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.PixelData = ds.PixelData * 3
    refused(validate_dicom(to_bytes(ds)), "pixel data")


# ---------------------------------------------------------------------------
# refused: not an image, not allowed


def test_encapsulated_pdf_is_not_an_image() -> None:
    ds = make_dataset(modality="DOC", sop_class=EncapsulatedPDFStorage)
    del ds.PixelData
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF\n"
    refused(validate_dicom(to_bytes(ds)), "not an image")


def test_structured_report_is_not_an_image() -> None:
    ds = make_dataset(modality="SR", sop_class=BasicTextSRStorage)
    del ds.PixelData
    refused(validate_dicom(to_bytes(ds)), "not an image")


def test_image_sop_class_without_pixel_data_is_refused() -> None:
    ds = make_dataset()
    del ds.PixelData
    reason = refused(validate_dicom(to_bytes(ds)), "not an image").reason
    assert "pixel data" in reason


def test_compressed_transfer_syntax_the_caller_excludes_is_refused() -> None:
    ds = make_dataset(bits=8, transfer_syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + bytes(64) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    native = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    reason = refused(validate_dicom(to_bytes(ds), allowed_transfer_syntaxes=native), "transfer syntax").reason
    assert "JPEG Baseline" in reason and "not allowed" in reason


def test_disallowed_modality_is_refused() -> None:
    refused(validate_dicom(make_dicom(modality="OT")), "modality")
    refused(validate_dicom(make_dicom(modality="MR"), allowed_modalities=("CT",)), "modality")


def test_modality_that_contradicts_the_sop_class_is_refused() -> None:
    ds = make_dataset(modality="CT")
    ds.Modality = "MR"
    refused(validate_dicom(to_bytes(ds)), "metadata")


def test_file_meta_contradicting_the_data_set_is_refused() -> None:
    ds = make_dataset()
    data = to_bytes(ds)  # pydicom keeps file meta and data set in step when writing: edit the bytes
    uid = ds.SOPInstanceUID.encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    assert data.count(uid) == 2
    refused(validate_dicom(data.replace(uid, other, 1)), "metadata")


def test_invalid_uid_is_refused() -> None:
    ds = make_dataset()
    ds.StudyInstanceUID = "1.2.03.abc"
    refused(validate_dicom(to_bytes(ds)), "metadata")


@pytest.mark.parametrize("keyword", ["PatientID", "StudyInstanceUID", "Modality", "Rows"])
def test_missing_required_tag_is_refused(keyword: str) -> None:
    ds = make_dataset()
    delattr(ds, keyword)
    result = validate_dicom(to_bytes(ds))
    assert isinstance(result, Refusal)
    assert result.category == "missing tag" and keyword in result.reason


def test_executable_in_private_element_is_refused() -> None:
    ds = make_dataset()
    block = ds.private_block(0x0099, "ACME PAYLOAD", create=True)
    block.add_new(0x01, "OB", b"MZ\x90\x00" + bytes(60) + b"This program cannot be run in DOS mode")
    reason = refused(validate_dicom(to_bytes(ds)), "embedded content").reason
    assert "pe" in reason


def test_burned_in_annotation_is_refused() -> None:
    ds = make_dataset()
    ds.BurnedInAnnotation = "YES"
    refused(validate_dicom(to_bytes(ds)), "phi")


# ---------------------------------------------------------------------------
# fuzz: no exception escapes


def test_fuzzed_files_never_raise() -> None:
    rng = np.random.default_rng(7)
    base = make_dicom(rows=32, columns=32)
    inputs = [png_bytes(), bytes(132), b"\x00" * 128 + b"DICM", b"\x00" * 128 + b"DICM" + b"\xff" * 64]
    for _ in range(300):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(128, len(data)))] = int(rng.integers(256))
        inputs.append(bytes(data))
    for _ in range(50):
        inputs.append(b"\x00" * 128 + b"DICM" + rng.bytes(int(rng.integers(0, 400))))
    outcomes = {"accepted": 0, "refused": 0}
    for data in inputs:
        result = validate_dicom(data)
        assert isinstance(result, ValidatedStudy | Refusal)
        if isinstance(result, Refusal):
            assert ":" in result.reason and result.category
            outcomes["refused"] += 1
        else:
            outcomes["accepted"] += 1
    assert outcomes["refused"] > 50  # mutations in the header are caught, not crashed on


# ---------------------------------------------------------------------------
# preamble


def polyglot_preamble(kind: bytes) -> bytes:
    return (kind + b"\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(128))[:128]


@pytest.mark.parametrize(("magic", "kind"), [(b"MZ", "pe"), (b"\x7fELF", "elf"), (b"PK\x03\x04", "zip")])
def test_polyglot_preamble_is_neutralised_and_flagged(magic: bytes, kind: str) -> None:
    ds = make_dataset()
    data = to_bytes(ds, preamble=polyglot_preamble(magic))
    assert data[:2] == magic[:2] and data[128:132] == b"DICM"
    result = neutralise_preamble(data)
    assert isinstance(result, Neutralised)
    assert result.preamble_nonzero is True
    assert result.preamble_kind == kind
    assert result.data[:128] == bytes(128)
    assert result.data[128:] == data[128:]
    before, after = pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(result.data))
    assert before == after and before.file_meta == after.file_meta
    validated_before, validated_after = validate_dicom(data), validate_dicom(result.data)
    assert isinstance(validated_before, ValidatedStudy) and isinstance(validated_after, ValidatedStudy)
    assert validated_before == validated_after
    assert np.array_equal(validated_before.pixels, validated_after.pixels)


def test_clean_preamble_is_left_alone() -> None:
    data = make_dicom()
    result = neutralise_preamble(data)
    assert result == Neutralised(data, False, None)


def test_other_nonzero_preamble_is_flagged() -> None:
    data = to_bytes(make_dataset(), preamble=b"\x01" + bytes(127))
    result = neutralise_preamble(data)
    assert isinstance(result, Neutralised) and result.preamble_nonzero and result.preamble_kind == "other"


@pytest.mark.parametrize("data", [b"", b"MZ" + bytes(300), png_bytes()])
def test_neutralise_refuses_non_dicom(data: bytes) -> None:
    result = neutralise_preamble(data)
    assert isinstance(result, Refusal) and result.category in ("empty", "not dicom")
