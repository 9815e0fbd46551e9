"""Compressed and other real-world transfer syntaxes, multi-frame images, and the checks before decoding."""

from __future__ import annotations

import io
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from domain.healthcare.deidentify import deidentify, to_bytes
from domain.healthcare.dicom import (
    ALLOWED_TRANSFER_SYNTAXES,
    LOSSY_TRANSFER_SYNTAXES,
    Refusal,
    ValidatedStudy,
    validate_dicom,
)
from domain.healthcare.images import middle_frame, normalise
from examples.healthcare.studies.corpus import ACCEPTED, varied_corpus
from examples.healthcare.studies.dicom import JLS_NEAR, LOSSY_TOLERANCE, dataset_bytes, dicom_dataset
from examples.healthcare.studies.images import render_pixels
from examples.healthcare.studies.model import CohortConfig, Study
from examples.healthcare.studies.plan import plan_studies

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
ALLOWED_MODALITIES = ("CT", "CR", "MR")


@pytest.fixture(scope="module")
def studies() -> list[Study]:
    return plan_studies(CohortConfig(seed=11, studies=30), 0)


@pytest.fixture(scope="module")
def corpus() -> dict:
    return {f.name: f for f in varied_corpus(7)}


def exported(study: Study, syntax: str, frames: int = 1) -> bytes:
    return dataset_bytes(dicom_dataset(replace(study, transfer_syntax=syntax, frames=frames)))


def accepted(result: object) -> ValidatedStudy:
    assert isinstance(result, ValidatedStudy), result
    return result


def refused(result: object, category: str) -> str:
    assert isinstance(result, Refusal), f"expected a refusal ({category}), got {result!r}"
    assert result.category == category, result.reason
    return result.reason


# ---------------------------------------------------------------- every syntax decodes to the original


@pytest.mark.parametrize("syntax", ALLOWED_TRANSFER_SYNTAXES, ids=lambda s: UID(s).keyword)
def test_every_allowed_syntax_decodes_to_the_original_pixels(studies: list[Study], syntax: str) -> None:
    """Lossless syntaxes give the stored values back exactly; lossy ones within the stated tolerance."""
    study = next(s for s in studies if syntax != JPEGExtended12Bit or s.device.bits_stored <= 12)
    original = render_pixels(study).astype(np.int64)
    bits = study.device.bits_stored
    if syntax == JPEGBaseline8Bit:
        original, bits = original >> (bits - 8), 8
    result = accepted(validate_dicom(exported(study, syntax)))
    assert result.transfer_syntax == syntax
    assert result.pixels.shape == (study.rows, study.rows)
    error = np.abs(result.pixels.astype(np.int64) - original).max()
    if syntax not in LOSSY_TRANSFER_SYNTAXES:
        assert error == 0
    elif syntax == JPEGLSNearLossless:
        assert 0 < error <= JLS_NEAR
    else:
        assert 0 < error <= LOSSY_TOLERANCE[syntax] * 2**bits, (error, 2**bits)


def test_lossy_exports_say_so(studies: list[Study]) -> None:
    for syntax in sorted(LOSSY_TRANSFER_SYNTAXES):
        ds = pydicom.dcmread(io.BytesIO(exported(studies[0], syntax)))
        assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod.startswith("ISO_")
    assert pydicom.dcmread(io.BytesIO(exported(studies[0], JPEGLSLossless))).LossyImageCompression == "00"


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, UID("1.2.840.10008.1.2.4.90")])
def test_signed_pixels_survive_lossless_compression(syntax: str) -> None:
    """Signed CT values (negative HU stored directly) decode to the same signed values."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(-1024, 2047, (40, 48), dtype=np.int16)
    ds = _small_dataset(pixels, bits_stored=12)
    ds.compress(syntax, pixels, generate_instance_uid=False)
    result = accepted(validate_dicom(_to_bytes(ds)))
    assert result.pixels.dtype == np.int16 and np.array_equal(result.pixels, pixels)


# ---------------------------------------------------------------- refused: syntaxes, bombs, encapsulation


@pytest.mark.parametrize("name", ["unsupported-jpeg-2000-part-2-multi-component-image-compression.dcm"])
def test_a_syntax_nothing_here_decodes_is_refused_by_name(corpus: dict, name: str) -> None:
    reason = refused(validate_dicom(corpus[name].data), "transfer syntax")
    assert "JPEG 2000 Part 2 Multi-component" in reason and "1.2.840.10008.1.2.4.93" in reason
    assert "cannot be decoded here" in reason


def test_a_decodable_syntax_outside_the_allowed_list_is_refused(corpus: dict) -> None:
    reason = refused(
        validate_dicom(
            corpus["unsupported-high-throughput-jpeg-2000-image-compression-lossless-only.dcm"].data
        ),
        "transfer syntax",
    )
    assert "High-Throughput JPEG 2000" in reason and "cannot be decoded here" in reason


@pytest.fixture
def decoder_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every call of a pydicom pixel decoder, which then fails (so a test sees whether one ran)."""
    calls: list = []

    def spy(self, *args, **kwargs):
        calls.append(self.UID)
        raise RuntimeError("decoder called")

    monkeypatch.setattr(Decoder, "as_array", spy)
    return calls


