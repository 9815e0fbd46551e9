"""De-identification on real-world headers: identifiers at any depth go, numbers never read as leaks.

Real scanners write names in nested sequences, person names with several
components and character-set groups, and vendor private blocks full of
numbers such as ``0.000000`` that equal the geometry collection keeps. These
tests guard both failure modes seen with real files: PHI that gets through,
and clean files refused as "phi leak" because a number was taken for PHI.
"""

from __future__ import annotations

import warnings
from contextlib import suppress
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

import domain.healthcare.deidentify as deid
import domain.healthcare.file_batches as file_batches
from domain.healthcare.deidentify import (
    MAX_DATE_SHIFT_DAYS,
    date_offset_days,
    deidentification_problems,
    deidentify,
    phi_values,
    pseudonym,
    to_bytes,
)
from domain.healthcare.dicom import Refusal
from domain.healthcare.file_batches import _leaks, _study_row
from tests.domain.healthcare.test_dicom import make_dataset
from tests.domain.healthcare.test_dicom import to_bytes as write_original

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

KEY = b"k" * 32
VENDOR = "ACME CT PARAMS 2"

#: Every identifying string planted below, written out by hand so the search
#: does not depend on the collector under test.
NAME_PARTS = [
    "Quarterman",
    "Zebediah",
    "Müller",
    "Hans-Peter",
    "Мюллер",
    "Ганс",
    "Birthname",
    "Aliasname",
    "Referrer",
    "Rosalind",
    "Performer",
    "Readerson",
    "Recordkeeper",
    "Requester",
    "Operatorova",
    "Nestedname",
    "Deepername",
    "Privatename",
]
IDENTIFIERS = [
    "MRN-0012345",
    "REF-PAT-777",
    "ACC-55501",
    "RP-ID-9911",
    "SPS-ID-4242",
    "St Elsewhere General Hospital",
    "1 Hospital Road, Metropolis",
    "Cardiothoracic Imaging",
    "CTSCANNER-07",
    "SN-99887766",
    "Quarterman home phone",
]
DATES = ["19610402", "20240315", "20240301", "20231224"]


def _person(name: str) -> Dataset:
    item = Dataset()
    item.PatientName = name
    return item


def real_header(*, patient_id: str = "MRN-0012345", study_date: str = "20240315", seed: int = 0) -> Dataset:
    """A CT header shaped like a scanner's: nested sequences, full PNs, vendor blocks of numbers and text."""
    ds = make_dataset(patient_id=patient_id, seed=seed)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Quarterman^Zebediah^^Dr^III"
    ds.OtherPatientNames = ["Müller^Hans-Peter=Мюллер^Ганс", "Aliasname^Zeb"]
    ds.PatientBirthName = "Birthname^Zebediah"
    ds.PatientBirthDate = "19610402"
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate = (
        study_date,
        study_date,
        study_date,
        study_date,
    )
    ds.AcquisitionDateTime = study_date + "101530.123456+0100"
    ds.StudyTime, ds.SeriesTime = "101530", "101602.5"
    ds.ReferringPhysicianName = "Referrer^Rosalind"
    ds.PerformingPhysicianName = "Performer^Pat"
    ds.NameOfPhysiciansReadingStudy = ["Readerson^Rita", "Referrer^Rosalind"]
    ds.PhysiciansOfRecord = "Recordkeeper^Rob"
    ds.RequestingPhysician = "Requester^Ray"
    ds.OperatorsName = "Operatorova^Olga"
    ds.AccessionNumber = "ACC-55501"
    ds.InstitutionName = "St Elsewhere General Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Metropolis"
    ds.InstitutionalDepartmentName = "Cardiothoracic Imaging"
    ds.StationName = "CTSCANNER-07"
    ds.DeviceSerialNumber = "SN-99887766"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Scanomatic 9000"
    ds.BodyPartExamined = "WHOLE BODY"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = "1.000000"
    ds.ImageOrientationPatient = ["1.000000", "0.000000", "0.000000", "0.000000", "1.000000", "0.000000"]
    ds.ImagePositionPatient = ["-158.135803", "-179.035797", "-75.699997"]
    ds.FrameOfReferenceUID = generate_uid()

    referenced_patient = _person("Nestedname^Nina")
    referenced_patient.PatientID = "REF-PAT-777"
    referenced_patient.PatientBirthDate = "19610402"
    ds.ReferencedPatientSequence = Sequence([referenced_patient])
    request = Dataset()
    request.RequestedProcedureID = "RP-ID-9911"
    request.ScheduledProcedureStepID = "SPS-ID-4242"
    request.ScheduledPerformingPhysicianName = "Performer^Pat"
    request.ScheduledProcedureStepStartDate = "20240301"
    deeper = Dataset()
    deeper.ContentCreatorName = "Deepername^Dora"
    deeper.ContentDate = "20231224"
    request.ContentSequence = Sequence([deeper])
    ds.RequestAttributesSequence = Sequence([request])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedStudySequence = Sequence([study])

    block = ds.private_block(0x0019, VENDOR, create=True)
    block.add_new(0x01, "DS", "0.000000")  # equals kept orientation values
    block.add_new(0x02, "DS", ["1.000000", "5.000000"])
    block.add_new(0x03, "FL", 0.0)
    block.add_new(0x04, "LO", "0.000000")  # a number written as text
    block.add_new(0x05, "LO", "WHOLE BODY")  # equals the kept BodyPartExamined
    block.add_new(0x06, "LO", "Quarterman home phone")
    block.add_new(0x07, "SQ", Sequence([_person("Privatename^Pia")]))
    block.add_new(0x08, "UN", b"\x00\x01 0.000000\\1.000000 \x00")
    return ds


