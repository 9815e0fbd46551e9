"""De-identification of DICOM data sets, in the spirit of DICOM PS3.15 Annex E.

The Basic Application Level Confidentiality Profile lists attributes to
remove, blank or replace. A block-list of that kind misses whatever it does
not name: a vendor's private tag holding the patient's name, a free-text
comment, a new attribute. So :func:`deidentify` works the other way round. It
builds a *new* data set and copies into it only the top-level attributes in
:data:`KEPT_KEYWORDS` (numeric or code-string values the model and the
pipeline need), after checking that each copied value really is a number or a
code string. Everything else is dropped: all private tags, all sequences, all
free text, overlays (60xx), curves (50xx), comments, dates, names, addresses,
telephone numbers, institution and device identity.

What is replaced rather than dropped:

* ``PatientID``: ``pseudonym(original, key)`` = ``"anon-"`` + 16 hex of
  HMAC-SHA256, so the studies of one patient still link and nobody without
  the key can recompute or invert it;
* ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID``,
  ``FrameOfReferenceUID`` (and any other non-standard UID that would be
  kept): ``deidentified_uid(original, key)``, a ``2.25.`` UID derived from
  HMAC-SHA256, deterministic, so the study/series/instance hierarchy and
  links between series stay consistent;
* the file meta information is rebuilt (no source AE titles, no private
  information), with the new SOP instance UID.

Annex E actions "Z" (replace with a zero-length value) for the Type 2
attributes of the image IODs are kept zero-length so the output stays
conformant: :data:`ZERO_LENGTH_KEYWORDS`.

**Dates are removed, not shifted.** A single image classifier needs no
dates, a shift applied with one offset is undone by anyone who knows one
true date, and a per-patient shift keeps the interval pattern, which can
itself identify. ``LongitudinalTemporalInformationModified`` is ``REMOVED``.

Patient characteristics (sex, age, size, weight) are dropped unless
``retain_patient_characteristics=True`` (Annex E's "Retain Patient
Characteristics Option"); ages over 89 are then capped at ``090Y``
(HIPAA Safe Harbor).

Pixel data is copied unchanged. Burned-in annotations cannot be removed by
editing tags: validation refuses images that declare them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from io import BytesIO
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

#: Top-level attributes copied from the original (the allow-list). All are
#: numbers, code strings or the SOP class UID; none can hold free text.
KEPT_KEYWORDS: tuple[str, ...] = (
    # SOP common / general series, image: what kind of image this is
    "SpecificCharacterSet",
    "SOPClassUID",
    "Modality",
    "ImageType",
    "BodyPartExamined",
    "PatientPosition",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "SeriesNumber",
    "InstanceNumber",
    "AcquisitionNumber",
    # geometry
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    # image pixel module
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "PixelAspectRatio",
    # modality LUT / VOI LUT / presentation
    "RescaleIntercept",
    "RescaleSlope",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
    # image quality flags
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "BurnedInAnnotation",
    "RecognizableVisualFeatures",
    "PixelData",
)

#: Kept only with ``retain_patient_characteristics=True``.
PATIENT_CHARACTERISTICS: tuple[str, ...] = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight")

#: UIDs replaced by keyed deterministic UIDs.
REPLACED_UIDS: tuple[str, ...] = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)

#: Type 2 attributes written with a zero-length value (Annex E action "Z").
ZERO_LENGTH_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)

DEIDENTIFICATION_METHOD = "PS3.15 E.1 basic profile; allow-list; HMAC pseudonyms"
#: CID 7050 codes for the profile and option applied.
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
RETAIN_PATIENT_CHARACTERISTICS_CODE = ("113108", "DCM", "Retain Patient Characteristics Option")

#: Text shorter than this is not reported by :func:`phi_values` (too short to search for).
MIN_PHI_LENGTH = 4
PSEUDONYM_PREFIX = "anon-"

#: Attributes whose values identify a person, place, device or event (Annex E).
PHI_KEYWORDS: frozenset[str] = frozenset(
    {
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "OtherPatientIDs",
        "OtherPatientNames",
        "MedicalRecordLocator",
        "MilitaryRank",
        "BranchOfService",
        "Occupation",
        "EthnicGroup",
        "PatientComments",
        "AdditionalPatientHistory",
        "PatientInsurancePlanCodeSequence",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "ReferringPhysicianName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "RequestingPhysician",
        "OperatorsName",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "RequestedProcedureID",
        "PerformedProcedureStepID",
        "ScheduledProcedureStepID",
        "StudyDescription",
        "SeriesDescription",
        "ImageComments",
        "StudyComments",
        "RequestedProcedureDescription",
        "PerformedProcedureStepDescription",
        "SourceApplicationEntityTitle",
        "SendingApplicationEntityTitle",
        "ReceivingApplicationEntityTitle",
    }
)

_CODE_STRING = re.compile(r"^[A-Z0-9 _]{0,16}$")
_AGE_STRING = re.compile(r"^(\d{3})([DWMY])$")
_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{4,}")
_MIN_KEY_BYTES = 16


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"pseudonym key must be at least {_MIN_KEY_BYTES} bytes")


def _mac(key: bytes, purpose: bytes, value: str) -> bytes:
    # The purpose prefix separates domains: a patient ID and a UID with the same
    # text never get related outputs.
    return hmac.new(bytes(key), purpose + b"\x00" + value.strip().encode("utf-8"), hashlib.sha256).digest()


def pseudonym(value: str, key: bytes) -> str:
    """Keyed, deterministic pseudonym for a patient identifier: ``anon-`` + 16 hex."""
    _check_key(key)
    return PSEUDONYM_PREFIX + _mac(key, b"patient-id", value).hex()[:16]


def deidentified_uid(uid: str, key: bytes) -> str:
    """Keyed, deterministic replacement UID (``2.25.<int>``, at most 44 characters).

    The integer is a version-4-formatted UUID built from the HMAC digest, as
    PS3.5 B.2 expects of ``2.25`` UIDs.
    """
    _check_key(key)
    digest = _mac(key, b"uid", uid)
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def _is_standard_uid(value: str) -> bool:
    """A UID from the DICOM registry (a SOP class, transfer syntax, ...): not PHI."""
    return UID(value).name != value


def _safe_value(elem: DataElement) -> bool:
    """Whether a kept element's value is what its VR promises (no smuggled text)."""
    value = elem.value
    if value is None or value == "":
        return True
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    vr = elem.VR
    if vr == "CS":
        return all(_CODE_STRING.match(str(v)) for v in values)
    if vr in ("DS", "IS"):
        return all(_NUMBER.match(str(v)) for v in values)
    if vr == "AS":
        return all(_AGE_STRING.match(str(v)) for v in values)
    if vr == "UI":
        return all(_is_standard_uid(str(v)) for v in values)
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return all(isinstance(v, int | float) for v in values)
    if vr in ("OB", "OW", "OB or OW"):
        return elem.keyword == "PixelData"
    return False


