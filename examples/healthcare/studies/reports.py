"""What the records system sends: the radiology report of each study and the label file.

`note_xml` writes a study's report as an XML clinical note (patient
identifiers, history, findings with negations and incidental findings,
impression, ICD-10 code, signature), worded from the study's finding or, for
attack scenarios, from an overridden one; `labels_csv` writes the coded
labels (1 = lesion) that training uses.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - builds XML, never parses it

import numpy as np

from examples.healthcare.studies.model import Finding, Study, random_stream, title_case
from examples.healthcare.studies.plan import overcall

# Diagnosis codes (ICD-10-CM) a report may carry. A lesion code means label 1.
LESION_CODES = {
    "R91.1": "Solitary pulmonary nodule",
    "R91.8": "Other nonspecific abnormal finding of lung field",
    "R90.0": "Intracranial space-occupying lesion found on diagnostic imaging of central nervous system",
}
NEGATIVE_CODES = {
    "Z00.00": "Encounter for general adult medical examination without abnormal findings",
    "Z03.89": "Encounter for observation for other suspected diseases and conditions ruled out",
    "R05.9": "Cough, unspecified",
    "R51.9": "Headache, unspecified",
}

_LUNG_SITE = {"upper": "upper lobe", "middle": "middle lobe", "lower": "lower lobe"}
_NEGATIVE_CHEST = (
    "No evidence of nodule.",
    "No pulmonary nodule or mass.",
    "The lungs are clear without focal mass.",
    "Negative for pulmonary nodules.",
    "No suspicious pulmonary nodule is identified.",
    "There is no focal consolidation, nodule or mass.",
    "No nodule, mass or consolidation is seen.",
)
_NEGATIVE_CHEST_PRIOR = (
    "The previously noted nodule is no longer seen.",
    "No residual nodule compared with prior.",
)
_OTHER_CHEST = (
    "No pleural effusion or pneumothorax.",
    "Heart size is normal.",
    "The mediastinal contours are unremarkable.",
    "No acute osseous abnormality.",
    "Mild degenerative changes of the thoracic spine.",
    "No hilar or mediastinal lymphadenopathy.",
    "Trachea is midline.",
)
_NEGATIVE_NEURO = (
    "No intracranial mass or mass effect.",
    "No abnormal signal in the brain parenchyma.",
    "Negative for intracranial mass lesion.",
    "No evidence of acute infarct, hemorrhage or mass.",
    "There is no focal lesion.",
)
_OTHER_NEURO = (
    "The ventricles and sulci are normal in size for age.",
    "No midline shift.",
    "The visualized paranasal sinuses are clear.",
    "No extra-axial fluid collection.",
    "Scattered punctate white matter hyperintensities, likely chronic microvascular change.",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _positive_text(rng: np.random.Generator, study: Study, f: Finding) -> tuple[str, str, str]:
    """A lesion's findings sentence, impression and diagnosis code."""
    d, cm = f.diameter_mm, f"{f.diameter_mm / 10:.1f}"
    if study.modality == "MR":
        where = f"{f.side} {f.site} lobe"
        sentence = _pick(
            rng,
            (
                f"There is a {d} mm {f.character} lesion in the {where}.",
                f"Focal {f.character} lesion measuring {d} mm within the {where} white matter.",
                f"A {d} mm {f.character} mass is present in the {where} with mild surrounding edema.",
            ),
        )
        impression = _pick(
            rng,
            (
                f"{f.side.capitalize()} {f.site} lobe lesion, {d} mm. "
                "Recommend contrast-enhanced follow-up MRI.",
                f"Intracranial lesion in the {where} measuring {d} mm; neoplasm not excluded.",
            ),
        )
        return sentence, impression, "R90.0"
    if study.modality == "CR":
        where = f"{f.side} {f.site} zone"
    else:
        where = f"{f.side} {_LUNG_SITE[f.site]}"
    if d < 30:
        sentence = _pick(
            rng,
            (
                f"There is a {d} mm {f.character} nodule in the {where}.",
                f"A {f.character} nodule measuring {d} mm is present in the {where}.",
                f"{where.capitalize()} {f.character} nodule, {d} mm.",
                f"New {d} mm nodule in the {where}."
                if study.prior
                else f"Noncalcified {d} mm nodule in the {where}.",
            ),
        )
        impression = _pick(
            rng,
            (
                f"Solitary pulmonary nodule in the {where}, {d} mm. "
                "Recommend follow-up CT in 6 to 12 months.",
                f"{d} mm {where} nodule, indeterminate.",
                "Solitary pulmonary nodule as described.",
            ),
        )
        return sentence, impression, "R91.1"
    sentence = _pick(
        rng,
        (
            f"There is a {cm} cm mass in the {where}.",
            f"{cm} cm {f.character} mass in the {where} with lobulated margins.",
            f"A lobulated mass measuring {cm} cm occupies the {where}.",
        ),
    )
    impression = _pick(
        rng,
        (
            f"Suspicious {cm} cm mass in the {where}; tissue sampling recommended.",
            f"{where.capitalize()} mass, {cm} cm, concerning for neoplasm.",
        ),
    )
    return sentence, impression, "R91.8"