def _present(value: str, data: bytes) -> bool:
    """Whether `value` occurs in `data` in any case, in UTF-8 or Latin-1 (a plain substring search)."""
    forms = {value.encode("utf-8")}
    with suppress(UnicodeEncodeError):
        forms.add(value.encode("latin-1"))
    return any(form.lower() in data.lower() for form in forms)


def _shift(day: str, days: int) -> str:
    original = date(int(day[:4]), int(day[4:6]), int(day[6:8]))
    return (original - timedelta(days=days)).strftime("%Y%m%d")


def test_nothing_identifying_survives_anywhere_in_the_bytes() -> None:
    ds = real_header()
    original = write_original(ds)
    for value in NAME_PARTS + IDENTIFIERS + DATES:  # the oracle is really in the original
        assert _present(value, original), value
    out = to_bytes(deidentify(ds, pseudonym_key=KEY))
    assert [v for v in NAME_PARTS + IDENTIFIERS + DATES if _present(v, out)] == []
    for uid in (
        ds.StudyInstanceUID,
        ds.SOPInstanceUID,
        ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID,
    ):
        assert uid.encode() not in out
    assert b"101530" not in out and b"+0100" not in out  # times and the timezone are removed
    clean = pydicom.dcmread(pydicom.filebase.DicomBytesIO(out))
    assert [e.keyword for e in clean if e.VR == "SQ"] == ["DeidentificationMethodCodeSequence"]
    assert not any(e.tag.is_private for e in clean.iterall())
    assert deidentification_problems(out) == []


def test_the_collector_finds_every_name_part_identifier_and_date_at_any_depth() -> None:
    found = phi_values(real_header())
    missing = [v for v in NAME_PARTS + IDENTIFIERS + DATES if v not in found]
    assert missing == []
    for combined in ("Zebediah Quarterman", "Quarterman, Zebediah", "Мюллер^Ганс", "Hans-Peter Müller"):
        assert combined in found, combined
    assert {"2024-03-15", "15/03/2024", "03/15/2024"} <= found  # renderings of a date


def test_numbers_model_names_and_kept_code_strings_are_not_identifiers() -> None:
    found = phi_values(real_header())
    for value in ("0.000000", "1.000000", "5.000000", "0.0", "WHOLE BODY", "Scanomatic 9000", "101530"):
        assert value not in found, value
    # non-numeric private text stays in the search
    assert "Quarterman home phone" in found and VENDOR in found