def _capped_age(value: str) -> str:
    match = _AGE_STRING.match(value or "")
    if match and match.group(2) == "Y" and int(match.group(1)) > 89:
        return "090Y"
    return value


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def deidentify(
    dataset: Dataset,
    *,
    pseudonym_key: bytes,
    retain_patient_characteristics: bool = False,
) -> Dataset:
    """A de-identified copy of ``dataset`` (the original is not modified).

    Raises ``ValueError`` for a short key; a data set without a PatientID or
    the instance UIDs gets no replacement for them (validation refuses those).
    """
    _check_key(pseudonym_key)
    kept = KEPT_KEYWORDS + (PATIENT_CHARACTERISTICS if retain_patient_characteristics else ())
    out = Dataset()
    for keyword in ZERO_LENGTH_KEYWORDS:
        setattr(out, keyword, "")
    for keyword in kept:
        if keyword not in dataset:
            continue
        elem = dataset[keyword]
        if not _safe_value(elem):
            continue
        value = elem.value
        if keyword == "PatientAge":
            value = _capped_age(str(value))
        out[elem.tag] = DataElement(elem.tag, elem.VR, value)

    for keyword in REPLACED_UIDS:
        original = str(dataset.get(keyword, "") or "").strip()
        if original:
            setattr(out, keyword, deidentified_uid(original, pseudonym_key))
    if "SOPClassUID" not in out and dataset.get("SOPClassUID"):
        out.SOPClassUID = deidentified_uid(str(dataset.SOPClassUID), pseudonym_key)
    patient_id = str(dataset.get("PatientID", "") or "").strip()
    out.PatientID = pseudonym(patient_id, pseudonym_key) if patient_id else ""

    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = [_code_item(*BASIC_PROFILE_CODE)]
    if retain_patient_characteristics:
        codes.append(_code_item(*RETAIN_PATIENT_CHARACTERISTICS_CODE))
    out.DeidentificationMethodCodeSequence = Sequence(codes)
    out.LongitudinalTemporalInformationModified = "REMOVED"

    source_meta = getattr(dataset, "file_meta", None)
    transfer_syntax = (
        source_meta.get("TransferSyntaxUID") if source_meta is not None else None
    ) or ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    out.file_meta = meta
    return out


