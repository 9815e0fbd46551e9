"""De-identification of DICOM data sets: the DICOM PS3.15 Annex E basic profile, fail closed.

The Basic Application Level Confidentiality Profile (Table E.1-1) lists
attributes to remove, blank or replace, at any depth. A block-list of that
kind misses whatever it does not name: a vendor's private tag holding the
patient's name, a free-text comment, a new attribute, an identifier in a
nested sequence. So :func:`deidentify` works the other way round. It builds a
*new* data set and copies into it only the top-level attributes in
:data:`KEPT_KEYWORDS` (numeric or code-string values the model and the
pipeline need), after checking that each copied value really is a number or a
code string. Everything else is dropped, which covers every "X" (remove)
action of the profile at every depth: all sequences (so referenced patients,
request attributes, referenced studies and whatever they nest), all private
tags not on :data:`SAFE_PRIVATE_TAGS`, all free text, overlays (60xx),
curves (50xx), comments, times, names, addresses, telephone numbers,
institution and device identity. No sequence is kept: nothing the classifier
or the pipeline reads lives in one, and a kept sequence would need the same
allow-list at every level for no gain.

What is replaced rather than dropped:

* ``PatientID``: ``pseudonym(original, key)`` = ``"anon-"`` + 16 hex of
  HMAC-SHA256, so the studies of one patient still link and nobody without
  the key can recompute or invert it;
* ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID``,
  ``FrameOfReferenceUID`` (and any other non-standard UID that would be
  kept): ``deidentified_uid(original, key)``, a ``2.25.`` UID derived from
  HMAC-SHA256, deterministic, so the study/series/instance hierarchy and
  links between series stay consistent;
* the study, series, acquisition and content dates: shifted (below);
* the file meta information is rebuilt (no source AE titles, no private
  information), with the new SOP instance UID.

Annex E actions "Z" (replace with a zero-length value) for the Type 2
attributes of the image IODs are kept zero-length so the output stays
conformant: :data:`ZERO_LENGTH_KEYWORDS`.

**Dates are shifted, times removed** (Annex E "Retain Longitudinal Temporal
Information with Modified Dates Option", ``LongitudinalTemporalInformation
Modified = MODIFIED``). Every kept date (:data:`SHIFTED_DATE_KEYWORDS`; a
date-time keeps its date only) moves back by :func:`date_offset_days`, 1 to
365 days derived from the patient ID with HMAC-SHA256: the same for every
study of one patient, unrelated between patients, not recomputable without
the key. What it buys: intervals between a patient's studies (follow-up,
time-ordered splits, drift by acquisition date) survive. What it costs,
honestly: anyone who knows one true date of one of the patient's studies
(the patient, a clinician, a leaked appointment letter) recovers the offset
and with it every true date of that patient; the visit pattern itself can
be a quasi-identifier; season and weekday are not preserved. Times of day are
removed (the model needs none, and an unusual hour narrows a search), so
``StudyTime`` is zero-length and date-times are cut to their date; the
timezone offset goes with the rest. Patient ages are computed by the source
on true dates and are unaffected by the shift.

Patient characteristics (sex, age, size, weight) are dropped unless
``retain_patient_characteristics=True`` (Annex E's "Retain Patient
Characteristics Option"); ages over 89 are then capped at ``090Y``
(HIPAA Safe Harbor).

Private tags are dropped unless their (private creator, group, element
offset) is on :data:`SAFE_PRIVATE_TAGS` *and* every value is a number of a
numeric VR; the list is empty by default (the classifier needs no vendor
parameter), so adding one is a reviewed decision.

Pixel data is copied unchanged. Burned-in annotations cannot be removed by
editing tags: validation refuses images that declare them, and
:func:`deidentify` raises rather than pass one on.

**Why not a library.** dicognito (0.19, evaluated) walks every element
recursively and knows more of the profile's keywords than this module names,
but it is a block-list: private tags (but one vendor's) and free text such as
descriptions and comments pass through unchanged; it replaces names,
addresses and ids with realistic fake ones, which the survivor search below
cannot tell from real ones; its randomness is an MD5 of a seed rather than a
keyed MAC; and it edits the data set in place. pydicom's ``deid`` recipes are
also block-lists driven by a recipe file. Our allow-list removes by
construction what those have to enumerate, so it stays.

**The survivor search.** :func:`phi_values` lists the identifying strings of
an original (names and their parts, identifiers, dates and their renderings,
free text, private text, non-registry UIDs) so that collection can search the
de-identified bytes for them and refuse the file if one survived. Numbers are
not identifiers there: numeric geometry and acquisition values (a vendor's
``0.000000``) equal kept values by chance and must not cause refusals.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from resources.tables import parquet_batches

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

#: Dates kept, shifted back by the patient's :func:`date_offset_days` (a DT keeps its date only).
SHIFTED_DATE_KEYWORDS: tuple[str, ...] = (
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "AcquisitionDateTime",
)

#: Type 2 attributes written with a zero-length value (Annex E action "Z");
#: ``StudyDate`` is then overwritten with the shifted date when there is one.
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

#: Private elements that may be kept: (private creator, group, element offset
#: 0x00-0xFF) whose values are numeric acquisition parameters. Kept only when
#: the element's VR is numeric and every value is a number. Empty: the
#: classifier needs no vendor parameter; add an entry only after checking the
#: vendor's conformance statement says it is a number and never an identifier.
SAFE_PRIVATE_TAGS: frozenset[tuple[str, int, int]] = frozenset()

DEIDENTIFICATION_METHOD = "PS3.15 E.1 basic profile; allow-list; HMAC pseudonyms; dates shifted"
#: CID 7050 codes for the profile and options applied.
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option")
RETAIN_PATIENT_CHARACTERISTICS_CODE = ("113108", "DCM", "Retain Patient Characteristics Option")
MAX_DATE_SHIFT_DAYS = 365

#: Text shorter than this is not reported by :func:`phi_values` (too short to search for).
MIN_PHI_LENGTH = 4
PSEUDONYM_PREFIX = "anon-"

#: Identifiers: searched for by :func:`phi_values` even when they are numbers (an MRN is one).
IDENTIFIER_KEYWORDS: frozenset[str] = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "MedicalRecordLocator",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "RequestedProcedureID",
        "PerformedProcedureStepID",
        "ScheduledProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "DeviceSerialNumber",
        "DetectorID",
        "GantryID",
    }
)

#: Attributes whose values identify a person, place, device or event (Annex E).
#: Person names are found by their VR (PN) wherever they are; the PN
#: keywords are listed too so that :func:`deidentification_problems` names them.
PHI_KEYWORDS: frozenset[str] = IDENTIFIER_KEYWORDS | frozenset(
    {
        "PatientName",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "OtherPatientNames",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "CurrentPatientLocation",
        "PatientInstitutionResidence",
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
        "PerformedStationName",
        "PerformedLocation",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ReferringPhysicianName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "RequestingPhysician",
        "RequestingService",
        "ScheduledPerformingPhysicianName",
        "OperatorsName",
        "StudyDescription",
        "SeriesDescription",
        "ImageComments",
        "StudyComments",
        "RequestedProcedureDescription",
        "PerformedProcedureStepDescription",
        "ScheduledProcedureStepDescription",
        "ReasonForStudy",
        "ReasonForTheRequestedProcedure",
        "ProtocolName",
        "AcquisitionComments",
        "DerivationDescription",
        "AdmittingDiagnosesDescription",
        "SourceApplicationEntityTitle",
        "SendingApplicationEntityTitle",
        "ReceivingApplicationEntityTitle",
    }
)

_CODE_STRING = re.compile(r"^[A-Z0-9 _]{0,16}$")
_AGE_STRING = re.compile(r"^(\d{3})([DWMY])$")
_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{4,}")
_NUMERIC_VRS = frozenset({"DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
_UID_TEXT = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_DICOM_DATE = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})")
#: Text :func:`deidentify` writes itself ("anon-" pseudonyms, the method, the codes): never a survivor.
_OWN_TEXT = " ".join(
    (
        PSEUDONYM_PREFIX,
        DEIDENTIFICATION_METHOD,
        *BASIC_PROFILE_CODE,
        *MODIFIED_DATES_CODE,
        *RETAIN_PATIENT_CHARACTERISTICS_CODE,
        "YES MODIFIED",
    )
)
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
    if vr in _NUMERIC_VRS - {"DS", "IS"}:
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


def date_offset_days(patient_id: str, key: bytes) -> int:
    """How many days this patient's dates move back: 1 to :data:`MAX_DATE_SHIFT_DAYS`, keyed.

    The same for every study of one patient (so intervals survive), unrelated
    between patients, and not recomputable without the key.
    """
    _check_key(key)
    return 1 + int.from_bytes(_mac(key, b"date-shift", patient_id)[:8], "big") % MAX_DATE_SHIFT_DAYS


def _shifted_date(value: str, days: int) -> str | None:
    """``value`` (DA, legacy ``YYYY.MM.DD``, or a DT's date part) moved back `days`; None if not a date."""
    match = _DICOM_DATE.match(str(value).strip())
    if not match:
        return None
    try:
        day = date(*(int(g) for g in match.groups()))
        return (day - timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None


def _shifted_dates(dataset: Dataset, patient_id: str, key: bytes) -> dict[str, str]:
    """The :data:`SHIFTED_DATE_KEYWORDS` of `dataset` as they are written: shifted, dates only.

    An element that is empty, multi-valued or not a date is left out (dropped).
    """
    days = date_offset_days(patient_id, key)
    shifted = {}
    for keyword in SHIFTED_DATE_KEYWORDS:
        value = dataset.get(keyword)
        if isinstance(value, str) and value.strip():
            new = _shifted_date(value, days)
            if new:
                shifted[keyword] = new
    return shifted


def _private_creator(dataset: Dataset, elem: DataElement) -> str | None:
    creator = dataset.get((elem.tag.group, elem.tag.element >> 8))
    return str(creator.value).strip() if creator is not None else None


def _safe_private_elements(dataset: Dataset) -> list[tuple[str, DataElement]]:
    """The top-level private elements on :data:`SAFE_PRIVATE_TAGS` whose values are numbers."""
    kept = []
    for elem in dataset:
        if not elem.tag.is_private or elem.tag.is_private_creator:
            continue
        creator = _private_creator(dataset, elem)
        if (creator, elem.tag.group, elem.tag.element & 0xFF) not in SAFE_PRIVATE_TAGS:
            continue
        if elem.VR in _NUMERIC_VRS and _safe_value(elem):
            kept.append((creator, elem))
    return kept


def deidentify(
    dataset: Dataset,
    *,
    pseudonym_key: bytes,
    retain_patient_characteristics: bool = False,
) -> Dataset:
    """A de-identified copy of ``dataset`` (the original is not modified).

    Raises ``ValueError`` for a short key or an image that declares burned-in
    annotation (its pixels carry text no tag edit removes); a data set without
    a PatientID or the instance UIDs gets no replacement for them and no dates
    (validation refuses those).
    """
    _check_key(pseudonym_key)
    if str(dataset.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        raise ValueError("burned-in annotation: the pixels carry identifying text")
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
    for creator, elem in _safe_private_elements(dataset):
        out.private_block(elem.tag.group, creator, create=True).add_new(
            elem.tag.element & 0xFF, elem.VR, elem.value
        )

    for keyword in REPLACED_UIDS:
        original = str(dataset.get(keyword, "") or "").strip()
        if original:
            setattr(out, keyword, deidentified_uid(original, pseudonym_key))
    if "SOPClassUID" not in out and dataset.get("SOPClassUID"):
        out.SOPClassUID = deidentified_uid(str(dataset.SOPClassUID), pseudonym_key)
    patient_id = str(dataset.get("PatientID", "") or "").strip()
    out.PatientID = pseudonym(patient_id, pseudonym_key) if patient_id else ""
    if patient_id:
        for keyword, value in _shifted_dates(dataset, patient_id, pseudonym_key).items():
            setattr(out, keyword, value)

    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = [_code_item(*BASIC_PROFILE_CODE), _code_item(*MODIFIED_DATES_CODE)]
    if retain_patient_characteristics:
        codes.append(_code_item(*RETAIN_PATIENT_CHARACTERISTICS_CODE))
    out.DeidentificationMethodCodeSequence = Sequence(codes)
    out.LongitudinalTemporalInformationModified = "MODIFIED"

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
    """The text in a value: each of several values, printable runs of bytes, DICOM's ``\\`` split."""
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, bytes | bytearray):
        return [part for m in _PRINTABLE_RUN.findall(bytes(value)) for part in m.decode("ascii").split("\\")]
    return [str(value)]


def _person_name_parts(value: str) -> list[str]:
    """A PN value, each of its ``=`` groups, each ``^`` component, and the usual "given family" orders.

    "Family^Given^Middle^Prefix^Suffix", possibly with ideographic and
    phonetic groups after ``=``.
    """
    variants = [value]
    for group in value.split("="):
        parts = [p.strip() for p in group.split("^")]
        named = [p for p in parts if p]
        variants += [group.strip(), *named, " ".join(named)]
        family, given = parts[0], parts[1] if len(parts) > 1 else ""
        if family and given:
            variants += [f"{given} {family}", f"{family}, {given}", f"{family} {given}"]
    return variants


def _date_renderings(value: str) -> list[str]:
    """A DA or DT value and the ways its date is commonly written in text."""
    match = _DICOM_DATE.match(value)
    if not match:
        return [value]
    y, m, d = match.groups()
    return [
        value,
        f"{y}{m}{d}",
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}.{m}.{d}",
        f"{d}/{m}/{y}",
        f"{m}/{d}/{y}",
        f"{d}.{m}.{y}",
        f"{d}-{m}-{y}",
    ]


def _is_number(text: str) -> bool:
    return bool(_NUMBER.match(text))


def _written_by_us(text: str) -> bool:
    """Whether `text` is (whole words of) what :func:`deidentify` writes itself, e.g. "anon"."""
    return bool(whole_word_matches([text], _OWN_TEXT))


def _word_character(text: str, index: int) -> bool:
    return 0 <= index < len(text) and text[index].isascii() and text[index].isalnum()


def _whole(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` stands alone: no letter or digit on either side, and a number
    is not the whole part or the decimals of a longer one (a study id "1615" is not the window
    centre "1615.0")."""
    if _word_character(text, start - 1) or _word_character(text, end):
        return False
    if text[start:end].isdigit():
        if start >= 2 and text[start - 1] == "." and text[start - 2].isdigit():
            return False
        if end + 1 < len(text) and text[end] == "." and text[end + 1].isdigit():
            return False
    return True


def whole_word_matches(values: Iterable[str], text: str) -> set[str]:
    """The places in `text` where one of `values` occurs as whole words, ignoring case, as written there.

    "Whole" means no ASCII letter or digit right before or after, so "MARY"
    is not found inside "PRIMARY" nor a short number inside a UID or a
    decimal. Plain string search (one regular expression per call cost more
    than the rest of de-identification); where lower-casing changes a
    string's length (a few non-Latin letters) each value is searched as a
    regular expression instead.
    """
    values = [v for v in values if v]
    folded = text.lower()
    found = set()
    if len(folded) != len(text) or any(len(v.lower()) != len(v) for v in values):
        for value in values:
            for match in re.finditer(re.escape(value), text, re.IGNORECASE):
                if _whole(text, match.start(), match.end()):
                    found.add(match.group(0))
        return found
    for value in values:
        needle, start = value.lower(), folded.find(value.lower())
        while start != -1:
            end = start + len(needle)
            if _whole(folded, start, end):
                found.add(text[start:end])
            start = folded.find(needle, start + 1)
    return found


def _kept_code_strings(dataset: Dataset) -> set[str]:
    """The code strings (``WHOLE BODY``, ``AXIAL``) the allow-list legitimately copies from `dataset`."""
    codes = set()
    for keyword in KEPT_KEYWORDS + PATIENT_CHARACTERISTICS:
        if keyword in dataset and dataset[keyword].VR == "CS" and _safe_value(dataset[keyword]):
            codes.update(s.strip().upper() for s in _strings(dataset[keyword].value))
    return codes


def phi_values(dataset: Dataset, *, pseudonym_key: bytes | None = None) -> set[str]:
    """The identifying strings in ``dataset``, to search de-identified output for.

    Collected at any depth (sequences included) and in the file meta:

    * every person name (PN, private ones too), each ``=`` group, each ``^``
      component and "given family" orders;
    * every date (DA, DT) and its common renderings; with ``pseudonym_key``,
      minus the dates :func:`deidentify` writes for this patient (a shifted
      date that equals another original date is a coincidence, not a leak);
    * identifiers (:data:`IDENTIFIER_KEYWORDS`), numeric or not;
    * every UID that is not a registry UID;
    * the text of :data:`PHI_KEYWORDS` and of private elements (creators
      included), but not numbers (``0.000000`` in a vendor tag is not an
      identifier, and equals kept geometry by chance), registry UIDs, code
      strings the allow-list copies from this data set (a vendor tag saying
      ``WHOLE BODY`` like BodyPartExamined), or creators on :data:`SAFE_PRIVATE_TAGS`.

    Times are not collected (:func:`deidentify` writes none, and ``000000``
    would match inside kept decimals). Values shorter than
    :data:`MIN_PHI_LENGTH` and text :func:`deidentify` writes itself are left
    out: they cannot be searched for reliably.
    """
    kept_codes = _kept_code_strings(dataset)
    safe_creators = {creator for creator, _, _ in SAFE_PRIVATE_TAGS}
    patient_id = str(dataset.get("PatientID", "") or "").strip()
    written_dates = (
        set(_shifted_dates(dataset, patient_id, pseudonym_key).values())
        if pseudonym_key and patient_id
        else set()
    )
    found: set[str] = set()
    meta = getattr(dataset, "file_meta", None)
    elements = list(dataset.iterall()) + (list(meta) if meta is not None else [])
    for elem in elements:
        if elem.VR == "SQ" or isinstance(elem.value, Sequence):
            continue
        texts = [t.strip(" \x00") for t in _strings(elem.value)]
        if elem.VR == "PN":
            found.update(part for text in texts for part in _person_name_parts(text))
        elif elem.VR in ("DA", "DT"):
            found.update(r for text in texts for r in _date_renderings(text) if r not in written_dates)
        elif elem.keyword in IDENTIFIER_KEYWORDS:
            found.update(texts)
        elif elem.VR == "UI":
            if elem.keyword != "ImplementationClassUID":
                found.update(t for t in texts if not _is_standard_uid(t))
        elif elem.tag.is_private or elem.keyword in PHI_KEYWORDS:
            found.update(
                t
                for t in texts
                if not _is_number(t)
                and t.upper() not in kept_codes
                and t not in safe_creators
                and not (_UID_TEXT.match(t) and _is_standard_uid(t))
            )
    return {v for v in found if len(v) >= MIN_PHI_LENGTH and not _written_by_us(v)}


def deidentification_problems(data: bytes) -> list[str]:
    """Why stored DICOM bytes are not a de-identified file written by `deidentify`; empty when they are.

    Looks at every element at any depth: identifying attributes and person
    names with a value, private elements not on :data:`SAFE_PRIVATE_TAGS`,
    sequences other than the method codes, times, and dates not marked as
    shifted. A date that is marked but was not shifted cannot be told from
    the file alone; collection's survivor search catches that one.
    """
    if any(data[:128]):
        return ["the 128-byte preamble is not zero"]
    try:
        dataset = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    except Exception as exc:  # whatever pydicom raises, the file is not what collection wrote
        return [f"unreadable: {type(exc).__name__}"]
    problems = []
    if dataset.get("PatientIdentityRemoved") != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    safe_private = {id(elem) for _, elem in _safe_private_elements(dataset)}
    safe_creators = {(creator, group) for creator, group, _ in SAFE_PRIVATE_TAGS}
    dated = False
    for elem in dataset.iterall():
        has_value = elem.value not in ("", None) and not isinstance(elem.value, Sequence)
        if elem.tag.is_private:
            creator_ok = (
                elem.tag.is_private_creator and (str(elem.value).strip(), elem.tag.group) in safe_creators
            )
            if not (creator_ok or id(elem) in safe_private):
                problems.append(f"private element {elem.tag}")
        elif elem.VR == "SQ" and elem.keyword != "DeidentificationMethodCodeSequence":
            problems.append(f"sequence {elem.keyword or elem.tag}")
        elif has_value and elem.keyword != "PatientID" and (elem.keyword in PHI_KEYWORDS or elem.VR == "PN"):
            problems.append(f"{elem.keyword or elem.tag} has a value")
        elif has_value and elem.VR == "TM":
            problems.append(f"time {elem.keyword or elem.tag} has a value")
        dated = dated or (has_value and elem.VR in ("DA", "DT"))
    if dated and dataset.get("LongitudinalTemporalInformationModified") != "MODIFIED":
        problems.append("dates are kept but not marked as shifted")
    if not str(dataset.get("PatientID", "")).startswith(PSEUDONYM_PREFIX):
        problems.append("PatientID is not a pseudonym")
    return problems


def stored_study_problems(table: Path, column: str = "dicom", limit: int = 50) -> list[dict[str, str]]:
    """Studies in a Parquet table whose DICOM bytes are not de-identified (at most `limit`)."""
    found: list[dict[str, str]] = []
    for batch in parquet_batches(table, ["study_uid", column], batch_size=256):
        for uid, data in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            problems = deidentification_problems(data)
            if problems:
                found.append({"study_uid": uid, "problems": "; ".join(problems)})
                if len(found) >= limit:
                    return found
    return found
