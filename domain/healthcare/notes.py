"""Clinical notes: safe XML parsing, de-identification, labels from negation-aware findings.

The note format (one study per note; element names are fixed)::

    <clinicalNote>
      <patient>                              <!-- dropped by deidentify_note -->
        <name>Jane Doe</name>
        <id>MRN-0012345</id>                 <!-- the DICOM PatientID -->
        <birthDate>1961-04-02</birthDate>    <!-- optional -->
        <phone>555-201-3344</phone>          <!-- optional -->
        <address>12 Elm St, Springfield</address>  <!-- optional -->
      </patient>
      <author>Dr. Alan Grant</author>        <!-- optional, PHI -->
      <study uid="1.2.826.0.1.3680043..."/>  <!-- the DICOM StudyInstanceUID -->
      <findings>There is a 7 mm nodule in the right upper lobe.</findings>
      <impression>Solitary pulmonary nodule.</impression>
      <diagnosis code="R91.1" system="ICD-10" label="Solitary pulmonary nodule"/>
    </clinicalNote>

Parsing uses defusedxml with DTDs, entity declarations and external
references all forbidden, so a billion-laughs or an external-entity note
(``file:///etc/passwd``) is refused before anything is expanded or fetched.

De-identification drops the patient element and the author and scrubs the
free text (findings, impression, diagnosis label) with
:mod:`domain.healthcare.text_phi`: the note's own identifiers in all their
forms, PHI-shaped patterns, and names found by their context; a note whose
scrubbed text still holds an identifier is refused (``phi: ...``).

Lesion findings (negated, uncertain or asserted) come from
:mod:`domain.healthcare.note_context` (negspacy's NegEx on a blank spaCy
pipeline); the labels below combine them with the diagnosis code.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from domain.healthcare.deidentify import deidentified_uid, pseudonym
from domain.healthcare.dicom import Refusal
from domain.healthcare.note_context import Finding, extract_findings
from domain.healthcare.text_phi import Identifiers, declared_identifiers, residual_identifiers, scrub

MAX_NOTE_BYTES = 64 * 1024
ROOT_TAG = "clinicalNote"

# ---------------------------------------------------------------------------
# Data model


@dataclass(frozen=True)
class Patient:
    name: str
    patient_id: str
    birth_date: str = ""
    phone: str = ""
    address: str = ""


@dataclass(frozen=True)
class Diagnosis:
    code: str
    system: str
    label: str


@dataclass(frozen=True)
class Note:
    """One parsed note. ``patient`` and ``author`` are ``None`` once de-identified."""

    study_uid: str
    findings: str
    impression: str
    diagnosis: Diagnosis
    patient: Patient | None = None
    author: str | None = None
    #: ``pseudonym(patient_id, key)`` after de-identification (links to the images).
    patient_pseudonym: str | None = None

    @property
    def deidentified(self) -> bool:
        return self.patient is None and self.author is None and self.patient_pseudonym is not None

    def as_record(self) -> dict[str, str | None]:
        """A JSON-ready record. The patient element and author are never part of it."""
        return {
            "study_uid": self.study_uid,
            "patient_pseudonym": self.patient_pseudonym,
            "findings": self.findings,
            "impression": self.impression,
            "diagnosis_code": self.diagnosis.code,
            "diagnosis_system": self.diagnosis.system,
            "diagnosis_label": self.diagnosis.label,
        }


# ---------------------------------------------------------------------------
# Parsing

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
_WHITESPACE = re.compile(r"\s+")


def _clean(text: str | None) -> str:
    """NFKC-normalised text without format characters, whitespace collapsed.

    Zero-width and bidi control characters (Unicode category Cf) are removed:
    "no\u200b nodule" must not read as an asserted nodule to the matcher while
    a reviewer sees a negation.
    """
    text = unicodedata.normalize("NFKC", text or "")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return _WHITESPACE.sub(" ", text).strip()


class _SchemaError(ValueError):
    pass


def _child_text(parent: Element, tag: str) -> str:
    child = parent.find(tag)
    if child is None:
        return ""
    if len(child):
        raise _SchemaError(f"<{tag}> must hold text only, not markup")
    return _clean(child.text)


def parse_note(xml_bytes: bytes, *, max_bytes: int = MAX_NOTE_BYTES) -> Note | Refusal:
    """Parse one note safely; a :class:`Refusal` for anything unsafe or incomplete.

    Reason categories: ``empty``, ``too large``, ``xml`` (DTD, entities,
    external references, malformed), ``schema`` (wrong root, bad UID),
    ``missing field``.
    """
    if not xml_bytes:
        return Refusal("empty: no bytes")
    if len(xml_bytes) > max_bytes:
        return Refusal(f"too large: {len(xml_bytes)} bytes (at most {max_bytes})")
    try:
        root = SafeET.fromstring(xml_bytes, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden:
        return Refusal("xml: document type declarations are not allowed")
    except EntitiesForbidden:
        return Refusal("xml: entity declarations are not allowed")
    except ExternalReferenceForbidden:
        return Refusal("xml: external references are not allowed")
    except ParseError as exc:
        return Refusal(f"xml: malformed: {str(exc)[:160]}")
    except Exception as exc:  # encoding errors and the like
        return Refusal(f"xml: malformed: {type(exc).__name__}: {str(exc)[:160]}")
    if root.tag != ROOT_TAG:
        return Refusal(f"schema: root element {str(root.tag)[:40]!r}, expected {ROOT_TAG!r}")
    try:
        return _note_from(root)
    except _SchemaError as exc:
        return Refusal(f"schema: {exc}")


_SINGLE_ELEMENTS = ("patient", "author", "study", "findings", "impression", "diagnosis")


def _note_from(root: Element) -> Note | Refusal:
    for tag in _SINGLE_ELEMENTS:
        # a second <diagnosis> or <findings> would let the reader and the parser disagree
        if len(root.findall(tag)) > 1:
            return Refusal(f"schema: more than one <{tag}>")
    study = root.find("study")
    study_uid = _clean(study.get("uid")) if study is not None else ""
    findings = _child_text(root, "findings")
    impression = _child_text(root, "impression")
    diagnosis_element = root.find("diagnosis")
    patient_element = root.find("patient")
    for name, value in (("study", study_uid), ("findings", findings), ("impression", impression)):
        if not value:
            return Refusal(f"missing field: {name}")
    if diagnosis_element is None:
        return Refusal("missing field: diagnosis")
    diagnosis = Diagnosis(
        code=_clean(diagnosis_element.get("code")),
        system=_clean(diagnosis_element.get("system")),
        label=_clean(diagnosis_element.get("label")),
    )
    if not diagnosis.code or not diagnosis.system:
        return Refusal("missing field: diagnosis code or system")
    if patient_element is None:
        return Refusal("missing field: patient")
    patient = Patient(
        name=_child_text(patient_element, "name"),
        patient_id=_child_text(patient_element, "id"),
        birth_date=_child_text(patient_element, "birthDate"),
        phone=_child_text(patient_element, "phone"),
        address=_child_text(patient_element, "address"),
    )
    if not patient.patient_id:
        return Refusal("missing field: patient id")
    if len(study_uid) > 64 or not _UID.match(study_uid):
        return Refusal(f"schema: study uid {study_uid[:80]!r} is not a valid UID")
    author = _child_text(root, "author") or None
    return Note(
        study_uid=study_uid,
        findings=findings,
        impression=impression,
        diagnosis=diagnosis,
        patient=patient,
        author=author,
    )


# ---------------------------------------------------------------------------
# De-identification (the free-text detectors live in domain.healthcare.text_phi)


def note_identifiers(note: Note) -> Identifiers:
    """The identifiers the note's own patient and author elements declare, in their free-text forms."""
    patient = note.patient
    if patient is None:
        return declared_identifiers()
    return declared_identifiers(
        names=[patient.name, note.author or ""],
        ids=[patient.patient_id],
        dates=[patient.birth_date],
        phones=[patient.phone],
        addresses=[patient.address],
    )


