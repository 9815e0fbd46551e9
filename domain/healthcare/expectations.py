"""Great Expectations suites for the healthcare tables, declared in code."""

from __future__ import annotations

import great_expectations.expectations as gxe

from domain.healthcare.diagnostic_model import SPLITS
from resources.validation import Suite

MODALITIES = ["CT", "CR", "MR"]


def _not_null(*columns: str) -> list:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]


def _labels(*columns: str) -> list:
    return [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[0, 1]) for c in columns]


_DEIDENTIFIED = [
    gxe.ExpectColumnValuesToMatchRegex(column="patient_pseudonym", regex=r"^anon-[0-9a-f]{16}$"),
    gxe.ExpectColumnValuesToMatchRegex(column="study_uid", regex=r"^2\.25\.[0-9]+$"),
    gxe.ExpectColumnValuesToBeUnique(column="study_uid"),
    gxe.ExpectTableRowCountToBeBetween(min_value=1),
]

STUDIES_SUITE = Suite(
    "healthcare.imaging_studies",
    [
        *_not_null("study_uid", "sop_uid", "patient_pseudonym", "modality", "rows", "columns"),
        *_DEIDENTIFIED,
        gxe.ExpectColumnValuesToBeInSet(column="modality", value_set=MODALITIES),
        gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=32, max_value=1024),
        gxe.ExpectColumnValuesToBeBetween(column="columns", min_value=32, max_value=1024),
    ],
)

NOTES_SUITE = Suite(
    "healthcare.clinical_notes",
    [
        *_not_null("study_uid", "patient_pseudonym", "diagnosis_code", "label"),
        *_DEIDENTIFIED,
        *_labels("label"),
        gxe.ExpectColumnValuesToBeInSet(column="note_label", value_set=[0, 1], mostly=1.0),
        gxe.ExpectColumnValueLengthsToBeBetween(column="findings", min_value=1, max_value=20_000),
    ],
)

STUDY_IMAGES_SUITE = Suite(
    "healthcare.study_images",
    [
        *_not_null("study_uid", "patient_pseudonym", "modality", "label", "split", "mean_intensity"),
        *_DEIDENTIFIED,
        *_labels("label"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeBetween(column="mean_intensity", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeInSet(column="modality", value_set=MODALITIES),
    ],
)

NOTE_FINDINGS_SUITE = Suite(
    "healthcare.note_findings",
    [
        *_not_null("study_uid", "asserted", "negated", "uncertain", "label"),
        gxe.ExpectColumnValuesToBeUnique(column="study_uid"),
        gxe.ExpectColumnValuesToBeBetween(column="asserted", min_value=0, max_value=100),
        *_labels("label"),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ],
)

TRAINING_SET_SUITE = Suite(
    "healthcare.training_set",
    [
        *_not_null("study_uid", "patient_pseudonym", "label", "split", "tier"),
        *_labels("label"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="tier", value_set=["trusted", "untrusted"]),
        gxe.ExpectColumnValuesToBeUnique(column="study_uid"),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ],
)
