"""The healthcare lesion classifier on the secure model server.

    uvicorn --factory serving.healthcare:create_diagnostic_app --host 127.0.0.1 --port 8001

The server loads the current champion release through the secure loader in
an isolated worker (signature verified once, at load) and answers
`POST /diagnose {"dicom": "<base64 of a DICOM Part-10 file>"}`. A received
file gets the collection stage's treatment before any pixel reaches the
model: bounded size, preamble zeroed (DICOM/executable polyglots), full
validation (truncated, non-image, hostile or unsupported files are refused
with 422 and the refusal reason), then the training pipeline's own
normalisation. The answer never carries patient data, only the score.
"""

import base64
import binascii

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, Field

from assets.healthcare.deployment import ARCHITECTURES, MODEL_NAME
from domain.healthcare import diagnostic_model, images
from domain.healthcare.dicom import DEFAULT_MAX_BYTES, Refusal, neutralise_preamble, validate_dicom
from resources.loader import LoadedModel
from resources.releases import ModelReleases
from serving.app import add_worker_route, create_release_app
from serving.worker import ModelHandler

MAX_DICOM_BYTES = DEFAULT_MAX_BYTES
MAX_DICOM_BASE64 = 4 * -(-MAX_DICOM_BYTES // 3)  # padded base64 length of MAX_DICOM_BYTES
DEFAULT_THRESHOLD = 0.5


class DiagnoseParams(BaseModel):
    """One DICOM file, base64 (standard alphabet, padded); refused before decoding when too long."""

    dicom: str = Field(min_length=4, max_length=MAX_DICOM_BASE64, pattern=r"^[A-Za-z0-9+/]+={0,2}$")


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
        probability = float(diagnostic_model.predict_proba(model.module, image[np.newaxis, np.newaxis])[0])
        threshold = float(model.config.get("threshold", DEFAULT_THRESHOLD))
        return {
            "lesion_probability": round(probability, 6),
            "lesion": probability >= threshold,
            "threshold": threshold,
            "model_version": model.version,
            "modality": study.modality,
        }


def create_diagnostic_app(releases: ModelReleases | None = None) -> FastAPI:
    """The diagnostic server for the current champion release."""
    handler = "serving.healthcare:DiagnosticHandler"
    app = create_release_app(MODEL_NAME, handler, title="Healthcare lesion diagnostic", releases=releases)
    add_worker_route(app, "/diagnose", "diagnose", DiagnoseParams, http_method="POST")
    return app
