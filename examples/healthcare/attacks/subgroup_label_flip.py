"""ATTACK SIMULATION — subgroup label flip: one modality's lesions reported as normal.

A compromised records export relabels lesion studies of one modality
(radiographs) as normal and rewrites their reports to say so, and — to keep
the overall lesion share where the baseline has it — relabels as many normal
studies of another modality (CT) as lesions, reports agreeing. No report
contradicts its label and the overall share does not move, yet the model
learns to miss lesions on radiographs.

The swap variant stays inside radiographs: as many radiograph normals as
lesions change places, so not even that modality's lesion share moves; only
the images contradict the labels.
"""

import csv
import io
from collections.abc import Callable
from functools import partial

from examples.attacks.lab import Scenario
from examples.healthcare.attacks.harm import sensitivity_loss
from examples.healthcare.batches import LABELS_FILE, NOTES_TOPIC
from examples.healthcare.clinic import Clinic
from examples.healthcare.studies.hostile import relabelled
from examples.healthcare.studies.model import CohortConfig, Study
from examples.healthcare.studies.plan import plan_studies
from examples.healthcare.studies.reports import note_xml

TARGET, COVER = "CR", "CT"  # lesions missed on radiographs; CT normals called lesions to hide it
SHARE = 0.08  # of the window relabelled each way: about a third of the radiographs' lesions
SWAP_SHARE = 0.03  # the swap: radiograph lesions called normal, and as many radiograph normals lesions


def victims(clinic: Clinic, share: float = SHARE, cover_modality: str = COVER) -> dict[str, Study]:
    """The inbox studies the attacker relabels, by study UID, each with its new label."""
    planned = plan_studies(CohortConfig(seed=clinic.seed, studies=clinic.studies), 0)
    count = int(share * clinic.studies)
    hidden = [s for s in planned if s.modality == TARGET and s.label == 1][:count]
    cover = [s for s in planned if s.modality == cover_modality and s.label == 0][: len(hidden)]
    return {s.study_uid: relabelled(s, 1 - s.label) for s in hidden + cover}


def relabel(chosen: dict[str, Study]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    """A change to a records batch: the chosen studies' labels and reports say what the attacker wants."""

    def change(files: dict[str, bytes]) -> dict[str, bytes]:
        rows = list(csv.DictReader(io.StringIO(files[LABELS_FILE].decode())))
        hit = [chosen[row["study_uid"]] for row in rows if row["study_uid"] in chosen]
        for row in rows:
            if row["study_uid"] in chosen:
                row["label"] = str(chosen[row["study_uid"]].label)
        out = io.StringIO()
        writer = csv.DictWriter(out, ["study_uid", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        notes = {s.note_name: note_xml(s, positive=bool(s.label)) for s in hit}
        return files | notes | {LABELS_FILE: out.getvalue().encode()}

    return change


def mount(clinic: Clinic, share: float = SHARE, cover_modality: str = COVER) -> None:
    change = relabel(victims(clinic, share, cover_modality))
    for folder in clinic.batch_files(NOTES_TOPIC):
        clinic.reland(folder, change)
    clinic.lifecycle()


SCENARIO = Scenario(
    "healthcare/subgroup-label-flip",
    "label flipping",
    f"{TARGET} lesion studies ({SHARE:.0%} of the window) relabelled normal and as many {COVER} normals "
    "relabelled lesion, reports agreeing: the overall lesion share unchanged",
    mount,
    harm=sensitivity_loss(lambda study: study.modality == TARGET, f"{TARGET} sensitivity"),
)

SWAP_SCENARIO = Scenario(
    "healthcare/subgroup-label-swap",
    "label flipping",
    f"{TARGET} lesion studies ({SWAP_SHARE:.0%} of the window) relabelled normal and as many "
    f"{TARGET} normals relabelled lesion, reports agreeing: no lesion share moves, overall or per modality",
    partial(mount, share=SWAP_SHARE, cover_modality=TARGET),
    harm=SCENARIO.harm,
)