def _negative_text(rng: np.random.Generator, study: Study) -> tuple[str, str, str]:
    if study.modality == "MR":
        sentence = _pick(rng, _NEGATIVE_NEURO)
        impression = _pick(
            rng, ("No acute intracranial abnormality.", "Normal MRI of the brain.", "No intracranial mass.")
        )
        code = "R51.9" if "headache" in study.indication and rng.random() < 0.6 else "Z03.89"
        return sentence, impression, code
    prior_options = _NEGATIVE_CHEST_PRIOR if study.prior and study.patient.diseased else ()
    sentence = _pick(rng, _NEGATIVE_CHEST + prior_options)
    impression = _pick(
        rng,
        (
            "No acute findings.",
            "No acute cardiopulmonary process.",
            "No evidence of pulmonary nodule or mass.",
            "Normal chest radiograph." if study.modality == "CR" else "Unremarkable CT of the chest.",
        ),
    )
    code = (
        "R05.9"
        if "cough" in study.indication and rng.random() < 0.5
        else str(rng.choice(["Z03.89", "Z00.00"]))
    )
    return sentence, impression, code


def note_xml(study: Study, *, positive: bool | None = None) -> bytes:
    """The radiology report of `study` as one UTF-8 XML document.

    `positive`, when given, overrides what the radiologist reported (for
    attack scenarios: a note rewritten to match a flipped label).
    """
    rng = random_stream(study.seed, "note")
    finding = study.finding
    if positive is not None and positive != (finding is not None):
        finding = overcall(rng, study.modality) if positive else None
    patient = study.patient
    age, sex = patient.age_on(study.time.date()), {"M": "man", "F": "woman"}[patient.sex]
    title = {"M": "Mr.", "F": "Ms."}[patient.sex]
    history = f"{title} {title_case(patient.family)} is a {age}-year-old {sex} with {study.indication}."
    if study.prior:
        history += f" Comparison: {study.description.split()[0]} of {study.prior.isoformat()}."
    else:
        history += " No prior imaging available for comparison."
    if finding is not None:
        sentence, impression, code = _positive_text(rng, study, finding)
    else:
        sentence, impression, code = _negative_text(rng, study)
    others = list(_OTHER_NEURO if study.modality == "MR" else _OTHER_CHEST)
    extra = [others[i] for i in rng.permutation(len(others))[: int(rng.integers(1, 4))]]
    position = int(rng.integers(0, 2)) if finding is None else 0  # a negation may come after other findings
    findings = " ".join(extra[:position] + [sentence] + extra[position:])
    system = LESION_CODES if code in LESION_CODES else NEGATIVE_CODES

    note = ET.Element("clinicalNote")
    person = ET.SubElement(note, "patient")
    ET.SubElement(person, "name").text = patient.dicom_name
    ET.SubElement(person, "id").text = patient.patient_id
    ET.SubElement(person, "birthDate").text = patient.birth_date.isoformat()
    ET.SubElement(person, "sex").text = patient.sex
    ET.SubElement(note, "author").text = study.radiologist
    ET.SubElement(note, "study", {"uid": study.study_uid})
    exam = ET.SubElement(
        note,
        "exam",
        {
            "modality": study.modality,
            "accession": study.accession,
            "date": study.time.strftime("%Y-%m-%dT%H:%M"),
        },
    )
    exam.text = study.description
    ET.SubElement(note, "referring_physician").text = study.referring
    ET.SubElement(note, "history").text = history
    ET.SubElement(note, "findings").text = findings
    ET.SubElement(note, "impression").text = impression
    ET.SubElement(note, "diagnosis", {"code": code, "system": "ICD-10", "label": system[code]})
    signed = ET.SubElement(note, "signed_by", {"time": study.report_time.strftime("%Y-%m-%dT%H:%M")})
    signed.text = study.radiologist
    ET.indent(note)
    return ET.tostring(note, encoding="utf-8", xml_declaration=True) + b"\n"


def labels_csv(rows: list[tuple[str, int]]) -> bytes:
    """The records system's label file: ``study_uid,label`` (1 = lesion), one row per study."""
    return ("study_uid,label\n" + "".join(f"{uid},{int(label)}\n" for uid, label in rows)).encode()
