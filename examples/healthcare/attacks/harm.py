"""ATTACK SIMULATION — harm: what a healthcare attack did to the released model's diagnoses.

Measured on lesion studies of a world the pipeline never saw (another seed),
through the released model the servers would load (signature, digests and
trust store verified), at the release's own threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

import numpy as np
import pydicom

from domain.healthcare import lesion_cnn
from domain.healthcare.images import normalise
from domain.healthcare.release import ARCHITECTURES, MODEL_NAME
from examples.attacks.harm import Effect, HarmProbe, paired_effect, released_model
from examples.healthcare.attacks.pipeline import one_release
from examples.healthcare.clinic import Clinic
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.images import render_pixels
from examples.healthcare.studies.model import CohortConfig, Study
from examples.healthcare.studies.plan import plan_studies

UNSEEN_WORLD = 7_919  # added to the clinic's seed: held-out studies come from a world no scenario draws from
HELD_OUT_LESIONS = 300


def held_out_lesions(clinic: Clinic, keep: Callable[[Study], bool] = lambda study: True) -> list[Study]:
    """Up to `HELD_OUT_LESIONS` lesion studies (those `keep` accepts) of a world the clinic never saw."""
    studies = plan_studies(CohortConfig(seed=clinic.seed + UNSEEN_WORLD, studies=10 * clinic.studies), 0)
    return [s for s in studies if s.label == 1 and keep(s)][:HELD_OUT_LESIONS]


def lesions_found(
    clinic: Clinic, studies: list[Study], pixels: Callable[[Study], np.ndarray] = render_pixels
) -> np.ndarray:
    """For each study, whether the clinic's released model calls a lesion on `pixels(study)`."""
    model = released_model(clinic, MODEL_NAME, ARCHITECTURES)
    size = model.config["architecture"]["image_size"]
    inputs = []
    for study in studies:
        ds = pydicom.dcmread(BytesIO(dicom_bytes(study, pixels(study))))
        inputs.append(normalise(ds, ds.pixel_array, size))
    probabilities = lesion_cnn.predict_proba(model.module, np.stack(inputs)[:, np.newaxis])
    return probabilities >= float(model.config.get("threshold", 0.5))


def sensitivity_loss(
    keep: Callable[[Study], bool] = lambda study: True,
    name: str = "sensitivity",
    counterpart: Callable[[Clinic], object] = one_release,
) -> HarmProbe:
    """Lesions the attacked release misses that the same world's clean release finds, net, as a share.

    The clean release is what `counterpart` makes of the same world prepared the same way.
    """

    def effect(attacked: Clinic, clean: Clinic | None) -> Effect:
        studies = held_out_lesions(attacked, keep)
        return paired_effect(name, lesions_found(clean, studies), lesions_found(attacked, studies))

    return HarmProbe(f"{name} lost against a release trained without the attack", effect, counterpart)


def trigger_success(trigger: Callable[[np.ndarray], np.ndarray], name: str = "trigger") -> HarmProbe:
    """Lesions the attacked release finds on a clean scan and misses once the trigger is applied, net."""

    def effect(attacked: Clinic, clean: Clinic | None) -> Effect:
        studies = held_out_lesions(attacked)
        return paired_effect(
            name,
            lesions_found(attacked, studies),
            lesions_found(attacked, studies, lambda study: trigger(render_pixels(study))),
        )

    return HarmProbe(f"lesions hidden by {name} (missed with it, found without)", effect)
