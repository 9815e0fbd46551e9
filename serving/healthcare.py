"""The healthcare lesion classifier on the secure model server.

    make serve-healthcare            # or: python -m serving.healthcare

The server loads the current champion release through the secure loader in
an isolated worker (verified at load, and again whenever the release changes) and answers
`POST /diagnose {"dicom": "<base64 of a DICOM Part-10 file>"}` to clients
holding the `diagnose` scope (`admin` for `/metrics`). A received
file gets the collection stage's treatment before any pixel reaches the
model: bounded size, preamble zeroed (DICOM/executable polyglots), full
validation (truncated, non-image, hostile or unsupported files are refused
with 422 and the refusal reason), then the training pipeline's own
normalisation. The answer never carries patient data, only the score.
It listens on `SERVING_HOST` (default 127.0.0.1) and `SERVING_PORT` (default
8001); TLS, mutual TLS and who may call it are set by the variables listed in
`serving.settings`.
"""

from fastapi import FastAPI
from pydantic import BaseModel, Field

from domain.healthcare.release import MODEL_NAME
from resources.runtime import RuntimeHome
from resources.trust_store import TrustStore
from serving.access import AccessPolicy
from serving.app import add_worker_route, create_release_app
from serving.body_limit import json_body_limit
from serving.diagnostic_handler import MAX_DICOM_BASE64
from serving.settings import ServingSettings, serve_example

MAX_BODY_BYTES = json_body_limit(MAX_DICOM_BASE64)  # one base64 DICOM in a JSON object; more gets 413
SCOPE = "diagnose"
PORT = 8001


class DiagnoseParams(BaseModel):
    """One DICOM file, base64 (standard alphabet, padded); refused before decoding when too long."""

    dicom: str = Field(min_length=4, max_length=MAX_DICOM_BASE64, pattern=r"^[A-Za-z0-9+/]+={0,2}$")


def create_diagnostic_app(
    home: RuntimeHome | None = None, trust: TrustStore | None = None, access: AccessPolicy | None = None
) -> FastAPI:
    """The diagnostic server for the current release under `home` (default: `$PIPELINE_HOME`).

    Its callers are those of `access` (default: the clients configured in the environment).
    """
    handler = "serving.diagnostic_handler:DiagnosticHandler"
    home, trust = home or RuntimeHome.from_environment(), trust or TrustStore.from_environment()
    app = create_release_app(
        MODEL_NAME,
        handler,
        title="Healthcare lesion diagnostic",
        home=home,
        trust=trust,
        access=access or ServingSettings.from_environment(PORT).access_policy(home),
        scope=SCOPE,
        max_body_bytes=MAX_BODY_BYTES,
    )
    add_worker_route(app, "/diagnose", "diagnose", DiagnoseParams, http_method="POST")
    return app


def main() -> None:
    request = "-H 'content-type: application/json' -d '{\"dicom\": \"<base64 DICOM>\"}' {base}/diagnose"
    serve_example(create_diagnostic_app, PORT, try_it=request)


if __name__ == "__main__":
    main()