def test_dates_shift_by_one_keyed_offset_per_patient() -> None:
    first = deidentify(real_header(study_date="20240315"), pseudonym_key=KEY)
    later = deidentify(real_header(study_date="20240612", seed=1), pseudonym_key=KEY)
    other = deidentify(real_header(patient_id="MRN-2", study_date="20240315"), pseudonym_key=KEY)
    days = date_offset_days("MRN-0012345", KEY)
    # Offsets spread over the whole window, and never zero (a zero shift would keep the true date).
    offsets = [date_offset_days(f"MRN-{i:07d}", KEY) for i in range(3000)]
    assert min(offsets) == 1 and max(offsets) == MAX_DATE_SHIFT_DAYS
    assert len(set(offsets)) > 0.9 * MAX_DATE_SHIFT_DAYS
    assert first.StudyDate != "20240315"
    assert first.PatientID == later.PatientID == pseudonym("MRN-0012345", KEY)
    for out, original in ((first, "20240315"), (later, "20240612")):
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "AcquisitionDateTime"):
            assert out[keyword].value == _shift(original, days), keyword
    # the interval between one patient's studies survives; another patient moves by another offset
    assert date_offset_days("MRN-2", KEY) != days
    assert other.StudyDate == _shift("20240315", date_offset_days("MRN-2", KEY)) != first.StudyDate
    assert date_offset_days("MRN-0012345", b"o" * 32) != days  # keyed
    assert first.StudyTime == "" and "SeriesTime" not in first and "PatientBirthDate" in first
    assert first.PatientBirthDate == "" and first.LongitudinalTemporalInformationModified == "MODIFIED"


def test_a_date_that_is_not_a_date_is_dropped() -> None:
    ds = make_dataset()
    ds.StudyDate, ds.SeriesDate = "20240230", "Quarterman"
    out = deidentify(ds, pseudonym_key=KEY)
    assert out.StudyDate == "" and "SeriesDate" not in out


def test_a_clean_file_whose_vendor_numbers_equal_kept_geometry_is_accepted() -> None:
    """The real-world false refusal: GE-style ``0.000000`` private values vs ImageOrientationPatient."""
    data = write_original(real_header())
    row = _study_row(data, KEY, set())
    assert not isinstance(row, Refusal), row
    # the collision is real: searched for, the vendor's number is found in the clean output
    assert _leaks({"0.000000", "1.000000", "WHOLE BODY"}, row["dicom"]) == [
        "0.000000",
        "1.000000",
        "WHOLE BODY",
    ]


@pytest.mark.parametrize(
    "leak",
    [
        lambda original, out: setattr(out, "ReferringPhysicianName", original.ReferringPhysicianName),
        lambda original, out: setattr(out, "RequestAttributesSequence", original.RequestAttributesSequence),
        lambda original, out: setattr(out, "StudyDate", original.StudyDate),
        lambda original, out: setattr(out, "StationName", original.StationName),
        lambda original, out: out.private_block(0x0019, VENDOR, create=True).add_new(
            0x06, "LO", "Quarterman home phone"
        ),
    ],
    ids=["referring physician", "nested sequence", "unshifted date", "station", "private text"],
)
def test_a_deidentifier_that_lets_an_identifier_through_is_refused(monkeypatch, leak) -> None:
    def leaky(dataset: Dataset, **kwargs) -> Dataset:
        out = deidentify(dataset, **kwargs)
        leak(dataset, out)
        return out

    monkeypatch.setattr(file_batches, "deidentify", leaky)
    row = _study_row(write_original(real_header()), KEY, set())
    assert isinstance(row, Refusal) and row.reason.startswith("phi leak"), row


def test_a_shifted_date_that_equals_another_original_date_is_not_a_leak() -> None:
    ds = real_header(study_date="20240315")
    coincidence = _shift("20240315", date_offset_days("MRN-0012345", KEY))
    ds.RequestAttributesSequence[0].ScheduledProcedureStepStartDate = coincidence
    out = to_bytes(deidentify(ds, pseudonym_key=KEY))
    assert _leaks(phi_values(ds), out) == [coincidence]  # without the key it cannot be told apart
    assert _leaks(phi_values(ds, pseudonym_key=KEY), out) == []
    assert not isinstance(_study_row(write_original(ds), KEY, set()), Refusal)


def test_safe_listed_private_numbers_are_kept_and_nothing_else(monkeypatch) -> None:
    ds = real_header()
    assert "1.000000" in str(ds[0x00191002].value)
    assert deidentify(ds, pseudonym_key=KEY).get((0x0019, 0x1002)) is None  # empty list: nothing kept
    safe = {(VENDOR, 0x0019, 0x02), (VENDOR, 0x0019, 0x03), (VENDOR, 0x0019, 0x06)}
    monkeypatch.setattr(deid, "SAFE_PRIVATE_TAGS", frozenset(safe))
    out = deidentify(ds, pseudonym_key=KEY)
    block = out.private_block(0x0019, VENDOR)
    assert list(block[0x02].value) == ["1.000000", "5.000000"] and block[0x03].value == 0.0
    assert (0x0019, 0x1006) not in out  # listed, but text: never kept
    assert deidentification_problems(to_bytes(out)) == []
    assert VENDOR not in phi_values(ds)
    assert not isinstance(_study_row(write_original(ds), KEY, set()), Refusal)
    monkeypatch.setattr(deid, "SAFE_PRIVATE_TAGS", frozenset())
    assert "private element (0019,1002)" in deidentification_problems(to_bytes(out))


