"""Worker-side half of the diagnostic server: what runs next to the loaded model.

A received file gets the collection stage's treatment before any pixel
reaches the model (bounded size, preamble zeroed, full validation), then the
training pipeline's own normalisation. Imported by the isolated worker
(`serving.worker`), so it imports the model contract and DICOM handling and
nothing of the server or the pipeline.
"""

import base64
import binascii

import numpy as np

from domain.healthcare import images, lesion_cnn
from domain.healthcare.dicom import DEFAULT_MAX_BYTES, Refusal, neutralise_preamble, validate_dicom
from domain.healthcare.release import ARCHITECTURES
from resources.loader import LoadedModel
from serving.worker import ModelHandler

MAX_DICOM_BYTES = DEFAULT_MAX_BYTES
MAX_DICOM_BASE64 = 4 * -(-MAX_DICOM_BYTES // 3)  # padded base64 length of MAX_DICOM_BYTES
DEFAULT_THRESHOLD = 0.5


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
    """Worker-side: validate one DICOM file as collection does, normalise it as training does, score it."""

    architectures = ARCHITECTURES
    methods = ("diagnose",)

    def diagnose(self, model: LoadedModel, params: dict) -> dict:
        neutralised = neutralise_preamble(decode_dicom(params.get("dicom")))
        study = (
            neutralised
            if isinstance(neutralised, Refusal)
            else validate_dicom(neutralised.data, max_bytes=MAX_DICOM_BYTES)
        )
        if isinstance(study, Refusal):
            raise ValueError(study.reason)
        size = model.config["architecture"]["image_size"]
        image = images.normalise(study.dataset, study.pixels, size)
        probability = float(lesion_cnn.predict_proba(model.module, image[np.newaxis, np.newaxis])[0])
        threshold = float(model.config.get("threshold", DEFAULT_THRESHOLD))
        return {
            "lesion_probability": round(probability, 6),
            "lesion": probability >= threshold,
            "threshold": threshold,
            "model_version": model.version,
            "modality": study.modality,
        }
