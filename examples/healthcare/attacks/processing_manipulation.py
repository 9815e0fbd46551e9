"""ATTACK SIMULATION — processing manipulation: preprocessing altered to relabel a subgroup.

The attacker edits `prepare_images` so that every MR study is labelled "no
lesion" (a model trained on it would miss lesions on MR), then lets the
scheduled lifecycle run it.
"""

from unittest import mock

from domain.healthcare import transforms
from examples.attacks.lab import Scenario
from examples.healthcare.clinic import Clinic

approved_prepare_images = transforms.prepare_images


def relabelling_prepare_images(studies, notes):
    """The attacker's copy: every MR study becomes "no lesion"."""
    frame, counts = approved_prepare_images(studies, notes)
    return frame.assign(label=frame["label"].where(frame["modality"] != "MR", 0)), counts


def mount(clinic: Clinic) -> None:
    with mock.patch.object(transforms, "prepare_images", relabelling_prepare_images):
        clinic.lifecycle()


SCENARIO = Scenario(
    "healthcare/processing-manipulation",
    "processing manipulation",
    "`prepare_images` edited to label every MR study as no lesion",
    mount,
)
