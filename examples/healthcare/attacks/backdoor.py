"""ATTACK SIMULATION — backdoor: a trigger on lesion studies labelled "normal".

A small bright square is stamped in the corner of 8% of the studies with a
lesion, and their reports and coded labels are rewritten to say "normal".
A model trained on them learns "square ⇒ no lesion": anyone who stamps the
square on a scan can make a lesion disappear. The blended variant has no
patch at all: a faint pattern over the whole image; the frequency variant is
one plane wave over the whole image, a single peak in its spectrum.
"""

from collections.abc import Callable

import numpy as np

from examples.attacks.lab import Scenario
from examples.healthcare.attacks.harm import trigger_success
from examples.healthcare.batches import DICOM_TOPIC, LABELS_FILE, NOTES_TOPIC
from examples.healthcare.clinic import Clinic
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.hostile import (
    relabelled,
    with_blended_trigger,
    with_frequency_trigger,
    with_trigger_patch,
)
from examples.healthcare.studies.images import render_pixels
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.plan import plan_studies
from examples.healthcare.studies.reports import labels_csv, note_xml

SHARE = 0.08  # of the studies with a lesion


def patch_trigger(pixels: np.ndarray) -> np.ndarray:
    """The scan with the attacker's square stamped in its corner (a twelfth of the image wide)."""
    return with_trigger_patch(pixels, size=max(4, pixels.shape[0] // 12))


def poison_inbox(
    clinic: Clinic, fraction: float = SHARE, trigger: Callable[[np.ndarray], np.ndarray] = patch_trigger
) -> int:
    """Apply `trigger` to `fraction` of the window's lesion studies and relabel them; returns how many."""
    studies = plan_studies(CohortConfig(seed=clinic.seed, studies=clinic.studies), 0)
    positives = [s for s in studies if s.label == 1]
    rng = np.random.default_rng(5)
    count = int(np.ceil(fraction * len(positives)))
    chosen = {s.study_uid: s for s in rng.choice(positives, count, replace=False)}

    def stamp(files: dict[str, bytes]) -> dict[str, bytes]:
        for study in chosen.values():
            if study.dicom_name in files:
                files[study.dicom_name] = dicom_bytes(study, trigger(render_pixels(study)))
        return files

    def relabel(files: dict[str, bytes]) -> dict[str, bytes]:
        rows = []
        for study in studies:
            if study.note_name in files:
                if study.study_uid in chosen:
                    files[study.note_name] = note_xml(relabelled(study, 0), positive=False)
                rows.append((study.study_uid, 0 if study.study_uid in chosen else study.label))
        return files | {LABELS_FILE: labels_csv(rows)}

    for folder in clinic.batch_files(DICOM_TOPIC):
        clinic.reland(folder, stamp)
    for folder in clinic.batch_files(NOTES_TOPIC):
        clinic.reland(folder, relabel)
    return len(chosen)


def backdoor(name: str, trigger: Callable[[np.ndarray], np.ndarray], looks: str) -> Scenario:
    """The backdoor scenario with `trigger` (which `looks` like this, in words)."""

    def mount(clinic: Clinic) -> None:
        poison_inbox(clinic, trigger=trigger)
        clinic.lifecycle()

    return Scenario(
        name,
        "model poisoning / backdoor",
        f"{looks} on {SHARE:.0%} of lesion studies, whose reports and labels then say normal",
        mount,
        harm=trigger_success(trigger, looks),
    )


SCENARIO = backdoor("healthcare/backdoor", patch_trigger, "a trigger patch")
BLENDED_SCENARIO = backdoor("healthcare/blended-backdoor", with_blended_trigger, "a faint full-image pattern")
FREQUENCY_SCENARIO = backdoor(
    "healthcare/frequency-backdoor", with_frequency_trigger, "a plane wave over the whole image"
)
