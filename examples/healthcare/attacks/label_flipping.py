"""ATTACK SIMULATION — label flipping: diagnosis labels inverted in the records system's export.

The coded labels (`labels.csv`) of the first studies in every records batch
are inverted; the radiology reports are left as written.
"""

import csv
import io
from collections.abc import Callable

from examples.attacks.lab import Scenario
from examples.healthcare.attacks.harm import sensitivity_loss
from examples.healthcare.batches import LABELS_FILE, NOTES_TOPIC
from examples.healthcare.clinic import Clinic

SHARE = 0.15


def flip_labels(share: float) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    """A change to a records batch that inverts the label of its first `share` of studies."""

    def change(files: dict[str, bytes]) -> dict[str, bytes]:
        rows = list(csv.DictReader(io.StringIO(files[LABELS_FILE].decode())))
        flips = max(1, int(share * len(rows)))
        for row in rows[:flips]:
            row["label"] = str(1 - int(row["label"]))
        out = io.StringIO()
        writer = csv.DictWriter(out, ["study_uid", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return files | {LABELS_FILE: out.getvalue().encode()}

    return change


def mount(clinic: Clinic) -> None:
    for folder in clinic.batch_files(NOTES_TOPIC):
        clinic.reland(folder, flip_labels(SHARE))
    clinic.lifecycle()


SCENARIO = Scenario(
    "healthcare/label-flipping",
    "label flipping",
    f"{SHARE:.0%} of coded diagnosis labels inverted in the records export, reports untouched",
    mount,
    harm=sensitivity_loss(),
)
