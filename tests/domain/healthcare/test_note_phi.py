"""Free-text PHI in clinical notes: names in any form, dates, ids, phones, emails, addresses.

Recall is measured with identifiers that `examples.healthcare.studies.phi_injection`
writes into the simulator's own reports, from name and address sources that
are not the detector's; precision on the simulator's clean reports. Both
check that the clinical meaning (lesion findings, labels) survives scrubbing.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from domain.healthcare.dicom import Refusal
from domain.healthcare.note_context import extract_findings
from domain.healthcare.notes import (
    Note,
    deidentify_note,
    note_identifiers,
    note_label,
    parse_note,
    scrub_text,
)
from domain.healthcare.text_phi import (
    declared_identifiers,
    find_identifiers,
    person_name_parts,
    residual_identifiers,
    scrub,
)
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.phi_injection import inject
from examples.healthcare.studies.plan import plan_studies
from examples.healthcare.studies.reports import note_xml

KEY = b"k" * 32


@pytest.fixture(scope="module")
def simulator_notes() -> list[Note]:
    notes = [parse_note(note_xml(study)) for study in plan_studies(CohortConfig(seed=11, studies=200), 0)]
    assert all(isinstance(note, Note) for note in notes)
    return notes


def meaning(note: Note) -> tuple[list[tuple[str, bool, bool]], int | None]:
    """What training reads from a note: its lesion findings (term, negated, uncertain) and its label."""
    return [(f.term, f.negated, f.uncertain) for f in extract_findings(note)], note_label(note)


def present(probe: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(probe)}(?!\w)", text, re.I) is not None


# ---------------------------------------------------------------------------
# recall and precision on the simulator's reports


@pytest.mark.slow
def test_injected_identifiers_are_removed_and_the_findings_survive(simulator_notes: list[Note]) -> None:
    """Protects against PHI in free text reaching the store, and against a scrubber that destroys meaning."""
    rng = np.random.default_rng(2024)
    injected, missed = Counter(), Counter()
    leaks = []
    for note in simulator_notes:
        case = inject(note, rng, count=6)
        identifiers = note_identifiers(case.note)
        text = " ".join(scrub_text(t, identifiers) for t in (case.note.findings, case.note.impression))
        for item in case.items:
            kind = ("declared " if item.declared else "") + item.kind
            injected[kind] += 1
            if any(present(probe, text) for probe in item.probes):
                missed[kind] += 1
                leaks.append(item.text)
        clean = deidentify_note(case.note, KEY)
        assert isinstance(clean, Note), clean  # verified: nothing identifier-shaped left
        assert meaning(clean) == meaning(note), (note.findings, clean.findings, clean.impression)
    total = sum(injected.values())
    recall = 1 - sum(missed.values()) / total
    by_kind = {kind: f"{1 - missed[kind] / n:.3f} of {n}" for kind, n in sorted(injected.items())}
    print(
        f"\nfree-text PHI recall {recall:.4f} over {total} injected identifiers: {by_kind}; missed: {leaks}"
    )
    assert total >= 1000
    assert set(injected) == {
        "declared name",
        "declared id",
        "declared date",
        "declared phone",
        "declared address",
        "name",
        "date",
        "id",
        "phone",
        "email",
        "address",
    }
    assert recall >= 0.99, by_kind


@pytest.mark.slow
def test_clean_reports_keep_their_clinical_text(simulator_notes: list[Note]) -> None:
    """Protects against over-scrubbing: a clean report keeps its words, its findings and its label."""
    words = kept = 0
    for note in simulator_notes:
        clean = deidentify_note(note, KEY)
        assert isinstance(clean, Note), clean
        assert meaning(clean) == meaning(note)
        for before, after in (
            (note.findings, clean.findings),
            (note.impression, clean.impression),
            (note.diagnosis.label, clean.diagnosis.label),
        ):
            original = re.findall(r"\w+", before)
            remaining = Counter(re.findall(r"\w+", after))
            words += len(original)
            for word in original:
                if remaining[word] > 0:
                    remaining[word] -= 1
                    kept += 1
    print(f"\nclinical words kept: {kept / words:.4f} of {words}")
    assert kept / words >= 0.995


# ---------------------------------------------------------------------------
# detectors


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Discussed with O'Connor and Castillo at 14:00.", ["O'Connor", "Castillo"]),
        ("Per Dr. Nguyen-Tran, no change.", ["Nguyen-Tran"]),
        ("Reviewed by Prof. Ó Súilleabháin.", ["Súilleabháin"]),
        ("Referring: GARCÍA^LUCÍA^^DR. No mass.", ["GARCÍA", "LUCÍA"]),
        ("cc: Kowalczyk, Zofia; Abdullah.", ["Kowalczyk", "Zofia", "Abdullah"]),
        ("Elena Castillo, MD agreed.", ["Elena", "Castillo"]),
        ("Seen by J. Smith and A. B. Lindqvist.", ["Smith", "Lindqvist"]),
        ("Emergency contact: Grace Young.", ["Grace", "Young"]),
        ("Mwangi reviewed the images.", ["Mwangi"]),
        (
            "Compared with 03/04/2024, 2024-03-04, 4 March 2024 and March 4th.",
            ["03/04/2024", "2024-03-04", "March"],
        ),
        ("Prior of 04-MAR-2024 and Mar. 4, 2024 and 20240304.", ["04-MAR-2024", "Mar. 4, 2024", "20240304"]),
        ("MRN: 00123456, accession A24-118832, SSN 123-45-6789.", ["00123456", "A24-118832", "123-45-6789"]),
        ("Call (217) 555-0143, 217.555.0143 or +44 20 7946 0958.", ["555-0143", "217.555.0143", "7946"]),
        ("Copy to elena.castillo@example.org.", ["elena.castillo@example.org"]),
        ("Lives at 48 Maple Avenue, Apt 3B, Rochester, NY 14620.", ["48 Maple", "Rochester", "14620"]),
        ("Mail to PO Box 1234.", ["1234"]),
        ("Discussed with Dr. LEE and per KING.", ["LEE", "KING"]),
    ],
)
def test_undeclared_identifiers_are_found(text: str, gone: list[str]) -> None:
    scrubbed = scrub(text)
    for value in gone:
        assert not present(value, scrubbed), (value, scrubbed)
    assert residual_identifiers(scrubbed) == []


def test_declared_identifiers_are_found_in_every_form() -> None:
    """Protects against a name declared as FAMILY^GIVEN escaping when prose writes "Given Family" or "GF"."""
    ids = declared_identifiers(
        names=["QUARTERMAN^ZEBEDIAH^J", "LINDQVIST^ERIK^^DR"],
        ids=["MRN0012345"],
        dates=["1961-04-02"],
        phones=["(217) 555-0143"],
        addresses=["12 Elm Street, Springfield, IL 62701"],
    )
    text = (
        "Zebediah Quarterman, Quarterman, Zebediah, ZQ, Z.J.Q. and Erik Lindqvist; chart 0012345; "
        "born 04/02/1961 or April 2, 1961; phone 217 555 0143; 12 Elm St; springfield."
    )
    scrubbed = scrub(text, ids)
    for value in (
        "Zebediah",
        "Quarterman",
        "ZQ",
        "Z.J.Q.",
        "Erik",
        "Lindqvist",
        "0012345",
        "1961",
        "0143",
        "Elm",
    ):
        assert not present(value, scrubbed), (value, scrubbed)
    assert not present("springfield", scrubbed)


def test_dicom_person_names_are_split_into_given_and_family() -> None:
    assert person_name_parts("VAN DER BERG^JAN^P^DR") == (["JAN", "P"], ["VAN", "DER", "BERG"])
    assert person_name_parts("O'Connor, Siobhan") == (["Siobhan"], ["O'Connor"])
    assert person_name_parts("Dr. Alan Grant") == (["Alan"], ["Grant"])


@pytest.mark.parametrize(
    "text",
    [
        "Findings compatible with Hodgkin lymphoma; no Wilms tumor.",
        "History of Graves disease and non-Hodgkin lymphoma.",
        "The circle of Willis is normal. Follow-up per Fleischner Society guidelines.",
        "Kerley B lines. Dilated Virchow-Robin spaces.",
        "There is a 7.5 mm nodule, 3.2 cm from the pleura, in the right upper lobe (series 4, image 112).",
        "Status post CABG. FLAIR hyperintensity. Unremarkable CT of the chest. Lung-RADS 4B.",
    ],
)
def test_eponyms_and_measurements_are_kept(text: str) -> None:
    """Eponyms in their clinical term are meaning, not people; measurements and acronyms are not ids."""
    assert scrub(text) == text


def test_an_eponym_used_as_a_person_or_declared_is_a_name() -> None:
    assert scrub("Discussed with Dr. Graves.") == "Discussed with [NAME]."
    ids = declared_identifiers(names=["GRAVES^ANNA"])
    assert scrub("Graves disease.", ids) == "[NAME] disease."


def test_scrubbing_keeps_sentence_boundaries() -> None:
    """A span swallowing a full stop would merge sentences and move negation scope ("... St. No nodule")."""
    text = "Lives at 12 Elm St. No nodule. Radiologist LINDQVIST^ERIK^^DR. There is a mass."
    scrubbed = scrub(text)
    assert [(f.term, f.negated) for f in extract_findings(scrubbed)] == [("nodule", True), ("mass", False)]
    assert scrubbed.count(".") >= 4


def test_verification_finds_identifiers_scrubbing_missed() -> None:
    """Protects against a glued value passing: the verifier ignores word boundaries."""
    for text, kind in (("ref_0012345_x", "id"), ("jsmith@localhost", "email")):
        assert find_identifiers(text) == [] and scrub(text) == text
        assert residual_identifiers(text) == [kind], text


def test_an_unverifiable_note_is_refused_not_stored() -> None:
    note = parse_note(
        b"""<clinicalNote><patient><name>DOE^JANE</name><id>MRN-1</id></patient>
        <study uid="1.2.3.4"/><findings>No nodule. Sent to jdoe@localhost for review.</findings>
        <impression>Normal.</impression>
        <diagnosis code="Z03.89" system="ICD-10" label="Normal"/></clinicalNote>"""
    )
    assert isinstance(note, Note)
    refusal = deidentify_note(note, KEY)
    assert isinstance(refusal, Refusal)
    assert refusal.category == "phi"
    assert refusal.reason == "phi: findings free text still holds an identifier after scrubbing (email)"
