"""ATTACK SIMULATION — storage tampering: the stored model's weights changed at rest.

After the first model was trained and released, someone with write access
to the artifact store flips one byte of its stored weights file. The next
nightly audit re-hashes the store.
"""

from examples.attacks.lab import Scenario
from examples.attacks.storage import flip_a_byte
from examples.healthcare.attacks.pipeline import one_release
from examples.healthcare.clinic import Clinic
from resources.signing import WEIGHTS_FILE


def mount(clinic: Clinic) -> None:
    flip_a_byte(clinic, f"healthcare/diagnostic_model/{WEIGHTS_FILE}", kind="artifact-file")
    clinic.run("healthcare_audit")


SCENARIO = Scenario(
    "healthcare/storage-tampering",
    "storage tampering",
    "one byte of the stored model's weights flipped after training",
    mount,
    one_release,
)
