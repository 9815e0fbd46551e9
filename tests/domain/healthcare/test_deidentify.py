"""De-identification: no PHI survives serialisation; links survive as keyed pseudonyms."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ImplicitVRLittleEndian, generate_uid

from domain.healthcare.deidentify import (
    KEPT_KEYWORDS,
    deidentification_problems,
    deidentified_uid,
    deidentify,
    phi_values,
    pseudonym,
    stored_study_problems,
    to_bytes,
)
from domain.healthcare.dicom import ValidatedStudy, validate_dicom
from tests.domain.healthcare.test_dicom import make_dataset
from tests.domain.healthcare.test_dicom import to_bytes as write_original

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

KEY = b"k" * 32
OTHER_KEY = b"o" * 32

PLANTED = {
    "PatientName": "Zebediah^Quarterman",
    "PatientBirthDate": "19610402",
    "PatientAddress": "12 Elm Street, Springfield",
    "PatientTelephoneNumbers": "555-201-3344",
    "OtherPatientIDs": "SSN-078051120",
    "InstitutionName": "St Elsewhere General Hospital",
    "InstitutionAddress": "1 Hospital Road, Metropolis",
    "ReferringPhysicianName": "Grant^Alan",
    "PerformingPhysicianName": "Sattler^Ellie",
    "OperatorsName": "Malcolm^Ian",
    "AccessionNumber": "ACC99887766",
    "StudyDate": "20240315",
    "SeriesDate": "20240316",
    "StudyTime": "101530",
    "StudyID": "STUDY-4242",
    "StationName": "CTSCANNER-07",
    "DeviceSerialNumber": "SN-55501234",
    "StudyDescription": "CT chest for Zebediah Quarterman",
    "ImageComments": "pt Quarterman anxious, call wife 555-777-1212",
    "PatientComments": "prefers to be called Zeb",
}
PRIVATE_TEXT = "Quarterman home phone 555-0100"
PRIVATE_BYTES = b"\x01\x02BIRTHNAME=Smithers\x00\x00"


def phi_dataset(*, patient_id: str = "MRN-0012345", study_uid: str | None = None, seed: int = 0) -> Dataset:
    """A CT with PHI in standard, nested, private and overlay elements."""
    ds = make_dataset(patient_id=patient_id, study_uid=study_uid, seed=seed)
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.FrameOfReferenceUID = generate_uid()
    ds.BodyPartExamined = "CHEST"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.SeriesNumber = 3
    ds.InstanceNumber = 17
    item = Dataset()
    item.PatientID = "NESTED-ID-31337"
    item.IssuerOfPatientID = "Springfield Registry"
    ds.OtherPatientIDsSequence = Sequence([item])
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = ds.SOPClassUID
    referenced.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = Sequence([referenced])
    block = ds.private_block(0x0029, "ACME MEDICAL 1.0", create=True)
    block.add_new(0x10, "LO", PRIVATE_TEXT)
    block.add_new(0x11, "OB", PRIVATE_BYTES)
    ds.add_new(0x60000010, "US", 8)  # overlay rows
    ds.add_new(0x60003000, "OW", b"\xff" * 8)  # overlay data
    return ds


def serialised_deidentified(ds: Dataset, key: bytes = KEY) -> bytes:
    return to_bytes(deidentify(ds, pseudonym_key=key))


def test_phi_values_finds_what_was_planted() -> None:
    ds = phi_dataset()
    found = phi_values(ds)
    for keyword, value in PLANTED.items():
        if keyword != "StudyTime":
            assert value in found, value
    # times are not searched for: deidentify writes none, and "000000" would match inside kept decimals
    assert PLANTED["StudyTime"] not in found
    for value in (
        "MRN-0012345",
        "Zebediah",
        "Quarterman",
        "Zebediah Quarterman",
        "NESTED-ID-31337",
        PRIVATE_TEXT,
        "BIRTHNAME=Smithers",
        "ACME MEDICAL 1.0",
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        ds.FrameOfReferenceUID,
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID,
    ):
        assert value in found, value
    # registry UIDs (SOP class, transfer syntax) are not PHI
    assert str(ds.SOPClassUID) not in found
    assert str(ds.file_meta.TransferSyntaxUID) not in found


@pytest.mark.parametrize("transfer_syntax", [None, ImplicitVRLittleEndian])
def test_no_phi_string_survives_in_the_serialised_output(transfer_syntax: str | None) -> None:
    ds = phi_dataset()
    if transfer_syntax:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    original = validate_dicom(write_original(ds))
    assert isinstance(original, ValidatedStudy), original
    values = phi_values(original.dataset, pseudonym_key=KEY)
    assert len(values) > 30
    out = serialised_deidentified(original.dataset)
    lowered = out.lower()
    leaked = sorted(v for v in values if v.encode() in out or v.lower().encode() in lowered)
    assert leaked == []
    # and the output still parses as a DICOM file
    reread = pydicom.dcmread(pydicom.filebase.DicomBytesIO(out))
    assert not any(elem.tag.is_private for elem in reread.iterall())
    assert not any(elem.tag.group & 0xFF00 in (0x5000, 0x6000) for elem in reread)


def test_the_original_is_not_modified() -> None:
    ds = phi_dataset()
    before = write_original(ds)
    deidentify(ds, pseudonym_key=KEY)
    assert write_original(ds) == before


def test_identity_is_replaced_and_the_method_recorded() -> None:
    ds = phi_dataset()
    out = deidentify(ds, pseudonym_key=KEY)
    assert re.fullmatch(r"anon-[0-9a-f]{16}", out.PatientID)
    assert out.PatientID == pseudonym("MRN-0012345", KEY)
    assert out.PatientName == "" and out.PatientBirthDate == "" and out.StudyTime == ""
    assert out.AccessionNumber == "" and out.ReferringPhysicianName == ""
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out.StudyDate not in ("", PLANTED["StudyDate"]) and out.SeriesDate != PLANTED["SeriesDate"]
    for keyword in ("InstitutionName", "OperatorsName", "StudyDescription", "ImageComments", "StationName"):
        assert keyword not in out, keyword
    assert "OtherPatientIDsSequence" not in out and "ReferencedImageSequence" not in out
    assert "PatientSex" in out and out.PatientSex == ""


def test_what_the_model_needs_is_kept() -> None:
    ds = phi_dataset()
    out = deidentify(ds, pseudonym_key=KEY)
    for keyword in (
        "Modality",
        "SOPClassUID",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "SamplesPerPixel",
        "PixelSpacing",
        "RescaleIntercept",
        "RescaleSlope",
        "WindowCenter",
        "WindowWidth",
        "BodyPartExamined",
        "SeriesNumber",
        "InstanceNumber",
    ):
        assert keyword in KEPT_KEYWORDS
        assert out[keyword].value == ds[keyword].value, keyword


def test_pixels_are_unchanged_and_the_output_revalidates() -> None:
    ds = phi_dataset()
    original = validate_dicom(write_original(ds))
    assert isinstance(original, ValidatedStudy)
    again = validate_dicom(serialised_deidentified(original.dataset))
    assert isinstance(again, ValidatedStudy), again
    assert np.array_equal(again.pixels, original.pixels) and again.pixels.dtype == original.pixels.dtype
    assert again.modality == "CT"
    assert again.patient_id == pseudonym(original.patient_id, KEY)
    assert again.study_uid == deidentified_uid(original.study_uid, KEY)


def test_pseudonyms_link_one_patient_and_separate_others() -> None:
    study_a = deidentify(phi_dataset(patient_id="MRN-1"), pseudonym_key=KEY)
    study_b = deidentify(phi_dataset(patient_id="MRN-1", seed=1), pseudonym_key=KEY)
    other = deidentify(phi_dataset(patient_id="MRN-2"), pseudonym_key=KEY)
    assert study_a.StudyInstanceUID != study_b.StudyInstanceUID
    assert study_a.PatientID == study_b.PatientID
    assert study_a.PatientID != other.PatientID
    # another key gives unrelated pseudonyms: without the key they cannot be recomputed
    assert deidentify(phi_dataset(patient_id="MRN-1"), pseudonym_key=OTHER_KEY).PatientID != study_a.PatientID
    # the same text as a patient ID and as a UID maps to unrelated outputs
    assert pseudonym("1.2.3", KEY)[5:] not in deidentified_uid("1.2.3", KEY)


def test_uids_are_replaced_consistently() -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    first = make_dataset(study_uid=study_uid, series_uid=series_uid)
    second = make_dataset(study_uid=study_uid, series_uid=series_uid, seed=1)
    third = make_dataset(study_uid=study_uid)  # another series of the same study
    for ds in (first, second, third):
        ds.FrameOfReferenceUID = "1.2.840.99999.1"
    out = [deidentify(ds, pseudonym_key=KEY) for ds in (first, second, third)]
    assert out[0].StudyInstanceUID == out[1].StudyInstanceUID == out[2].StudyInstanceUID
    assert out[0].SeriesInstanceUID == out[1].SeriesInstanceUID != out[2].SeriesInstanceUID
    assert len({o.SOPInstanceUID for o in out}) == 3
    assert out[0].FrameOfReferenceUID == out[2].FrameOfReferenceUID != "1.2.840.99999.1"
    for original, new in zip((first, second, third), out, strict=True):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert new[keyword].value != original[keyword].value
            assert new[keyword].value == deidentified_uid(original[keyword].value, KEY)
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    # deterministic across calls
    assert deidentify(first, pseudonym_key=KEY).SOPInstanceUID == out[0].SOPInstanceUID


def test_deidentified_uids_are_valid_dicom_uids() -> None:
    for uid in ("1.2.3", generate_uid(), "9" * 64):
        new = deidentified_uid(uid, KEY)
        assert new.startswith("2.25.") and len(new) <= 64 and UID(new).is_valid
        assert new == deidentified_uid(uid, KEY) != deidentified_uid(uid, OTHER_KEY)


def test_text_smuggled_into_a_kept_element_is_dropped() -> None:
    ds = make_dataset()
    ds.add_new(0x00180015, "CS", "Zebediah Quarterman")  # BodyPartExamined, lower case and too long
    ds.RescaleIntercept = "-1024.5"
    # a RescaleIntercept that is not a number (pydicom keeps it as text when reading)
    data = write_original(ds).replace(b"-1024.5 ", b"Quartrmn")
    study = validate_dicom(data)
    assert isinstance(study, ValidatedStudy) and study.dataset.RescaleIntercept == "Quartrmn"
    out = deidentify(study.dataset, pseudonym_key=KEY)
    assert "BodyPartExamined" not in out and "RescaleIntercept" not in out
    assert b"Quarterman" not in to_bytes(out) and b"Quartrmn" not in to_bytes(out)


def test_patient_characteristics_only_when_asked_and_ages_capped() -> None:
    ds = make_dataset()
    ds.PatientSex = "F"
    ds.PatientAge = "095Y"
    ds.PatientWeight = "61.5"
    assert "PatientAge" not in deidentify(ds, pseudonym_key=KEY)
    kept = deidentify(ds, pseudonym_key=KEY, retain_patient_characteristics=True)
    assert kept.PatientSex == "F" and kept.PatientAge == "090Y" and float(kept.PatientWeight) == 61.5
    codes = {item.CodeValue for item in kept.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107", "113108"}
    ds.PatientAge = "045Y"
    assert deidentify(ds, pseudonym_key=KEY, retain_patient_characteristics=True).PatientAge == "045Y"


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        deidentify(make_dataset(), pseudonym_key=b"short")
    with pytest.raises(ValueError):
        pseudonym("MRN-1", b"")


def test_stored_study_check_tells_a_deidentified_file_from_an_original():
    original = write_original(phi_dataset())
    problems = deidentification_problems(original)
    assert "PatientIdentityRemoved is not YES" in problems
    assert "PatientName has a value" in problems and "PatientID is not a pseudonym" in problems
    assert any(p.startswith("private element") for p in problems)
    clean = to_bytes(deidentify(phi_dataset(), pseudonym_key=KEY))
    assert deidentification_problems(clean) == []
    assert deidentification_problems(b"MZ" + clean[2:]) == ["the 128-byte preamble is not zero"]


def test_stored_table_check_finds_an_original_in_any_row_group(tmp_path):
    """The check reads a stored table a row group at a time: an original in a later group is found."""
    clean = [to_bytes(deidentify(phi_dataset(seed=i), pseudonym_key=KEY)) for i in range(5)]
    studies = [*clean[:4], write_original(phi_dataset()), clean[4]]
    table = pa.table({"study_uid": [f"s{i}" for i in range(6)], "dicom": studies})
    path = tmp_path / "studies.parquet"
    pq.write_table(table, path, row_group_size=2)

    found = stored_study_problems(path)

    assert [f["study_uid"] for f in found] == ["s4"]
    assert "PatientIdentityRemoved is not YES" in found[0]["problems"]
    pq.write_table(table.slice(0, 4), path, row_group_size=2)
    assert stored_study_problems(path) == []
