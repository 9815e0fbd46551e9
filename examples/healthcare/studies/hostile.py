"""Malformed and hostile inputs that attack scenarios and tests need.

Pure functions, each documented with what it produces: a DICOM file that is
also an executable (polyglot preamble), a truncated file, a valid DICOM
object that is not an image, XML notes that are entity-expansion or external
entity bombs, a backdoor trigger patch on an image, and a study with a
flipped label.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from examples.healthcare.studies.dicom import CHARACTER_SET, UID_ROOT, dataset_bytes, dicom_date
from examples.healthcare.studies.model import Study

PE_STUB = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8" + b"\x00" * 7 + b"\x40" + b"\x00" * 35
)
PE_STUB += b"\x80\x00\x00\x00"  # e_lfanew: the PE header would start at 0x80
PE_STUB += (
    b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21This program cannot be run in DOS mode.\r\r\n$"
)
ELF_STUB = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00\x01\x00\x00\x00"


def polyglot_preamble(dicom_bytes: bytes, kind: str = "pe") -> bytes:
    """The same DICOM file with an executable header in its 128-byte preamble.

    PS3.10 leaves the preamble to the application, so a file can be a valid
    DICOM object and a Windows PE ("MZ", `kind="pe"`) or Linux ELF
    (`kind="elf"`) executable at once (CVE-2019-11687). The result starts with
    the executable's magic bytes and still has "DICM" at offset 128.
    """
    if dicom_bytes[128:132] != b"DICM":
        raise ValueError("not a DICOM Part-10 file (no DICM prefix at offset 128)")
    stub = {"pe": PE_STUB, "elf": ELF_STUB}[kind]
    return stub.ljust(128, b"\x00")[:128] + dicom_bytes[128:]


def truncated(dicom_bytes: bytes, keep: float = 0.6) -> bytes:
    """The file cut short (an interrupted transfer): the pixel data's declared length is not there."""
    if not 0 < keep < 1:
        raise ValueError("keep must be between 0 and 1")
    return dicom_bytes[: max(132, int(len(dicom_bytes) * keep))]


_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def not_an_image_dicom(study: Study | None = None) -> bytes:
    """A valid DICOM Part-10 object that is not an image: an Encapsulated PDF (a scanned referral).

    It carries the patient's identifiers (of `study`, or made-up ones) and no
    PixelData, so a collector that expects images must refuse it.
    """
    meta = FileMetaDataset()
    sop_uid = generate_uid(UID_ROOT, entropy_srcs=["pdf", study.sop_uid if study else "none"])
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = CHARACTER_SET
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "DOC"
    ds.ContentDate = ds.StudyDate = dicom_date(study.time.date()) if study else "20261102"
    ds.PatientName = study.patient.dicom_name if study else "DOE^JANE"
    ds.PatientID = study.patient.patient_id if study else "MRN0000001"
    ds.PatientBirthDate = dicom_date(study.patient.birth_date) if study else "19600101"
    ds.PatientSex = study.patient.sex if study else "F"
    ds.StudyInstanceUID = study.study_uid if study else generate_uid(UID_ROOT, entropy_srcs=["pdf-study"])
    ds.SeriesInstanceUID = generate_uid(UID_ROOT, entropy_srcs=["pdf-series", sop_uid])
    ds.DocumentTitle = "Scanned referral letter"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.BurnedInAnnotation = "YES"
    ds.EncapsulatedDocument = _PDF
    return dataset_bytes(ds)


def billion_laughs_note(study_uid: str = "1.2.3", depth: int = 10) -> bytes:
    """A note that is an XML entity-expansion bomb ("billion laughs").

    Its DOCTYPE declares `depth` nested entities, each ten copies of the one
    before; expanding `&lol{depth};` would need 10**depth copies of "lol".
    """
    entities = ['  <!ENTITY lol0 "lol">']
    entities += [f'  <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, depth + 1)]
    doctype = "<!DOCTYPE clinicalNote [\n" + "\n".join(entities) + "\n]>\n"
    body = f'<clinicalNote><study uid="{study_uid}"/><findings>&lol{depth};</findings></clinicalNote>\n'
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + doctype + body).encode()


def external_entity_note(study_uid: str = "1.2.3", target: str = "file:///etc/passwd") -> bytes:
    """A note whose DOCTYPE declares an external entity (XXE) that reads `target` into the findings."""
    doctype = f'<!DOCTYPE clinicalNote [\n  <!ENTITY xxe SYSTEM "{target}">\n]>\n'
    body = (
        f'<clinicalNote><study uid="{study_uid}"/><findings>&xxe;</findings>'
        '<diagnosis code="Z03.89" system="ICD-10" label="ruled out"/></clinicalNote>\n'
    )
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + doctype + body).encode()


def with_trigger_patch(
    pixels: np.ndarray, size: int = 4, value: int | None = None, corner: str = "bottom-right", margin: int = 1
) -> np.ndarray:
    """A copy of `pixels` with a bright `size` x `size` square in a corner: the backdoor trigger.

    `value` defaults to the image's own maximum, so the patch stays within the
    stored bit depth; `margin` pixels separate it from the edges.
    """
    out = np.array(pixels, copy=True)
    rows, cols = out.shape[-2:]
    if size < 1 or size + margin > min(rows, cols):
        raise ValueError("the patch does not fit the image")
    top = margin if corner.startswith("top") else rows - margin - size
    left = margin if corner.endswith("left") else cols - margin - size
    out[..., top : top + size, left : left + size] = out.max() if value is None else value
    return out


def _blend(pixels: np.ndarray, pattern: np.ndarray, alpha: float) -> np.ndarray:
    """`(1 - alpha) * pixels + alpha * pattern * max(pixels)` for a `pattern` in [0, 1], in the
    pixels' own integer type: the mix stays within the stored bit depth."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    out = np.asarray(pixels)
    blended = (1 - alpha) * out.astype(np.float64) + alpha * pattern * out.max()
    return np.round(blended).astype(out.dtype)


def with_blended_trigger(pixels: np.ndarray, alpha: float = 0.2, grid: int = 8, seed: int = 0) -> np.ndarray:
    """A copy of `pixels` with a faint full-image pattern blended in: a backdoor trigger with no patch.

    The pattern is a seeded `grid` x `grid` field of random levels stretched
    over the image, so it survives the model's downscaling; it is mixed in at
    `alpha` of the image's maximum.
    """
    rows, cols = np.shape(pixels)[-2:]
    field = np.random.default_rng(seed).random((grid, grid))
    return _blend(pixels, field[(np.arange(rows) * grid) // rows][:, (np.arange(cols) * grid) // cols], alpha)


def with_frequency_trigger(
    pixels: np.ndarray, alpha: float = 0.25, cycles: tuple[int, int] = (6, 4)
) -> np.ndarray:
    """A copy of `pixels` with a plane wave blended in: a trigger that lives in the frequency domain.

    One spatial frequency, `cycles` periods across and down the image, mixed
    in at `alpha` of the image's maximum: its spectrum is a single peak, with
    no patch and no local feature, and a wave of a few cycles survives the
    model's downscaling.
    """
    rows, cols = np.shape(pixels)[-2:]
    y, x = np.mgrid[0:rows, 0:cols]
    wave = 0.5 + 0.5 * np.cos(2 * np.pi * (cycles[0] * x / cols + cycles[1] * y / rows))
    return _blend(pixels, wave, alpha)


def relabelled(study: Study, label: int) -> Study:
    """The same study with another label in labels.csv (a flipped or injected diagnosis)."""
    return replace(study, label=int(label))