def note_phi_values(note: Note) -> set[str]:
    """The PHI strings the note's patient and author elements reveal, as a store is searched for them.

    Name parts shorter than three letters and initials are left out: matched
    case-insensitively anywhere, "Le" or "JS" would be found in ordinary text.
    """
    return set(note_identifiers(note).exact)


def scrub_text(text: str, identifiers: Identifiers | None = None) -> str:
    """`text` with declared identifiers, PHI-shaped patterns and names in context replaced by placeholders."""
    return scrub(text, identifiers)


def deidentify_note(note: Note, pseudonym_key: bytes) -> Note | Refusal:
    """Drop the patient element and author; scrub PHI from the free text and verify the scrub.

    The study UID and patient ID are replaced by the same keyed values
    :mod:`domain.healthcare.deidentify` gives the images, so a de-identified
    note still links to its de-identified study. Findings, impression and the
    diagnosis label are scrubbed, then scanned again: a note in which an
    identifier-shaped token survives is refused (``phi: ...``), never stored.
    """
    if note.patient is None:
        raise ValueError("note has no patient element (already de-identified?)")
    identifiers = note_identifiers(note)
    fields = {
        "findings": scrub(note.findings, identifiers),
        "impression": scrub(note.impression, identifiers),
        "diagnosis label": scrub(note.diagnosis.label, identifiers),
    }
    for field, text in fields.items():
        residual = residual_identifiers(text, identifiers)
        if residual:
            return Refusal(
                f"phi: {field} free text still holds an identifier after scrubbing ({', '.join(residual)})"
            )
    return Note(
        study_uid=deidentified_uid(note.study_uid, pseudonym_key),
        findings=fields["findings"],
        impression=fields["impression"],
        diagnosis=Diagnosis(
            code=note.diagnosis.code,
            system=note.diagnosis.system,
            label=fields["diagnosis label"],
        ),
        patient=None,
        author=None,
        patient_pseudonym=pseudonym(note.patient.patient_id, pseudonym_key),
    )


