"""Clinical notes: hostile XML refused, PHI scrubbed, negation-aware findings and labels."""

from __future__ import annotations

import time

import numpy as np
import pytest

from domain.healthcare.deidentify import deidentified_uid, pseudonym
from domain.healthcare.dicom import Refusal
from domain.healthcare.notes import (
    MAX_NOTE_BYTES,
    Diagnosis,
    Finding,
    Note,
    code_label,
    consistency,
    deidentify_note,
    extract_findings,
    note_label,
    note_phi_values,
    parse_note,
    scrub_text,
)

KEY = b"k" * 32
STUDY_UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"


def note_xml(
    *,
    findings: str = "There is a 7 mm nodule in the right upper lobe.",
    impression: str = "Solitary pulmonary nodule.",
    code: str = "R91.1",
    system: str = "ICD-10",
    label: str = "Solitary pulmonary nodule",
    study_uid: str = STUDY_UID,
    extra: str = "",
) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<clinicalNote>
  <patient>
    <name>Zebediah Quarterman</name>
    <id>MRN-0012345</id>
    <birthDate>1961-04-02</birthDate>
    <phone>555-201-3344</phone>
    <address>12 Elm Street, Springfield</address>
  </patient>
  <author>Dr. Alan Grant</author>
  <study uid="{study_uid}"/>
  <findings>{findings}</findings>
  <impression>{impression}</impression>
  <diagnosis code="{code}" system="{system}" label="{label}"/>{extra}
</clinicalNote>
""".encode()


def parsed(**kwargs) -> Note:
    note = parse_note(note_xml(**kwargs))
    assert isinstance(note, Note), note
    return note


def refused(result: object, category: str) -> Refusal:
    assert isinstance(result, Refusal), f"expected a refusal ({category}), got {result!r}"
    assert result.category == category, result.reason
    return result


# ---------------------------------------------------------------------------
# parsing


def test_valid_note_is_parsed() -> None:
    note = parsed()
    assert note.study_uid == STUDY_UID
    assert note.findings == "There is a 7 mm nodule in the right upper lobe."
    assert note.impression == "Solitary pulmonary nodule."
    assert note.diagnosis == Diagnosis("R91.1", "ICD-10", "Solitary pulmonary nodule")
    assert note.patient is not None and note.patient.patient_id == "MRN-0012345"
    assert note.patient.name == "Zebediah Quarterman" and note.author == "Dr. Alan Grant"
    assert not note.deidentified


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<clinicalNote><findings>&lol9;</findings></clinicalNote>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE clinicalNote [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<clinicalNote><study uid="1.2.3"/><findings>&xxe;</findings><impression>x</impression>
<diagnosis code="R91.1" system="ICD-10" label="x"/><patient><id>1</id></patient></clinicalNote>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE clinicalNote SYSTEM "http://attacker.invalid/note.dtd">
<clinicalNote/>
"""


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD], ids=["laughs", "xxe", "dtd"])
def test_entity_and_dtd_attacks_are_refused_without_expanding(xml: bytes) -> None:
    started = time.perf_counter()
    result = parse_note(xml)
    assert time.perf_counter() - started < 1.0  # refused at the declaration, nothing expanded
    reason = refused(result, "xml").reason
    assert "lol" not in reason and "root:" not in reason


def test_any_document_type_declaration_is_refused() -> None:
    harmless_looking = b"""<?xml version="1.0"?>
<!DOCTYPE clinicalNote [<!ELEMENT clinicalNote ANY>]>
<clinicalNote/>"""
    for xml in (BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, harmless_looking):
        assert refused(parse_note(xml), "xml").reason == "xml: document type declarations are not allowed"


def test_oversized_note_is_refused() -> None:
    big = note_xml(findings="Lungs are clear. " * (MAX_NOTE_BYTES // 17 + 10))
    assert len(big) > MAX_NOTE_BYTES
    refused(parse_note(big), "too large")
    refused(parse_note(note_xml(), max_bytes=100), "too large")


@pytest.mark.parametrize(
    ("data", "category"),
    [
        (b"", "empty"),
        (b"<clinicalNote><findings>unclosed</clinicalNote>", "xml"),
        (b"not xml at all", "xml"),
        (b"\xff\xfe\x00<\x00a", "xml"),
        (b"<html><body>hi</body></html>", "schema"),
    ],
    ids=["empty", "unclosed", "text", "garbage", "wrong-root"],
)
def test_malformed_notes_are_refused(data: bytes, category: str) -> None:
    refused(parse_note(data), category)


def test_random_bytes_never_raise() -> None:
    rng = np.random.default_rng(3)
    base = note_xml()
    for _ in range(300):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 7))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        result = parse_note(bytes(data))
        assert isinstance(result, Note | Refusal)
    for _ in range(50):
        assert isinstance(parse_note(rng.bytes(int(rng.integers(1, 500)))), Refusal)


