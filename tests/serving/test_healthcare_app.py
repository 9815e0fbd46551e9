"""The lesion diagnostic server: a signed CNN release answering POST /diagnose from an isolated worker.

Shows that uploaded DICOM files get the collection stage's validation (polyglot
preambles neutralised, truncated and non-image files refused with the reason),
that the score equals the training code's on the same normalised image, and
that no patient data comes back.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from domain.healthcare import diagnostic_model, images, lesion_cnn, ood
from domain.healthcare.dicom import ValidatedStudy, validate_dicom
from domain.healthcare.release import MODEL_NAME
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.hostile import not_an_image_dicom, polyglot_preamble, truncated
from examples.healthcare.studies.model import CohortConfig, Study
from examples.healthcare.studies.plan import plan_studies
from resources.digests import digest_file
from resources.release_folder import ReleaseFolder
from resources.runtime import RuntimeHome
from resources.signing import CONFIG_FILE, public_key_pem, sign_model
from resources.trust_store import ReleaseRecord, TrustStore
from serving.healthcare import MAX_DICOM_BASE64, create_diagnostic_app
from tests.serving import api_key_access

IMAGE_SIZE = 64
THRESHOLD = 0.4
ACCESS, AUTH = api_key_access(("diagnose",))


@dataclass
class Served:
    client: TestClient
    model: lesion_cnn.LesionCNN
    studies: list[Study]
    dicoms: list[bytes]
    images: np.ndarray


def _b64(data: bytes) -> dict[str, str]:
    return {"dicom": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny CNN trained on simulator DICOMs, signed, published as release 1 and served."""
    studies = plan_studies(CohortConfig(seed=3, studies=40), 0)
    dicoms = [dicom_bytes(study) for study in studies]
    validated = [validate_dicom(data) for data in dicoms]
    assert all(isinstance(v, ValidatedStudy) for v in validated)
    x = np.stack([images.normalise(v.dataset, v.pixels, IMAGE_SIZE) for v in validated])[:, np.newaxis]
    labels = np.array([study.label for study in studies])
    cfg = diagnostic_model.CNNConfig(image_size=IMAGE_SIZE, epochs=1, batch_size=16, adversarial_epsilon=0.0)
    model = diagnostic_model.train_cnn(x, labels, cfg)
    # The server refuses a release without its OOD guard; these tests send the training studies
    # themselves, so the guard is calibrated on them (tests/serving/test_diagnostic_ood.py holds out).
    records = [ood.acquisition(v.dataset) for v in validated]
    guard = diagnostic_model.fit_model_guard(model, (x, labels, records), (x, records))

    root = tmp_path_factory.mktemp("diagnostic")
    model_dir = diagnostic_model.save_model(model, cfg, {"auc": 0.5}, root / "model", version=1, guard=guard)
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    (model_dir / CONFIG_FILE).write_text(json.dumps({**config, "threshold": THRESHOLD}, sort_keys=True))
    key = ec.generate_private_key(ec.SECP256R1())
    sign_model(model_dir, key)
    home, trust = RuntimeHome(root / "home"), TrustStore(root / "trust")
    trust.trust_release_key(public_key_pem(key), operator="test")
    ReleaseFolder(home.path("releases")).publish(MODEL_NAME, model_dir, 1)
    trust.record_release(ReleaseRecord(MODEL_NAME, 1, digest_file(model_dir / CONFIG_FILE), ""))
    with TestClient(create_diagnostic_app(home, trust, ACCESS), headers=AUTH) as client:
        yield Served(client, model, studies, dicoms, x)


def test_no_release_yet_is_a_clear_error(home):
    with pytest.raises(FileNotFoundError, match="No healthcare-lesion-cnn release"):
        create_diagnostic_app(RuntimeHome(home), TrustStore(home.with_name("trust")), ACCESS)


def test_healthz_reports_the_verified_release(served):
    health = served.client.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok" and health.json()["version"] == 1
    assert health.json()["architecture"] == lesion_cnn.MODEL_NAME


def test_a_valid_study_is_scored_like_training_scores_it_without_echoing_phi(served):
    expected = lesion_cnn.predict_proba(served.model, served.images[:3])
    for i in range(3):
        answer = served.client.post("/diagnose", json=_b64(served.dicoms[i]))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {
            "lesion_probability",
            "lesion",
            "threshold",
            "model_version",
            "modality",
            "feature_distance",
        }
        assert 0.0 <= body["lesion_probability"] <= 1.0
        assert body["lesion_probability"] == pytest.approx(expected[i], abs=1e-6)
        assert body["lesion"] == (body["lesion_probability"] >= THRESHOLD)
        assert body["threshold"] == THRESHOLD and body["model_version"] == 1
        assert body["modality"] == served.studies[i].modality
        patient = served.studies[i].patient
        for phi in (patient.patient_id, patient.family, patient.given, served.studies[i].study_uid):
            assert phi not in answer.text


def test_a_polyglot_preamble_is_neutralised_and_the_study_still_scored(served):
    clean = served.client.post("/diagnose", json=_b64(served.dicoms[0])).json()
    for kind in ("pe", "elf"):
        answer = served.client.post("/diagnose", json=_b64(polyglot_preamble(served.dicoms[0], kind)))
        assert answer.status_code == 200, answer.text
        assert answer.json() == clean


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda served: truncated(served.dicoms[0]), "truncated: "),
        (lambda served: not_an_image_dicom(served.studies[0]), "not an image: "),
        (lambda served: b"\x89PNG\r\n\x1a\n" + bytes(200), "not dicom: "),
    ],
    ids=["truncated", "not-an-image", "png"],
)
def test_refused_files_get_422_with_the_reason(served, make, reason):
    answer = served.client.post("/diagnose", json=_b64(make(served)))
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"]
    patient = served.studies[0].patient
    assert patient.patient_id not in answer.text and patient.family not in answer.text


@pytest.mark.parametrize(
    "body",
    [
        {"dicom": "not base64 at all!"},  # refused by the body model
        {"dicom": "QUJDRA="},  # base64 alphabet, bad padding: refused by the worker's decoder
        {"dicom": "A" * (MAX_DICOM_BASE64 + 4)},  # too long: refused before decoding
        {"file": "QUJDRA=="},
    ],
    ids=["alphabet", "padding", "too-long", "no-dicom-field"],
)
def test_bodies_that_are_not_base64_dicom_get_422(served, body):
    assert served.client.post("/diagnose", json=body).status_code == 422


def test_a_refused_body_is_not_echoed_back(served):
    """FastAPI's 422 would carry the whole input: here, a patient's DICOM file."""
    wrapped = base64.encodebytes(served.dicoms[0]).decode()  # MIME line breaks: not accepted
    answer = served.client.post("/diagnose", json={"dicom": wrapped})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["type"] == "string_pattern_mismatch"
    assert wrapped[:76] not in answer.text and len(answer.content) < 500
