"""ATTACK SIMULATION — subgroup label flip: one modality's lesions reported as normal.

A compromised records export relabels lesion studies of one modality only
(radiographs) as normal, and rewrites their reports to say so: report and
coded label agree, the overall lesion share barely moves, yet the model
learns to miss lesions on exactly that modality.
"""

import csv
import io
from collections.abc import Callable

from examples.attacks.lab import Scenario
from examples.healthcare.batches import LABELS_FILE, NOTES_TOPIC
from examples.healthcare.clinic import Clinic
from examples.healthcare.studies.hostile import relabelled
from examples.healthcare.studies.model import CohortConfig, Study
from examples.healthcare.studies.plan import plan_studies
from examples.healthcare.studies.reports import note_xml

MODALITY = "CR"
SHARE = 0.08  # relabelled studies, as a share of the window: about a third of the modality's lesions


def victims(clinic: Clinic) -> dict[str, Study]:
    """The inbox's lesion studies of `MODALITY` the attacker relabels, by study UID."""
    planned = plan_studies(CohortConfig(seed=clinic.seed, studies=clinic.studies), 0)
    lesions = [s for s in planned if s.modality == MODALITY and s.label == 1]
    return {s.study_uid: s for s in lesions[: int(SHARE * clinic.studies)]}


def relabel_as_normal(chosen: dict[str, Study]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    """A change to a records batch: the chosen studies' labels and reports say normal."""

    def change(files: dict[str, bytes]) -> dict[str, bytes]:
        rows = list(csv.DictReader(io.StringIO(files[LABELS_FILE].decode())))
        hit = [chosen[row["study_uid"]] for row in rows if row["study_uid"] in chosen]
        for row in rows:
            if row["study_uid"] in chosen:
                row["label"] = "0"
        out = io.StringIO()
        writer = csv.DictWriter(out, ["study_uid", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        notes = {s.note_name: note_xml(relabelled(s, 0), positive=False) for s in hit}
        return files | notes | {LABELS_FILE: out.getvalue().encode()}

    return change


def mount(clinic: Clinic) -> None:
    change = relabel_as_normal(victims(clinic))
    for folder in clinic.batch_files(NOTES_TOPIC):
        clinic.reland(folder, change)
    clinic.lifecycle()


SCENARIO = Scenario(
    "healthcare/subgroup-label-flip",
    "label flipping",
    f"lesion studies of one modality ({MODALITY}), {SHARE:.0%} of the window, relabelled normal "
    "with reports rewritten to agree",
    mount,
)
