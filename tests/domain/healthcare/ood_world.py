"""A tiny simulated world for the out-of-distribution tests: DICOM studies, a small CNN and its guard.

Studies are written uncompressed (`profiles.uncompressed`): the guard is about
acquisition, not encoding, and the tests should not depend on the codecs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from domain.healthcare import diagnostic_model, images, ood
from domain.healthcare.dicom import ValidatedStudy, validate_dicom
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.model import CohortConfig, Study
from examples.healthcare.studies.plan import plan_studies
from examples.healthcare.studies.profiles import uncompressed
from serving.diagnostic_handler import IMAGE_MODALITIES

SIZE = 32  # the serving and domain tests' model; the feedback tests need the pipeline's 64 px
TRAIN_SEED = 3  # the world the model and its guard are fitted on
TEST_SEED = 21  # never used to fit or calibrate anything
CONFIG = diagnostic_model.CNNConfig(
    image_size=SIZE, channels=(8, 16, 16), epochs=4, batch_size=32, adversarial_epsilon=0.0
)


def config(size: int) -> diagnostic_model.CNNConfig:
    return replace(CONFIG, image_size=size)


@dataclass(frozen=True)
class Loaded:
    images: np.ndarray  # [n, 1, SIZE, SIZE]
    records: list[dict]
    labels: np.ndarray


def load(dicoms: list[bytes], labels: list[int] | None = None, size: int = SIZE) -> Loaded:
    """Validated (any image modality) and normalised as the server does, with acquisition records."""
    xs, records = [], []
    for data in dicoms:
        study = validate_dicom(data, allowed_modalities=IMAGE_MODALITIES)
        assert isinstance(study, ValidatedStudy), study
        xs.append(images.normalise(study.dataset, study.pixels, size))
        records.append(ood.acquisition(study.dataset))
    return Loaded(np.stack(xs)[:, np.newaxis], records, np.asarray(labels or [0] * len(xs)))


def studies(seed: int, n: int) -> list[Study]:
    return [uncompressed(study) for study in plan_studies(CohortConfig(seed=seed, studies=n), 0)]


@cache
def trained(size: int = SIZE) -> tuple[diagnostic_model.LesionCNN, ood.OODGuard, Loaded]:
    """The CNN on 300 studies of the training world, its guard calibrated on 100 more held out."""
    world = studies(TRAIN_SEED, 400)
    data = load([dicom_bytes(s) for s in world], [s.label for s in world], size)
    cut = 300
    model = diagnostic_model.train_cnn(data.images[:cut], data.labels[:cut], config(size))
    guard = diagnostic_model.fit_model_guard(
        model,
        (data.images[:cut], data.labels[:cut], data.records[:cut]),
        (data.images[cut:], data.records[cut:]),
    )
    return model, guard, data
