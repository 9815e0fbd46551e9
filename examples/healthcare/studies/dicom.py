"""The study's image as a DICOM Part-10 file, as the hospital's scanner would export it.

`dicom_dataset` writes the image with the file meta and the tags a scanner
and the RIS fill in, protected health information included (standard,
optional, private and free-text tags), in the vendor's transfer syntax;
`dataset_bytes` serialises a dataset as ``pydicom.dcmwrite`` would, faster,
and `dicom_bytes` does both.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import cache

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
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


def dicom_dataset(study: Study, pixels: np.ndarray | None = None) -> Dataset:
    """The study's image as a DICOM dataset with file meta; `pixels` replaces the rendered image."""
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
    center, width = _window(study, pixels)
    v |= {
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": study.rows,
        "Columns": study.rows,
        "PixelSpacing": spacing,
        "BitsAllocated": 16,
        "BitsStored": device.bits_stored,
        "HighBit": device.bits_stored - 1,
        "PixelRepresentation": 0,
        "WindowCenter": center,
        "WindowWidth": width,
        "BurnedInAnnotation": "NO",
        "LossyImageCompression": "00",
    }
    if modality == "CR":
        v["ImagerPixelSpacing"] = spacing
    if modality == "CT":
        v |= {"RescaleIntercept": "-1024", "RescaleSlope": "1", "RescaleType": "HU"}
    ds = Dataset()
    ds.file_meta = meta
    _fill(ds, v)
    if rng.random() < 0.3:  # the RIS's private block, which repeats identifiers
        block = ds.private_block(0x0011, "RVHS RIS 2.1", create=True)
        block.add_new(0x01, "LO", patient.patient_id)
        block.add_new(0x02, "LO", patient.dicom_name.replace("^", " "))
        block.add_new(0x03, "LO", f"{institution} / {study.referring.split('^')[0]}")
    ds[0x7FE00010] = DataElement(0x7FE00010, "OW", pixels.tobytes())
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """A Part-10 file (preamble, "DICM", file meta, data set) in the file meta's transfer syntax.

    The same bytes as ``pydicom.dcmwrite(..., enforce_file_format=True)`` for
    the uncompressed little-endian syntaxes used here, without its defensive
    copy of the file meta (a third of the cost of a small file). The file
    meta's group length is (re)computed in place.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        raise ValueError(f"unsupported transfer syntax {syntax}")
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = syntax == ImplicitVRLittleEndian, True
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    write_dataset(buffer, ds)
    return buffer.getvalue()


def dicom_bytes(study: Study, pixels: np.ndarray | None = None) -> bytes:
    """The study's DICOM Part-10 file; `pixels` (uint16) replaces the rendered image."""
    return dataset_bytes(dicom_dataset(study, pixels))
