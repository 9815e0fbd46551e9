"""Worker-side half of the diagnostic server: what runs next to the loaded model.

A received file gets the collection stage's treatment before any pixel
reaches the model (bounded size, preamble zeroed, full validation), then the
training pipeline's own normalisation, then the release's out-of-distribution
guard (`domain.healthcare.ood`): a study whose acquisition or image features
lie outside what the model was trained on is refused, not scored. A release
without the guard is refused at load. Imported by the isolated worker
(`serving.worker`), so it imports the model contract and DICOM handling and
nothing of the server or the pipeline.
"""

import base64
import binascii

import numpy as np

from domain.healthcare import images, lesion_cnn, ood
from domain.healthcare.dicom import (
    DEFAULT_MAX_BYTES,
    IMAGE_STORAGE_SOP_CLASSES,
    Refusal,
    neutralise_preamble,
    validate_dicom,
)
from domain.healthcare.release import ARCHITECTURES
from resources.loader import LoadedModel
from serving.worker import ModelHandler

MAX_DICOM_BYTES = DEFAULT_MAX_BYTES
MAX_DICOM_BASE64 = 4 * -(-MAX_DICOM_BYTES // 3)  # padded base64 length of MAX_DICOM_BYTES
DEFAULT_THRESHOLD = 0.5
# Every image modality is validated; which ones the model answers for is its guard's envelope.
IMAGE_MODALITIES = sorted(
    {m for modalities in IMAGE_STORAGE_SOP_CLASSES.values() if modalities for m in modalities}
)


def decode_dicom(text: object) -> bytes:
    """The DICOM bytes of a base64 string, or ValueError; the length is bounded before decoding."""
    if not isinstance(text, str) or not text:
        raise ValueError("'dicom' must be a non-empty base64 string")
    if len(text) > MAX_DICOM_BASE64:
        raise ValueError(f"'dicom' is longer than {MAX_DICOM_BASE64} base64 characters")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"'dicom' is not valid base64: {exc}") from exc


class DiagnosticHandler(ModelHandler):
    """Worker-side: validate a DICOM file as collection does, normalise it as training does, guard, score."""

    architectures = ARCHITECTURES
    methods = ("diagnose",)

    def __init__(self) -> None:
        self._guards: dict[str, ood.OODGuard] = {}

    def guard(self, model: LoadedModel) -> ood.OODGuard:
        """The release's out-of-distribution guard (parsed once), or ValueError when it has none."""
        if model.digest not in self._guards:
            self._guards[model.digest] = ood.OODGuard.from_dict(
                model.config.get(ood.CONFIG_KEY), model.module.embedding_dim
            )
        return self._guards[model.digest]

    def accept(self, model: LoadedModel) -> None:
        self.guard(model)

    def diagnose(self, model: LoadedModel, params: dict) -> dict:
        neutralised = neutralise_preamble(decode_dicom(params.get("dicom")))
        study = (
            neutralised
            if isinstance(neutralised, Refusal)
            else validate_dicom(
                neutralised.data, max_bytes=MAX_DICOM_BYTES, allowed_modalities=IMAGE_MODALITIES
            )
        )
        if isinstance(study, Refusal):
            raise ValueError(study.reason)
        size = model.config["architecture"]["image_size"]
        image = images.normalise(study.dataset, study.pixels, size)[np.newaxis, np.newaxis]
        (verdict,) = self.guard(model).assess(
            [ood.acquisition(study.dataset)], lesion_cnn.embed_images(model.module, image)
        )
        if not verdict.inside:
            raise ValueError(f"{ood.REFUSAL}: {verdict.reason}")
        probability = float(lesion_cnn.predict_proba(model.module, image)[0])
        threshold = float(model.config.get("threshold", DEFAULT_THRESHOLD))
        return {
            "lesion_probability": round(probability, 6),
            "lesion": probability >= threshold,
            "threshold": threshold,
            "model_version": model.version,
            "modality": study.modality,
            "feature_distance": round(float(verdict.distance), 4),
        }