def to_bytes(dataset: Dataset) -> bytes:
    """Serialise a (de-identified) data set as a DICOM file with a zero preamble."""
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, bytes | bytearray):
        return [m.decode("ascii") for m in _PRINTABLE_RUN.findall(bytes(value))]
    return [str(value)]


def _person_name_parts(value: str) -> list[str]:
    # "Family^Given^Middle^Prefix^Suffix", possibly with "=" ideographic groups.
    parts = [p.strip() for group in value.split("=") for p in group.split("^")]
    parts = [p for p in parts if p]
    variants = list(parts)
    if len(parts) >= 2:
        variants += [f"{parts[1]} {parts[0]}", f"{parts[0]}, {parts[1]}", f"{parts[0]} {parts[1]}"]
    return variants


def phi_values(dataset: Dataset) -> set[str]:
    """The identifying strings in ``dataset``, to search de-identified output for.

    Collects, at any depth (sequences included) and in the file meta: values
    of :data:`PHI_KEYWORDS`; every person name (and its parts); every date,
    time and date-time; every UID that is not a registry UID; every text or printable
    run in a private element (private creators included). Values shorter than
    :data:`MIN_PHI_LENGTH` are left out: they cannot be searched for reliably.
    """
    found: set[str] = set()
    meta = getattr(dataset, "file_meta", None)
    elements = list(dataset.iterall()) + (list(meta) if meta is not None else [])
    for elem in elements:
        if elem.VR == "SQ" or isinstance(elem.value, Sequence):
            continue
        texts: list[str] = []
        if elem.tag.is_private or elem.keyword in PHI_KEYWORDS or elem.VR in ("PN", "DA", "DT", "TM"):
            texts = _strings(elem.value)
        elif elem.VR == "UI" and elem.keyword != "ImplementationClassUID":
            texts = [t for t in _strings(elem.value) if not _is_standard_uid(t.strip())]
        for text in texts:
            text = text.strip(" \x00")
            candidates = [text]
            if elem.VR == "PN":
                candidates += _person_name_parts(text)
            found.update(c for c in candidates if len(c) >= MIN_PHI_LENGTH)
    return found


def deidentification_problems(data: bytes) -> list[str]:
    """Why stored DICOM bytes are not a de-identified file written by `deidentify`; empty when they are."""
    if any(data[:128]):
        return ["the 128-byte preamble is not zero"]
    try:
        dataset = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    except Exception as exc:  # whatever pydicom raises, the file is not what collection wrote
        return [f"unreadable: {type(exc).__name__}"]
    problems = []
    if dataset.get("PatientIdentityRemoved") != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    for elem in dataset.iterall():
        if elem.tag.is_private:
            problems.append(f"private element {elem.tag}")
        elif elem.keyword in PHI_KEYWORDS and elem.keyword != "PatientID" and elem.value not in ("", None):
            problems.append(f"{elem.keyword} has a value")
    if not str(dataset.get("PatientID", "")).startswith(PSEUDONYM_PREFIX):
        problems.append("PatientID is not a pseudonym")
    return problems


def stored_study_problems(table: Path, column: str = "dicom", limit: int = 50) -> list[dict[str, str]]:
    """Studies in a Parquet table whose DICOM bytes are not de-identified (at most `limit`)."""
    found: list[dict[str, str]] = []
    parquet = pq.ParquetFile(table)
    for batch in parquet.iter_batches(batch_size=256, columns=["study_uid", column]):
        for uid, data in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            problems = deidentification_problems(data)
            if problems:
                found.append({"study_uid": uid, "problems": "; ".join(problems)})
                if len(found) >= limit:
                    return found
    return found