@pytest.mark.parametrize(
    ("xml", "field"),
    [
        (note_xml(findings=""), "findings"),
        (note_xml(impression="   "), "impression"),
        (note_xml().replace(b'<study uid="' + STUDY_UID.encode() + b'"/>', b""), "study"),
        (
            note_xml().replace(
                b'<diagnosis code="R91.1" system="ICD-10" label="Solitary pulmonary nodule"/>', b""
            ),
            "diagnosis",
        ),
        (note_xml(code=""), "diagnosis"),
        (note_xml().replace(b"<id>MRN-0012345</id>", b""), "patient id"),
    ],
)
def test_missing_fields_are_refused(xml: bytes, field: str) -> None:
    reason = refused(parse_note(xml), "missing field").reason
    assert field in reason


def test_markup_and_duplicated_elements_are_refused() -> None:
    refused(parse_note(note_xml(findings="No <b>nodule</b>.")), "schema")
    second = '<diagnosis code="Z03.89" system="ICD-10" label="Normal"/>'
    reason = refused(parse_note(note_xml(extra=second)), "schema").reason
    assert "diagnosis" in reason


def test_invisible_characters_cannot_hide_a_negation() -> None:
    note = parsed(findings="No\u200b evidence of\u2060 nodule.", impression="Normal\u202e.", code="Z03.89")
    assert note.findings == "No evidence of nodule."
    assert [f.negated for f in extract_findings(note)] == [True]
    assert note_label(note) == 0


def test_invalid_study_uid_is_refused() -> None:
    refused(parse_note(note_xml(study_uid="1.2.abc")), "schema")
    refused(parse_note(note_xml(study_uid="1." + "2" * 70)), "schema")


# ---------------------------------------------------------------------------
# de-identification


def test_deidentified_note_drops_the_patient_and_scrubs_the_text() -> None:
    note = parsed(
        findings=(
            "Zebediah Quarterman (MRN-0012345, DOB 04/02/1961) was seen by Dr. Alan Grant on March 3, 2024. "
            "Mr. Quarterman reports cough. Call 555-201-3344. There is a 7 mm nodule in the right upper lobe."
        ),
        impression="Nodule. Compared with CT of 2023-11-02 for patient Zebediah, MRN: 0012345.",
    )
    phi = note_phi_values(note)
    assert {"Zebediah Quarterman", "Quarterman", "MRN-0012345", "555-201-3344", "04/02/1961"} <= phi
    assert {"QUARTERMAN^ZEBEDIAH", "Quarterman, Zebediah", "Z. Quarterman", "Grant", "Alan"} <= phi
    clean = deidentify_note(note, KEY)
    assert isinstance(clean, Note), clean
    assert clean.patient is None and clean.author is None and clean.deidentified
    text = " ".join([clean.findings, clean.impression, clean.diagnosis.label])
    for value in phi | {"0012345", "2023-11-02", "March 3, 2024", "Grant", "Alan"}:
        assert value.lower() not in text.lower(), value
    assert "7 mm nodule" in clean.findings
    assert clean.patient_pseudonym == pseudonym("MRN-0012345", KEY)
    # links to the de-identified DICOM study
    assert clean.study_uid == deidentified_uid(STUDY_UID, KEY)
    record = clean.as_record()
    assert "patient" not in record and "author" not in record
    assert not any(value in str(record) for value in phi)
    # findings survive scrubbing
    assert [f.term for f in extract_findings(clean) if f.asserted] == ["nodule", "nodule"]


def test_scrub_patterns_without_known_values() -> None:
    text = scrub_text("Seen 12/31/2023 by Dr. Smith, ID 44556677, tel (555) 123-4567, 7.5 mm nodule, 3.2 cm.")
    assert text == "Seen [DATE] by [NAME], [ID], tel [PHONE], 7.5 mm nodule, 3.2 cm."


def test_names_the_note_does_not_declare_are_scrubbed() -> None:
    """The issue's case: surnames in free text were stored verbatim."""
    note = parsed(findings="There is a 7 mm nodule. Findings discussed with O'Connor and Castillo.")
    clean = deidentify_note(note, KEY)
    assert isinstance(clean, Note), clean
    assert clean.findings == "There is a 7 mm nodule. Findings discussed with [NAME] and [NAME]."


def test_a_note_whose_scrub_cannot_be_verified_is_refused() -> None:
    """Fail closed: an identifier-shaped token that survives scrubbing refuses the note."""
    note = parsed(impression="Solitary pulmonary nodule. Ref_0012345_b.")
    reason = refused(deidentify_note(note, KEY), "phi").reason
    assert reason == "phi: impression free text still holds an identifier after scrubbing (id)"


