"""The healthcare transformation code the signed code manifest covers.

Processing runs these functions only when their code digest matches the
approved manifest (`make approve-code`): a change that relabels a subgroup
or biases preprocessing refuses to publish until a reviewer approves it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO

import numpy as np
import pandas as pd
import pydicom

from domain.healthcare.diagnostic_model import patient_split
from domain.healthcare.images import IMAGE_SIZE, from_blobs, normalise, to_blob
from domain.healthcare.note_context import extract_findings
from domain.healthcare.notes import Diagnosis, Note

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
IMAGE_COLUMNS = [
    "study_uid",
    "patient_pseudonym",
    "modality",
    "label",
    "note_label",
    "rows",
    "pixel_spacing",
    "window_center",
    "window_width",
    "mean_intensity",
    "image",
]


def prepare_images(studies: pd.DataFrame, notes: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Labelled, normalised images: each de-identified study joined to its note by study UID.

    A study whose note names another patient is left out and counted (the
    link is broken, so the label cannot be trusted); studies without a note
    and notes without a study are counted too. Returns the table and those counts.
    """
    joined = studies.merge(
        notes[["study_uid", "patient_pseudonym", "label", "note_label"]],
        on="study_uid",
        how="inner",
        suffixes=("", "_note"),
    )
    linked = joined["patient_pseudonym"] == joined["patient_pseudonym_note"]
    joined = joined[linked]
    images, means = [], []
    for blob in joined["dicom"]:
        ds = pydicom.dcmread(BytesIO(blob))
        image = normalise(ds, ds.pixel_array, IMAGE_SIZE)
        images.append(to_blob(image))
        means.append(float(image.mean()))
    frame = joined.assign(image=images, mean_intensity=means)[IMAGE_COLUMNS].reset_index(drop=True)
    frame["label"] = frame["label"].astype("int8")
    counts = {
        "images": len(frame),
        "studies_without_note": int((~studies["study_uid"].isin(notes["study_uid"])).sum()),
        "notes_without_study": int((~notes["study_uid"].isin(studies["study_uid"])).sum()),
        "patient_link_mismatches": int((~linked).sum()),
    }
    return frame, counts


def assign_splits(images: pd.DataFrame, seed: int) -> pd.DataFrame:
    """`images` with a `split` column: train, validation or test, every patient in exactly one."""
    splits = patient_split(images, fractions=SPLIT_FRACTIONS, seed=seed)
    by_study = {uid: name for name, uids in splits.items() for uid in uids}
    return images.assign(split=images["study_uid"].map(by_study))


def note_findings(notes: pd.DataFrame) -> pd.DataFrame:
    """Lesion findings in each report, with negation and uncertainty (rule-based, no downloaded model)."""
    rows = []
    for record in notes.itertuples(index=False):
        note = Note(
            study_uid=record.study_uid,
            findings=record.findings,
            impression=record.impression,
            diagnosis=Diagnosis(record.diagnosis_code, record.diagnosis_system, record.diagnosis_label),
        )
        findings = extract_findings(note)
        rows.append(
            {
                "study_uid": record.study_uid,
                "asserted": int(sum(f.asserted for f in findings)),
                "negated": int(sum(f.negated for f in findings)),
                "uncertain": int(sum(f.uncertain for f in findings)),
                "terms": json.dumps(sorted({f.term for f in findings})),
                "note_label": record.note_label,
                "label": record.label,
            }
        )
    columns = ["study_uid", "asserted", "negated", "uncertain", "terms", "note_label", "label"]
    return pd.DataFrame(rows, columns=columns)


def approved_transforms() -> dict[str, Callable[..., object]]:
    """The transformation functions the signed code manifest covers, by name."""
    return {
        "prepare_images": prepare_images,
        "assign_splits": assign_splits,
        "note_findings": note_findings,
    }


def image_array(frame: pd.DataFrame) -> np.ndarray:
    """The `image` column as the CNN's input, float32 ``[n, 1, size, size]``."""
    return from_blobs(list(frame["image"]), IMAGE_SIZE)
