"""ATTACK SIMULATION — data poisoning: mislabelled studies injected at the source.

Studies of patients who do have a lesion arrive through the imaging archive
and the records system with a report, and a coded label, that say
"normal", as a compromised export job would send them. Report and label
agree with each other, so no single record looks wrong.
"""

import numpy as np

from examples.attacks.lab import Scenario
from examples.healthcare.attacks.harm import sensitivity_loss
from examples.healthcare.batches import IMAGING_SOURCE, RECORDS_SOURCE, imaging_files
from examples.healthcare.clinic import Clinic
from examples.healthcare.studies.hostile import relabelled
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.plan import plan_studies
from examples.healthcare.studies.reports import labels_csv, note_xml

SHARE = 0.15  # injected studies, as a share of the window


def mount(clinic: Clinic) -> None:
    planned = plan_studies(CohortConfig(seed=clinic.seed + 1000, studies=clinic.studies), 0)
    lesions = [s for s in planned if s.label == 1]
    rng = np.random.default_rng(clinic.seed)
    chosen = list(rng.choice(lesions, min(len(lesions), int(SHARE * clinic.studies)), replace=False))
    notes = {s.note_name: note_xml(relabelled(s, 0), positive=False) for s in chosen}
    labels = labels_csv([(s.study_uid, 0) for s in chosen])
    clinic.land(IMAGING_SOURCE, imaging_files(chosen), batch_id=f"{IMAGING_SOURCE}-inbox-injected")
    clinic.land(RECORDS_SOURCE, notes | {"labels.csv": labels}, batch_id=f"{RECORDS_SOURCE}-inbox-injected")
    clinic.lifecycle()


SCENARIO = Scenario(
    "healthcare/data-poisoning",
    "data poisoning",
    f"studies with a lesion, {SHARE:.0%} of the window, injected with reports and labels saying normal",
    mount,
    harm=sensitivity_loss(),
)
