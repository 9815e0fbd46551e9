"""The study's image as a DICOM Part-10 file, as the hospital's scanner would export it.

`dicom_dataset` writes the image with the file meta and the tags a scanner
and the RIS fill in, protected health information included (standard,
optional, private and free-text tags, the vendor's private block), in the
transfer syntax the archive exports it with (`Study.transfer_syntax`):
uncompressed (little or big endian, deflated) or compressed with the same
libraries real archives' files are decoded with (`pixel_data`). A study with
``frames > 1`` is a multi-frame slab whose middle frame is the study's image.
`dataset_bytes` serialises a dataset as ``pydicom.dcmwrite`` would, faster,
and `dicom_bytes` does both.

Lossy syntaxes change pixel values within a stated bound
(`LOSSY_TOLERANCE`, in stored units; tests hold the codecs to it).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import cache
from io import BytesIO

import imagecodecs
import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels import get_encoder
from pydicom.uid import (
    JPEG2000,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    RLELossless,
)

from examples.healthcare.studies.images import render_pixels
from examples.healthcare.studies.model import Study, random_stream
from examples.healthcare.studies.population import INSTITUTIONS

SOP_CLASSES = {"CT": CTImageStorage, "CR": ComputedRadiographyImageStorage, "MR": MRImageStorage}
CHARACTER_SET = "ISO_IR 100"  # Latin-1: some names carry accents
ISSUER_OF_PATIENT_ID = "RVHS"  # the health system's MRN namespace
# The health system's UID root; UIDs below it are hashes of the seed, size, period and study
# (pydicom ignores `entropy_srcs` without a prefix, so the root is what makes them deterministic).
UID_ROOT = "1.2.826.0.1.3680043.10.1234."

JPEG_QUALITY = 92  # baseline and extended JPEG exports
JLS_NEAR = 2  # JPEG-LS near-lossless: the codec guarantees every pixel within +-JLS_NEAR
J2K_RATIO = 6  # lossy JPEG 2000 exports: compression ratio
#: The largest per-pixel error each lossy syntax may introduce, as a fraction of the
#: stored range (2**BitsStored); JPEG-LS near-lossless is exact: JLS_NEAR stored units.
LOSSY_TOLERANCE = {JPEGBaseline8Bit: 0.04, JPEGExtended12Bit: 0.02, JPEG2000: 0.04, JPEGLSNearLossless: None}
#: LossyImageCompressionMethod of each lossy syntax (PS3.3 C.7.6.1.1.5.1).
_LOSSY_METHOD = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEG2000: "ISO_15444_1",
    JPEGLSNearLossless: "ISO_14495_1",
}
#: Lossless JPEG (process 14) predictor of each syntax: SV1 is predictor 1 by definition.
_JPEG_PREDICTOR = {JPEGLosslessSV1: 1, JPEGLossless: 6}
#: Options of pydicom's own encoders (RLE, JPEG-LS, JPEG 2000).
_PYDICOM_ENCODED = {
    RLELossless: {},
    JPEGLSLossless: {},
    JPEGLSNearLossless: {"jls_error": JLS_NEAR},
    JPEG2000Lossless: {},
    JPEG2000: {"j2k_cr": [J2K_RATIO]},
}
#: Each vendor's private block: creator, then (element, VR, value) with the numeric-looking
#: strings and product text scanners really write there.
VENDOR_BLOCKS = {
    "SIEMENS": (
        "SIEMENS MED",
        ((0x08, "DS", "0.000000"), (0x0C, "LO", "syngo.via VB60A"), (0x10, "DS", "1.000000")),
    ),
    "GE MEDICAL SYSTEMS": (
        "GEMS_ACQU_01",
        ((0x02, "DS", "0.000000"), (0x04, "LO", "GE Healthcare"), (0x1F, "SL", 0)),
    ),
    "Philips": ("Philips Imaging DD 001", ((0x05, "DS", "0.000000"), (0x09, "LO", "Philips MR"))),
    "FUJIFILM Corporation": ("FUJI PHOTO FILM Co., ltd.", ((0x10, "DS", "0.000000"), (0x15, "LO", "FCR"))),
}


def dicom_date(day: date) -> str:
    return f"{day:%Y%m%d}"


def _tm(moment: datetime) -> str:
    return f"{moment:%H%M%S}"


def _window(study: Study, pixels: np.ndarray) -> tuple[list[float] | float, list[float] | float]:
    if study.modality == "CT":
        return [-600.0, 40.0], [1500.0, 400.0]
    low, high = np.percentile(pixels, [1, 99.5])
    return float(round((low + high) / 2)), float(max(1, round(high - low)))


@cache
def _tag_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return tag, dictionary_VR(tag)


def _fill(ds: Dataset, values: dict[str, object]) -> None:
    """Set elements by keyword (as ``ds.Keyword = value`` does, at half the cost per element)."""
    for keyword, value in values.items():
        tag, vr = _tag_vr(keyword)
        ds[tag] = DataElement(tag, vr, value)


def slab(study: Study, pixels: np.ndarray) -> np.ndarray:
    """The study's frames: `pixels` alone, or a slab whose middle frame (``frames // 2``) is `pixels`.

    The neighbouring frames are the same section with fresh scanner noise
    (adjacent thin slices), drawn from the study's own stream.
    """
    if study.frames == 1:
        return pixels
    rng = random_stream(study.seed, "slab")
    top = 2**study.device.bits_stored - 1
    frames = np.repeat(pixels[np.newaxis].astype(np.float64), study.frames, axis=0)
    frames += rng.normal(0, study.noise * study.device.scale / 2, frames.shape)
    frames[study.frames // 2] = pixels
    return np.clip(np.rint(frames), 0, top).astype(np.uint16)


def _encoded_frame(frame: np.ndarray, syntax: str, bits_stored: int) -> bytes:
    if syntax == JPEGBaseline8Bit:
        return imagecodecs.jpeg8_encode(frame, level=JPEG_QUALITY)
    if syntax == JPEGExtended12Bit:
        return imagecodecs.jpeg8_encode(frame, level=JPEG_QUALITY, bitspersample=12)
    if syntax in _JPEG_PREDICTOR:
        return imagecodecs.jpeg8_encode(
            frame, lossless=True, predictor=_JPEG_PREDICTOR[syntax], bitspersample=bits_stored
        )
    return get_encoder(syntax).encode(
        frame,
        rows=frame.shape[0],
        columns=frame.shape[1],
        samples_per_pixel=1,
        bits_allocated=frame.itemsize * 8,
        bits_stored=bits_stored,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        number_of_frames=1,
        **_PYDICOM_ENCODED[syntax],
    )


def pixel_data(frames: np.ndarray, syntax: str, bits_stored: int) -> DataElement:
    """The Pixel Data element of `frames` (``(rows, cols)`` or ``(n, rows, cols)``) in `syntax`.

    Uncompressed syntaxes store the values (byte-swapped for big endian);
    compressed ones encode each frame with imagecodecs (JPEG baseline,
    extended and lossless) or pydicom's encoders (RLE, JPEG-LS, JPEG 2000)
    and encapsulate the frames, one fragment each, with an offset table.
    """
    if not UID(syntax).is_encapsulated:
        order = ">" if syntax == ExplicitVRBigEndian else "<"
        data = frames.astype(frames.dtype.newbyteorder(order)).tobytes()
        return DataElement(0x7FE00010, "OW" if frames.itemsize == 2 else "OB", data)
    stack = frames.reshape(-1, *frames.shape[-2:])
    encoded = [_encoded_frame(np.ascontiguousarray(f), syntax, bits_stored) for f in stack]
    element = DataElement(0x7FE00010, "OB", encapsulate(encoded, has_bot=len(encoded) > 1))
    element.is_undefined_length = True
    return element


def _to_eight_bits(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """8-bit stored values for a baseline JPEG export (the rescale slope restores the range)."""
    return (pixels >> max(bits_stored - 8, 0)).astype(np.uint8)


def _pixel_module(study: Study, pixels: np.ndarray) -> dict[str, object]:
    """Image pixel, modality LUT and lossy-compression attributes, and the Pixel Data, for the export."""
    syntax, bits = study.transfer_syntax, study.device.bits_stored
    center, width = _window(study, pixels)
    slope = 1
    if syntax == JPEGBaseline8Bit:
        slope, bits = 2 ** max(bits - 8, 0), 8
    v: dict[str, object] = {
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": study.rows,
        "Columns": study.rows,
        "BitsAllocated": 8 if bits == 8 else 16,
        "BitsStored": bits,
        "HighBit": bits - 1,
        "PixelRepresentation": 0,
        "WindowCenter": center,
        "WindowWidth": width,
        "BurnedInAnnotation": "NO",
        "LossyImageCompression": "01" if syntax in _LOSSY_METHOD else "00",
    }
    if study.frames > 1:
        v["NumberOfFrames"] = study.frames
    if syntax in _LOSSY_METHOD:
        v["LossyImageCompressionMethod"] = _LOSSY_METHOD[syntax]
    if study.modality == "CT":
        v |= {"RescaleIntercept": "-1024", "RescaleSlope": str(slope), "RescaleType": "HU"}
    elif slope != 1:
        v |= {"RescaleIntercept": "0", "RescaleSlope": str(slope), "RescaleType": "US"}
    return v


def _vendor_block(ds: Dataset, study: Study) -> None:
    """The scanner vendor's private block (numeric-looking strings, product text), for some vendors."""
    block = VENDOR_BLOCKS.get(study.device.manufacturer)
    if block is None:
        return
    creator, elements = block
    private = ds.private_block(0x0019, creator, create=True)
    for element, vr, value in elements:
        private.add_new(element, vr, value)