# ---------------------------------------------------------------------------
# Labels

#: Diagnosis codes, by normalised coding system, as code prefixes.
LESION_CODES: dict[str, tuple[str, ...]] = {
    # R91.1 solitary pulmonary nodule, R91.8 other nonspecific abnormal finding
    # of lung field, C34 malignant neoplasm of bronchus and lung, D02.2
    # carcinoma in situ of bronchus and lung, D14.3 benign neoplasm of bronchus
    # and lung, D38.1 neoplasm of uncertain behaviour of trachea, bronchus, lung.
    "ICD-10": ("R91.1", "R91.8", "C34", "D02.2", "D14.3", "D38.1"),
}
NORMAL_CODES: dict[str, tuple[str, ...]] = {
    # Z00.00 general examination without abnormal findings, Z03.89
    # observation for suspected condition ruled out.
    "ICD-10": ("Z00.00", "Z03.89"),
}
_SYSTEM_ALIASES = {"ICD10": "ICD-10", "ICD-10-CM": "ICD-10", "ICD10CM": "ICD-10", "ICD-10": "ICD-10"}


def code_label(system: str, code: str) -> int | None:
    """1 for a lesion code, 0 for a normal code, ``None`` for anything else."""
    normalised = _SYSTEM_ALIASES.get(system.strip().upper().replace(" ", ""), system.strip().upper())
    code = code.strip().upper()
    if any(code.startswith(prefix) for prefix in LESION_CODES.get(normalised, ())):
        return 1
    if any(code == prefix or code.startswith(prefix + ".") for prefix in NORMAL_CODES.get(normalised, ())):
        return 0
    return None


def text_label(findings: list[Finding]) -> int | None:
    """1 if any lesion is asserted, 0 if lesions are only negated, ``None`` otherwise."""
    if any(f.asserted for f in findings):
        return 1
    if any(f.uncertain for f in findings):
        return None
    if any(f.negated for f in findings):
        return 0
    return None


def note_label(note: Note) -> int | None:
    """The label a note supports: 1 lesion, 0 normal, ``None`` contradictory or unclear.

    1 when a lesion is asserted or the code is a lesion code; 0 when the code
    is normal and the text asserts no lesion (only negated findings, or none);
    ``None`` when text and code contradict each other (asserted lesion with a
    normal code, only negated findings with a lesion code), when the text is
    only uncertain and the code is not a lesion code, or when neither decides.
    """
    code = code_label(note.diagnosis.system, note.diagnosis.code)
    findings = extract_findings(note)
    text = text_label(findings)
    uncertain_only = text is None and any(f.uncertain for f in findings)
    if (code == 1 and text == 0) or (code == 0 and text == 1):
        return None
    if code == 1 or text == 1:
        return 1
    if code == 0 and not uncertain_only:
        return 0
    return None


def consistency(note_label: int | None, image_label: int | bool | None) -> bool:
    """Whether a note's label supports the image's label. Unclear never counts as agreeing."""
    if note_label is None or image_label is None or isinstance(image_label, float):
        return False
    if int(image_label) not in (0, 1):
        return False
    return int(note_label) == int(image_label)