def test_burned_in_annotation_is_never_passed_on() -> None:
    ds = make_dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(ValueError, match="burned-in"):
        deidentify(ds, pseudonym_key=KEY)
    ds.BurnedInAnnotation = "NO"
    assert deidentify(ds, pseudonym_key=KEY).BurnedInAnnotation == "NO"


def test_the_stored_check_flags_identifiers_at_any_depth_times_and_unmarked_dates() -> None:
    clean = deidentify(real_header(), pseudonym_key=KEY)
    clean.ReferencedPatientSequence = Sequence([_person("Nestedname^Nina")])
    clean.SeriesTime = "101602"
    problems = deidentification_problems(to_bytes(clean))
    assert "sequence ReferencedPatientSequence" in problems
    assert "PatientName has a value" in problems
    assert "time SeriesTime has a value" in problems
    del clean.ReferencedPatientSequence, clean.SeriesTime
    clean.LongitudinalTemporalInformationModified = "UNMODIFIED"
    assert deidentification_problems(to_bytes(clean)) == ["dates are kept but not marked as shifted"]


# -- the real files shipped inside pydicom (no download) ---------------------------------------

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _real_images() -> list[tuple[str, bytes, Dataset]]:
    """The shipped files that parse, carry pixel data and a patient ID: real scanner headers."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(TEST_FILES.glob("*.dcm")):
            data = path.read_bytes()
            try:
                ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
            except Exception:  # noqa: S112 - a file pydicom cannot read is not a header to test
                continue
            if "PixelData" in ds and str(ds.get("PatientID", "") or "").strip():
                found.append((path.name, data, ds))
    return found


REAL = _real_images()


def _names_and_ids(ds: Dataset) -> set[str]:
    """An independent oracle: PN components and the identifier attributes' text, at any depth."""
    values = set()
    for elem in ds.iterall():
        if elem.VR == "PN" and elem.value:
            for name in elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]:
                values.update(p for g in str(name).split("=") for p in g.split("^"))
        elif elem.keyword in deid.IDENTIFIER_KEYWORDS and elem.value:
            values.add(str(elem.value))
    return {v.strip() for v in values if len(v.strip()) >= 5}


def test_there_are_real_files_to_test() -> None:
    assert len(REAL) >= 20, [name for name, _, _ in REAL]


@pytest.mark.parametrize(("name", "data", "ds"), REAL, ids=[name for name, _, _ in REAL])
def test_real_files_keep_no_identifier_and_raise_no_false_leak(name: str, data: bytes, ds: Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = to_bytes(deidentify(ds, pseudonym_key=KEY))
        assert _leaks(phi_values(ds, pseudonym_key=KEY), out) == []
        assert [v for v in _names_and_ids(ds) if _present(v, out)] == []
        assert deidentification_problems(out) == []
        row = _study_row(data, KEY, set())
    assert not (isinstance(row, Refusal) and row.reason.startswith("phi leak")), row


def test_the_survivor_search_reads_utf8_and_latin1() -> None:
    """A name with accents written in UTF-8 (ISO_IR 192) must not slip past a Latin-1-only search."""
    for encoding in ("utf-8", "latin-1"):
        assert _leaks({"Müller"}, b"\x00PN " + "MÜLLER^Hans".encode(encoding)) == ["MÜLLER"], encoding
    assert _leaks({"Мюллер"}, "Мюллер^Ганс".encode()) == ["Мюллер"]


def test_a_numeric_id_equal_to_a_kept_decimal_is_no_leak_but_standing_alone_it_is() -> None:
    """Found on a seed nobody had run: study id ``1615`` and window centre ``1615.0``.

    The id is removed; the window centre is kept geometry. ``1615`` inside ``1615.0`` is
    another number, not the identifier, so the study is accepted; the id on its own is found.
    """
    ds = real_header()
    ds.StudyID, ds.WindowCenter = "1615", "1615.0"
    row = _study_row(write_original(ds), KEY, set())
    assert not isinstance(row, Refusal), row
    assert _leaks({"1615"}, row["dicom"]) == []
    assert _leaks({"1615"}, b"\x00SH 1615 ") == ["1615"]
    assert _leaks({"1615"}, b"\x00DS 2.1615 ") == []  # the decimals of another number