@pytest.mark.parametrize(
    ("name", "category"), [("codestream-bomb.dcm", "pixel data"), ("header-bomb.dcm", "shape")]
)
def test_decompression_bombs_are_refused_without_decoding(
    corpus: dict, decoder_calls: list, name: str, category: str
) -> None:
    reason = refused(validate_dicom(corpus[name].data), category)
    assert "60000" in reason and decoder_calls == []
    refused(validate_dicom(corpus["syntax-jpeg-ls-lossless-image-compression.dcm"].data), "pixel data")
    assert decoder_calls == [JPEGLSLossless], "the spy sees a decoder that does run"


def test_deflate_bomb_is_refused_before_pydicom_inflates_it(
    corpus: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("dcmread inflated the bomb"))
    reason = refused(validate_dicom(corpus["deflate-bomb.dcm"].data), "too large")
    assert "inflates to more than" in reason


def test_deflated_file_with_trailing_bytes_is_refused(corpus: dict) -> None:
    data = corpus["syntax-deflated-explicit-vr-little-endian.dcm"].data
    accepted(validate_dicom(data))
    assert "after the deflated data set" in refused(validate_dicom(data + b"MZ\x90\x00"), "truncated")
    assert "ends early" in refused(validate_dicom(data[: len(data) * 2 // 3]), "truncated")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("truncated-stream.dcm", "no end marker"),
        ("corrupt-stream.dcm", "does not decode: JPEG 2000"),
        ("fragment-garbage.dcm", "not an item"),
        ("codestream-bomb.dcm", "codestream declares 60000x60000"),
    ],
)
def test_broken_encapsulated_pixel_data_is_refused(corpus: dict, name: str, words: str) -> None:
    assert words in refused(validate_dicom(corpus[name].data), "pixel data")


def test_fragments_must_match_the_frames(studies: list[Study]) -> None:
    ds = dicom_dataset(replace(studies[0], transfer_syntax=JPEGLSLossless, frames=3))
    accepted(validate_dicom(dataset_bytes(ds)))
    frames = [f for f in pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=3)]
    ds.PixelData = encapsulate(frames[:2], has_bot=True)  # one frame missing
    assert "does not match 3 frames" in refused(validate_dicom(dataset_bytes(ds)), "pixel data")
    ds.PixelData = encapsulate(frames[:2], has_bot=False)
    assert "2 fragments and no offset table for 3 frames" in refused(
        validate_dicom(dataset_bytes(ds)), "pixel data"
    )
    table = struct.pack("<3L", 0, 4, 8)  # offsets that point inside fragments
    ds.PixelData = (
        b"\xfe\xff\x00\xe0" + struct.pack("<L", 12) + table + encapsulate(frames, has_bot=False)[8:]
    )
    assert "offset table" in refused(validate_dicom(dataset_bytes(ds)), "pixel data")


def test_rle_header_must_match_the_pixel_format(studies: list[Study]) -> None:
    ds = dicom_dataset(replace(studies[0], transfer_syntax=RLELossless))
    frame = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
    header = bytearray(frame[:64])
    header[0:4] = struct.pack("<L", 3)  # three segments: 24-bit data in a 16-bit image
    ds.PixelData = encapsulate([bytes(header) + frame[64:]])
    assert "3 segments" in refused(validate_dicom(dataset_bytes(ds)), "pixel data")


def test_data_hidden_in_high_bits_of_a_compressed_stream_is_refused() -> None:
    """Bits above Bits Stored are checked on decoded values: RLE keeps them, de-identification copies them."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 4096, (40, 48), dtype=np.uint16)
    clean = _small_dataset(pixels, bits_stored=12)
    clean.compress(RLELossless, pixels, generate_instance_uid=False)
    accepted(validate_dicom(_to_bytes(clean)))
    payload = pixels.copy()
    payload[::5] |= 0x8000
    ds = _small_dataset(payload, bits_stored=16)
    ds.compress(RLELossless, payload, generate_instance_uid=False)
    ds.BitsStored, ds.HighBit = 12, 11
    assert "bits above bits stored" in refused(validate_dicom(_to_bytes(ds)), "pixel data")


def test_a_decoder_panic_is_a_refusal_and_an_interrupt_is_not(
    corpus: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rust plugins raise ``PanicException`` (a ``BaseException``) on some corrupt streams."""
    panic = type("PanicException", (BaseException,), {})

    def raising(exc: BaseException):
        def as_array(self, *args, **kwargs):
            raise exc

        return as_array

    data = corpus["syntax-rle-lossless.dcm"].data
    monkeypatch.setattr(Decoder, "as_array", raising(panic("index out of bounds")))
    assert "does not decode: RLE Lossless: PanicException" in refused(validate_dicom(data), "pixel data")
    monkeypatch.setattr(Decoder, "as_array", raising(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        validate_dicom(data)


# ---------------------------------------------------------------- multi-frame


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEGLSLossless, DeflatedExplicitVRLittleEndian])
def test_multi_frame_is_accepted_and_reduced_to_its_middle_frame(studies: list[Study], syntax: str) -> None:
    study = studies[1]
    result = accepted(validate_dicom(exported(study, syntax, frames=5)))
    assert result.pixels.shape == (5, study.rows, study.rows)
    assert np.array_equal(middle_frame(result.pixels), render_pixels(study))
    assert not np.array_equal(result.pixels[0], result.pixels[2]), "the other frames are other slices"
    single = accepted(validate_dicom(exported(study, syntax)))
    assert np.array_equal(normalise(result.dataset, result.pixels), normalise(single.dataset, single.pixels))
    refused(validate_dicom(exported(study, syntax, frames=5), max_frames=4), "pixel data")