def test_deidentifying_twice_is_refused() -> None:
    clean = deidentify_note(parsed(), KEY)
    assert isinstance(clean, Note)
    with pytest.raises(ValueError):
        deidentify_note(clean, KEY)


# ---------------------------------------------------------------------------
# negation


def findings_of(text: str) -> dict[str, tuple[bool, bool]]:
    return {f.term: (f.negated, f.uncertain) for f in extract_findings(text)}


ASSERTED, NEGATED, UNCERTAIN = (False, False), (True, False), (False, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No evidence of nodule.", {"nodule": NEGATED}),
        ("There is a 7 mm nodule.", {"nodule": ASSERTED}),
        ("no mass, but a nodule", {"mass": NEGATED, "nodule": ASSERTED}),
        ("The lungs are clear without nodules or masses.", {"nodule": NEGATED, "mass": NEGATED}),
        ("Negative for malignancy.", {"malignancy": NEGATED}),
        ("Free of tumor.", {"tumor": NEGATED}),
        ("A mass was ruled out.", {"mass": NEGATED}),
        ("Nodule not seen on this study.", {"nodule": NEGATED}),
        ("The previously seen opacity has resolved.", {"opacity": NEGATED}),
        ("No change in the 5 mm nodule.", {"nodule": ASSERTED}),
        ("There is no nodule; there is a 2 cm mass.", {"nodule": NEGATED, "mass": ASSERTED}),
        ("No nodule. A mass is present.", {"nodule": NEGATED, "mass": ASSERTED}),
        ("No pleural effusion however a spiculated lesion is present.", {"lesion": ASSERTED}),
        ("Possible nodule in the left lower lobe.", {"nodule": UNCERTAIN}),
        ("A small mass cannot be excluded.", {"mass": UNCERTAIN}),
        ("Ground-glass opacities bilaterally.", {"ground-glass opacity": ASSERTED}),
        ("Lungs clear. Heart normal.", {}),
        ("A 7.5 mm nodule, no mass.", {"nodule": ASSERTED, "mass": NEGATED}),
    ],
)
def test_negation(text: str, expected: dict[str, tuple[bool, bool]]) -> None:
    assert findings_of(text) == expected


def test_finding_records_its_sentence() -> None:
    findings = extract_findings("Heart normal. No evidence of nodule. There is a 7 mm mass.")
    assert findings == [
        Finding("nodule", True, "No evidence of nodule."),
        Finding("mass", False, "There is a 7 mm mass."),
    ]


# ---------------------------------------------------------------------------
# labels


@pytest.mark.parametrize(
    ("findings", "impression", "code", "expected"),
    [
        ("There is a 7 mm nodule.", "Solitary pulmonary nodule.", "R91.1", 1),
        ("No evidence of nodule or mass.", "Normal chest CT.", "Z03.89", 0),
        ("Lungs clear.", "Normal study.", "Z00.00", 0),
        ("There is a 7 mm nodule.", "Normal chest CT.", "Z03.89", None),  # text contradicts the code
        ("No evidence of nodule.", "No mass.", "R91.1", None),  # code contradicts the text
        ("There is a 2 cm mass.", "Mass.", "J18.9", 1),  # unknown code, asserted lesion
        ("No nodule.", "Clear.", "J18.9", None),  # unknown code, negated only
        ("Possible nodule.", "Indeterminate.", "Z03.89", None),  # uncertain text, normal code
        ("Possible nodule.", "Indeterminate.", "C34.11", 1),
    ],
)
def test_note_label(findings: str, impression: str, code: str, expected: int | None) -> None:
    assert note_label(parsed(findings=findings, impression=impression, code=code)) == expected


def test_label_from_note_agrees_with_code() -> None:
    lesion, normal = parsed(), parsed(findings="No evidence of nodule.", impression="Normal.", code="Z03.89")
    assert note_label(lesion) == code_label(lesion.diagnosis.system, lesion.diagnosis.code) == 1
    assert note_label(normal) == code_label(normal.diagnosis.system, normal.diagnosis.code) == 0


def test_code_label_systems() -> None:
    assert code_label("ICD-10-CM", "r91.1") == 1
    assert code_label("icd10", "C34.90") == 1
    assert code_label("ICD-10", "Z03.89") == 0
    assert code_label("ICD-10", "Z03.8") is None
    assert code_label("SNOMED-CT", "R91.1") is None


@pytest.mark.parametrize(
    ("note", "image", "expected"),
    [
        (1, 1, True),
        (0, 0, True),
        (1, 0, False),
        (0, 1, False),
        (None, 1, False),
        (1, None, False),
        (1, True, True),
        (0, False, True),
        (1, 2, False),
    ],
)
def test_consistency(note: int | None, image: int | bool | None, expected: bool) -> None:
    assert consistency(note, image) is expected
