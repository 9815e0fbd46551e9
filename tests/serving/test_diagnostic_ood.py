"""The diagnostic server refuses studies outside its training distribution, and releases without a guard.

The release carries the guard fitted at training time in its signed
config; the worker refuses a release whose guard is missing (stage
``contract``) or altered (stage ``signature``), and answers a study of
another acquisition profile with 422 and the test that failed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from domain.healthcare import diagnostic_model, ood
from domain.healthcare.release import MODEL_NAME
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.profiles import profile_dicoms
from resources.digests import digest_file
from resources.release_folder import ReleaseFolder
from resources.runtime import RuntimeHome
from resources.signing import CONFIG_FILE, public_key_pem, sign_model
from resources.trust_store import ReleaseRecord, TrustStore
from serving.healthcare import create_diagnostic_app
from tests.domain.healthcare.ood_world import CONFIG, TEST_SEED, studies, trained
from tests.serving import api_key_access

ACCESS, AUTH = api_key_access(("diagnose",))


def publish(root: Path, *, with_guard: bool = True, tamper: bool = False) -> tuple[RuntimeHome, TrustStore]:
    """Release 1 of the trained model (with or without its guard, optionally altered after signing)."""
    model, guard, _ = trained()
    model_dir = diagnostic_model.save_model(
        model, CONFIG, {"auc": 0.5}, root / "model", version=1, guard=guard if with_guard else None
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sign_model(model_dir, key)
    if tamper:  # widen the accepted distance after signing: every study would pass the feature test
        config = json.loads((model_dir / CONFIG_FILE).read_text())
        config[ood.CONFIG_KEY]["threshold"] = 1e9
        (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    home, trust = RuntimeHome(root / "home"), TrustStore(root / "trust")
    trust.trust_release_key(public_key_pem(key), operator="test")
    ReleaseFolder(home.path("releases")).publish(MODEL_NAME, model_dir, 1)
    trust.record_release(ReleaseRecord(MODEL_NAME, 1, digest_file(model_dir / CONFIG_FILE), ""))
    return home, trust


def _b64(data: bytes) -> dict[str, str]:
    return {"dicom": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    home, trust = publish(tmp_path_factory.mktemp("guarded"))
    with TestClient(create_diagnostic_app(home, trust, ACCESS), headers=AUTH) as client:
        yield client


def test_in_distribution_studies_are_still_answered(client):
    assert client.get("/healthz").status_code == 200
    answered = [client.post("/diagnose", json=_b64(dicom_bytes(s))) for s in studies(TEST_SEED, 12)]
    assert [a.status_code for a in answered] == [200] * 12, [a.text for a in answered if a.status_code != 200]
    assert all(
        0 <= a.json()["lesion_probability"] <= 1 and a.json()["feature_distance"] > 0 for a in answered
    )


@pytest.mark.parametrize(
    ("profile", "test"),
    [
        ("high_resolution", "envelope: rows 256"),
        ("abdomen", "envelope: body_part 'ABDOMEN'"),
        ("mammography", "envelope: modality 'MG'"),
    ],
)
def test_a_study_of_another_acquisition_profile_gets_422_with_the_reason(client, profile, test):
    data = profile_dicoms(profile, CohortConfig(seed=TEST_SEED, studies=20))[0]
    answer = client.post("/diagnose", json=_b64(data))
    assert answer.status_code == 422, answer.text
    assert "outside the model's training distribution" in answer.json()["detail"]
    assert test in answer.json()["detail"]
    assert "lesion_probability" not in answer.text


def test_a_release_without_its_guard_is_refused_at_load(tmp_path):
    home, trust = publish(tmp_path, with_guard=False)
    with TestClient(create_diagnostic_app(home, trust, ACCESS), headers=AUTH) as client:
        health = client.get("/healthz")
        study = client.post("/diagnose", json=_b64(dicom_bytes(studies(TEST_SEED, 1)[0])))
    assert health.status_code == 503 and "contract" in health.text
    assert "no out-of-distribution statistics" in health.text
    assert study.status_code == 503


def test_a_release_whose_guard_was_altered_after_signing_is_refused(tmp_path):
    home, trust = publish(tmp_path, tamper=True)
    with TestClient(create_diagnostic_app(home, trust, ACCESS), headers=AUTH) as client:
        health = client.get("/healthz")
    assert health.status_code == 503 and "signature" in health.text