def dicom_dataset(study: Study, pixels: np.ndarray | None = None) -> Dataset:
    """The study's image as a DICOM dataset with file meta; `pixels` replaces the rendered image.

    `pixels` is the study's one image (``rows x rows`` uint16); a multi-frame
    study carries it as its middle frame.
    """
    pixels = render_pixels(study) if pixels is None else np.ascontiguousarray(pixels, dtype=np.uint16)
    if pixels.shape != (study.rows, study.rows):
        raise ValueError(f"pixels must be {study.rows}x{study.rows}, not {pixels.shape}")
    rng = random_stream(study.seed, "tags")
    patient, device, modality = study.patient, study.device, study.modality
    sop_class = SOP_CLASSES[modality]
    institution, institution_address = INSTITUTIONS[study.institution]
    created = study.time + timedelta(seconds=int(rng.integers(5, 90)))

    meta = FileMetaDataset()
    _fill(
        meta,
        {
            "FileMetaInformationVersion": b"\x00\x01",
            "MediaStorageSOPClassUID": sop_class,
            "MediaStorageSOPInstanceUID": study.sop_uid,
            "TransferSyntaxUID": study.transfer_syntax,
            "ImplementationClassUID": PYDICOM_IMPLEMENTATION_UID,
            "ImplementationVersionName": "RVHS_PACS_2",
            "SourceApplicationEntityTitle": device.station,
        },
    )
    v: dict[str, object] = {
        "SpecificCharacterSet": CHARACTER_SET,
        "ImageType": {"CT": ["ORIGINAL", "PRIMARY", "AXIAL"], "CR": ["ORIGINAL", "PRIMARY"]}.get(
            modality, ["ORIGINAL", "PRIMARY", "M", "ND"]
        ),
        "InstanceCreationDate": dicom_date(created.date()),
        "InstanceCreationTime": _tm(created),
        "SOPClassUID": sop_class,
        "SOPInstanceUID": study.sop_uid,
    }
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        moment = study.time if prefix == "Study" else created
        v[f"{prefix}Date"], v[f"{prefix}Time"] = dicom_date(moment.date()), _tm(moment)
    v |= {
        "AccessionNumber": study.accession,
        "Modality": modality,
        "Manufacturer": device.manufacturer,
        "InstitutionName": institution,
        "InstitutionAddress": institution_address,
        "ReferringPhysicianName": study.referring,
        "StationName": device.station,
        "StudyDescription": study.description,
        "SeriesDescription": {"CT": "Lung 3.0 B70f", "CR": "PA", "MR": "AX T2 FLAIR"}[modality],
        "PerformingPhysicianName": study.radiologist,
        "OperatorsName": study.operator,
        "ManufacturerModelName": device.model,
        "PatientName": patient.dicom_name,
        "PatientID": patient.patient_id,
        "IssuerOfPatientID": ISSUER_OF_PATIENT_ID,
        "PatientBirthDate": dicom_date(patient.birth_date),
        "PatientSex": patient.sex,
        "PatientAge": f"{patient.age_on(study.time.date()):03d}Y",
    }
    if patient.other_id and rng.random() < 0.8:
        v["OtherPatientIDs"] = patient.other_id
    if rng.random() < 0.6:
        male = patient.sex == "M"
        v["PatientSize"] = f"{rng.normal(1.76 if male else 1.63, 0.07):.2f}"
        v["PatientWeight"] = f"{rng.normal(84 if male else 70, 14):.0f}"
    if patient.address and rng.random() < 0.8:
        v["PatientAddress"] = patient.address
    if patient.phone and rng.random() < 0.8:
        v["PatientTelephoneNumbers"] = patient.phone
    v["BodyPartExamined"] = study.body_part
    if modality in ("CT", "MR"):
        v["SliceThickness"] = {"CT": "3.0", "MR": "5.0"}[modality]
    if modality in ("CT", "CR"):
        v["KVP"] = str(int(rng.choice([100, 120]))) if modality == "CT" else "110"
    v |= {
        "DeviceSerialNumber": device.serial,
        "SoftwareVersions": device.software,
        "ProtocolName": study.description,
    }
    if modality == "MR":
        v |= {
            "ScanningSequence": ["SE", "IR"],
            "SequenceVariant": ["SK", "SP", "MP"],
            "MRAcquisitionType": "2D",
            "RepetitionTime": "9000",
            "EchoTime": "81",
            "InversionTime": "2500",
            "MagneticFieldStrength": "3" if device.manufacturer != "Philips" else "1.5",
        }
    if modality == "CR":
        v |= {"ViewPosition": "PA", "PatientOrientation": ["L", "F"]}
    else:
        v["PatientPosition"] = "HFS"
    v |= {
        "StudyInstanceUID": study.study_uid,
        "SeriesInstanceUID": study.series_uid,
        "StudyID": study.study_id,
        "SeriesNumber": "2" if modality == "CT" else "1",
        "InstanceNumber": "1",
    }
    if modality != "CR":
        z = float(rng.uniform(-250, -100)) if modality == "CT" else float(rng.uniform(-20, 40))
        half = study.rows * study.spacing_mm / 2
        v |= {
            "ImagePositionPatient": [f"{-half:.2f}", f"{-half:.2f}", f"{z:.2f}"],
            "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
            "FrameOfReferenceUID": study.frame_uid,
            "PositionReferenceIndicator": "",
            "SliceLocation": f"{z:.2f}",
        }
    if rng.random() < 0.1:  # a technologist's free-text comment, with PHI
        v["ImageComments"] = (
            f"Pt {patient.display_name} ({patient.patient_id}) repositioned, {study.indication}"
        )
    spacing = [f"{study.spacing_mm:.4f}"] * 2
    v["PixelSpacing"] = spacing
    if modality == "CR":
        v["ImagerPixelSpacing"] = spacing
    module = _pixel_module(study, pixels)
    v |= module
    ds = Dataset()
    ds.file_meta = meta
    _fill(ds, v)
    if rng.random() < 0.3:  # the RIS's private block, which repeats identifiers
        block = ds.private_block(0x0011, "RVHS RIS 2.1", create=True)
        block.add_new(0x01, "LO", patient.patient_id)
        block.add_new(0x02, "LO", patient.dicom_name.replace("^", " "))
        block.add_new(0x03, "LO", f"{institution} / {study.referring.split('^')[0]}")
    _vendor_block(ds, study)
    frames = slab(study, pixels)
    if study.transfer_syntax == JPEGBaseline8Bit:
        frames = _to_eight_bits(frames, device.bits_stored)
    ds[0x7FE00010] = pixel_data(frames, study.transfer_syntax, int(module["BitsStored"]))
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """A Part-10 file (preamble, "DICM", file meta, data set) in the file meta's transfer syntax.

    The same bytes as ``pydicom.dcmwrite(..., enforce_file_format=True)``:
    for the little-endian, not deflated syntaxes (uncompressed or
    encapsulated) written here without its defensive copy of the file meta (a
    third of the cost of a small file), and by it for the deflated and
    big-endian ones. The file meta's group length is (re)computed in place.
    """
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax.is_deflated or not syntax.is_little_endian:
        buffer = BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = syntax.is_implicit_VR, True
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    write_dataset(buffer, ds)
    return buffer.getvalue()


def dicom_bytes(study: Study, pixels: np.ndarray | None = None) -> bytes:
    """The study's DICOM Part-10 file; `pixels` (uint16) replaces the rendered image."""
    return dataset_bytes(dicom_dataset(study, pixels))