def test_middle_frame_is_the_frame_at_half_the_count() -> None:
    stack = np.arange(4 * 2 * 2).reshape(4, 2, 2)
    assert np.array_equal(middle_frame(stack), stack[2])
    single = stack[0]
    assert middle_frame(single) is single
    with pytest.raises(ValueError):
        middle_frame(np.zeros((2, 2, 2, 2)))


# ---------------------------------------------------------------- the corpus and pydicom's real files


def test_every_corpus_file_gets_its_outcome(corpus: dict) -> None:
    for name, item in corpus.items():
        result = validate_dicom(item.data)
        got = ACCEPTED if isinstance(result, ValidatedStudy) else result.category
        assert got == item.outcome, (name, result)
    covered = {
        accepted(validate_dicom(f.data)).transfer_syntax
        for f in corpus.values()
        if f.name.startswith("syntax-")
    }
    assert covered == set(ALLOWED_TRANSFER_SYNTAXES)
    assert [f.data for f in varied_corpus(7)] == [f.data for f in corpus.values()], "deterministic"


def _shipped_images() -> list[str]:
    """pydicom's own test files that are images of an allowed modality (read from the installed package)."""
    names = []
    for path in sorted(PYDICOM_TEST_FILES.glob("*.dcm")):
        if path.read_bytes()[128:132] != b"DICM":  # not a Part-10 file
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.get("Modality") in ALLOWED_MODALITIES and "Rows" in ds:
            names.append(path.name)
    return names


SHIPPED_IMAGES = _shipped_images()


@pytest.mark.parametrize("name", SHIPPED_IMAGES)
def test_real_files_are_never_refused_for_their_compression(name: str) -> None:
    result = validate_dicom((PYDICOM_TEST_FILES / name).read_bytes())
    if isinstance(result, Refusal):
        assert result.category != "transfer syntax" and "does not decode" not in result.reason, result.reason


def test_real_compressed_files_decode_to_the_uncompressed_original() -> None:
    """pydicom ships MR_small in several syntaxes: each decodes to the same pixels."""
    assert {"MR_small_RLE.dcm", "693_J2KI.dcm", "MR_small_jpeg_ls_lossless.dcm"} <= set(SHIPPED_IMAGES)
    original = accepted(validate_dicom((PYDICOM_TEST_FILES / "MR_small.dcm").read_bytes())).pixels
    variants = [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
    ]
    for name in variants:
        result = accepted(validate_dicom((PYDICOM_TEST_FILES / name).read_bytes()))
        assert result.transfer_syntax != ExplicitVRLittleEndian and np.array_equal(result.pixels, original), (
            name
        )
    lossy = accepted(validate_dicom((PYDICOM_TEST_FILES / "693_J2KI.dcm").read_bytes()))
    assert lossy.transfer_syntax == JPEG2000 and lossy.pixels.shape == (512, 512)


# ---------------------------------------------------------------- helpers


def _small_dataset(pixels: np.ndarray, *, bits_stored: int) -> pydicom.Dataset:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "P-1"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.PixelData = pixels.tobytes()
    return ds


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_stored_studies_keep_their_syntax_and_train_on_the_image_collection_validated(corpus: dict) -> None:
    """Stored bytes keep the source syntax; training's reader (pixel_array) sees the validated image."""
    for item in corpus.values():
        if item.outcome != ACCEPTED:
            continue
        study = accepted(validate_dicom(item.data))
        stored = to_bytes(deidentify(study.dataset, pseudonym_key=b"k" * 32))
        ds = pydicom.dcmread(io.BytesIO(stored))
        assert ds.file_meta.TransferSyntaxUID == study.transfer_syntax, item.name
        assert np.array_equal(ds.pixel_array, study.pixels), item.name
        assert np.array_equal(normalise(ds, ds.pixel_array), normalise(study.dataset, study.pixels)), (
            item.name
        )
